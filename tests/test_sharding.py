"""Data parallelism: 8 forced CPU devices give the same chunk as 1, with the games really split."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from qmarl_jax import sharding
from qmarl_jax.config import make_config
from qmarl_jax.train import Trainer

HELPER = Path(__file__).parent / "helpers" / "multi_device.py"


def helper_report(mode: str) -> dict:
    """The JSON report of ``tests/helpers/multi_device.py MODE``. XLA_FLAGS must be set before
    JAX starts, so each check runs in its own process."""
    done = subprocess.run(
        [sys.executable, str(HELPER), mode], capture_output=True, text=True, timeout=900,
        cwd=HELPER.parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device_and_shard_the_games():
    report = helper_report("qmarl_ppo")
    assert report["device_count"] == 8
    assert report["loss_gap"] < 1e-5, report
    assert report["eval_mesh_devices"] == 1
    for name, placed in report["placement"].items():
        assert placed["devices"] == 8, name
        assert placed["spec"] == "P(None, 'data')", name
        assert placed["shard_shape"][1] * 8 == placed["shape"][1] == 8, name


def test_a_seed_set_splits_its_seeds_over_devices_and_trains_as_on_one():
    report = helper_report("seeds")
    assert report["mesh_devices"] == [1, 4]
    assert report["loss_gap"] < 1e-5 and report["param_gap"] < 1e-2, report
    placed = report["param_placement"]
    assert placed["devices"] == 4 and placed["spec"] == "P('seeds',)"
    assert placed["shard_shape"][0] == 1 and placed["shape"][0] == 4
    assert report["loop_batches"] == [1, 1, 1, 1]  # the host loop saves every seed's slice
    assert report["auto_devices_for_3_seeds"] == 3
    assert (
        "'num_devices'=2: a seed set splits its 3 seeds evenly"
        in (report["refused_2_devices_for_3_seeds"])
    )


def test_mesh_and_divisibility_errors_name_the_field():
    assert sharding.make_mesh().shape[sharding.DATA] == jax.device_count()
    with pytest.raises(ValueError, match="'num_devices'=99: 1 device"):
        sharding.make_mesh(99)
    mesh = sharding.make_mesh(1)
    sharding.check_divisible(3, mesh)  # one device takes any batch
    config = make_config("battle", games_per_batch=4, num_devices=2)
    with pytest.raises(ValueError, match="'num_devices'=2"):
        Trainer(config)
