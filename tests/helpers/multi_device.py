"""Run in its own process with 8 forced CPU devices (see tests/test_sharding.py).

``ALGO``: trains the same chunk on a 1-device and an 8-device mesh and prints a JSON report: the
largest relative difference of the losses (``loss_gap``) and parameters, and how the rollout
arrays were placed. ``seeds``: the same for a seed set of 4 seeds on 1 device and split over 4,
plus a seed set trained by the host loop and the seeds meshes' device counts.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=8"])
)
os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from qmarl_jax import loop, sharding
from qmarl_jax.config import make_config
from qmarl_jax.evaluate import evaluation_config
from qmarl_jax.rollout import collect
from qmarl_jax.train import Trainer


def relative_gap(a, b) -> float:
    gaps = jax.tree.map(
        lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y))
                                  / (np.abs(np.asarray(y)) + 1e-6))), a, b)  # fmt: skip
    return max(jax.tree.leaves(gaps))


def loss_gap(logs8: dict, logs1: dict, names: list[str]) -> float:
    """The largest gap of a loss between 8 and 1 devices, relative to the larger of its own size
    and the largest loss of its batch. The floor matters for a loss that cancels to near zero
    (PPO's actor loss sums standardised advantages, about 0 at ratio 1): its rounding error is
    on the scale of its terms, not of their sum."""
    a = np.stack([np.asarray(logs8[k]) for k in names])  # [losses, batches]
    b = np.stack([np.asarray(logs1[k]) for k in names])
    scale = np.maximum(np.abs(b), np.abs(b).max(axis=0, keepdims=True))
    return float(np.max(np.abs(a - b) / scale))


def main(algo: str) -> None:
    config = make_config("battle", algo=algo, games_per_batch=8, max_steps=8, width=16,
                         num_blocks=1, ppo_epochs=1, num_minibatches=2)  # fmt: skip
    results = {}
    for devices in (1, 8):
        trainer = Trainer(config, sharding.make_mesh(devices))
        runner = sharding.replicate(trainer.init(jax.random.PRNGKey(0)), trainer.mesh)
        runner, logs = jax.jit(trainer.run_batches, static_argnums=1)(runner, 2)
        results[devices] = (trainer, runner, logs)
    (_, r1, l1), (t8, r8, l8) = results[1], results[8]
    losses = [k for k in l1 if "loss" in k]

    @jax.jit
    def rollout(params, key):
        place = lambda games: sharding.shard_games(games, t8.mesh)
        return collect(t8.actor, params, key, t8.env_params, place=place)

    traj = rollout(tuple(t.params for t in r8.teams), jax.random.PRNGKey(1))
    placement = {
        name: {"devices": len(x.sharding.device_set), "spec": str(x.sharding.spec),
               "shard_shape": list(x.addressable_shards[0].data.shape), "shape": list(x.shape)}
        for name, x in (("features", traj.features), ("reward", traj.reward),
                        ("node_agent", traj.teams[0].graphs.nodes["agent"]))
    }  # fmt: skip
    # Evaluation / inference (one game) still builds with 8 devices visible: it uses one.
    single = Trainer(evaluation_config(config, games=1))
    report = {
        "eval_mesh_devices": single.mesh.devices.size,
        "device_count": jax.device_count(),
        "loss_gap": loss_gap(l8, l1, losses),
        "losses_1": {k: np.asarray(l1[k]).tolist() for k in losses},
        "param_gap": relative_gap(r8.teams, r1.teams),
        "placement": placement,
    }
    print(json.dumps(report))


def seeds() -> None:
    config = make_config("jungle", games_per_batch=4, max_steps=8, width=16, num_blocks=1)
    configs = loop.seed_set_configs(config, 4)
    results = {}
    for devices in (1, 0):  # one device, then auto: all 4 seeds split over 4 of the 8
        trainer = loop.seed_set_trainer(dataclasses.replace(configs[0], num_devices=devices), 4)
        runner = loop.stack_runs([trainer.init(jax.random.PRNGKey(c.seed)) for c in configs])
        runner = sharding.shard_seeds(runner, trainer.mesh)
        runner, logs = loop.chunk_program(trainer, True)(runner, 2)
        results[devices] = (trainer, runner, logs)
    (t1, r1, l1), (t4, r4, l4) = results[1], results[0]
    losses = [k for k in l1 if "loss" in k]
    kernel = jax.tree.leaves(r4.teams[0].params)[0]
    with tempfile.TemporaryDirectory() as tmp:
        one_batch = dataclasses.replace(config, num_batches=1)
        root = loop.train_seed_set(one_batch, seeds=4, run_dir=Path(tmp) / "set",
                                   progress=False, finish=False)  # fmt: skip
        batches = [int(loop.load_runner(loop.seed_dir(root, s))[1].batch) for s in range(4)]
    try:
        sharding.seeds_mesh(3, 2)
        refused = ""
    except ValueError as error:
        refused = str(error)
    report = {
        "mesh_devices": [t1.mesh.devices.size, t4.mesh.devices.size],
        "loss_gap": loss_gap(
            {k: np.ravel(v) for k, v in l4.items()}, {k: np.ravel(v) for k, v in l1.items()},
            losses,
        ),
        "param_gap": relative_gap(r4.teams, r1.teams),
        "param_placement": {"devices": len(kernel.sharding.device_set),
                            "spec": str(kernel.sharding.spec),
                            "shard_shape": list(kernel.addressable_shards[0].data.shape),
                            "shape": list(kernel.shape)},
        "loop_batches": batches,
        "auto_devices_for_3_seeds": sharding.seeds_mesh(3).devices.size,
        "refused_2_devices_for_3_seeds": refused,
    }  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    seeds() if sys.argv[1] == "seeds" else main(sys.argv[1])
