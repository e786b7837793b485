"""Weight averaging of runs into one policy directory (``experiments.average_policies``)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import average_policies
from qmarl_jax import loop
from qmarl_jax.checkpoint import load_config, save_policy
from qmarl_jax.config import make_config
from qmarl_jax.policy import average_params
from qmarl_jax.train import Trainer

SMALL = dict(games_per_batch=4, max_steps=8, width=16, num_blocks=1, batches_per_chunk=2)


def test_average_params_is_the_weighted_mean_of_every_leaf_in_its_dtype():
    rng = np.random.default_rng(0)
    trees = [{"dense": {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
                        "bias": rng.normal(size=2).astype(np.float32)},
              "scale": jnp.asarray(rng.normal(size=4), jnp.bfloat16)}
             for _ in range(3)]  # fmt: skip
    weights = (1.0, 2.0, 5.0)
    mean = average_params(trees, weights)
    for path in (("dense", "kernel"), ("dense", "bias")):
        leaves = [tree[path[0]][path[1]] for tree in trees]
        expected = sum(w * leaf for w, leaf in zip(weights, leaves, strict=True)) / sum(weights)
        np.testing.assert_allclose(mean[path[0]][path[1]], expected, rtol=1e-6)
        assert mean[path[0]][path[1]].dtype == np.float32
    assert mean["scale"].dtype == jnp.bfloat16
    scales = [np.asarray(tree["scale"], np.float32) for tree in trees]
    expected = sum(w * scale for w, scale in zip(weights, scales, strict=True)) / sum(weights)
    np.testing.assert_allclose(np.asarray(mean["scale"], np.float32), expected, rtol=1e-2)
    equal = average_params(trees[:2])
    np.testing.assert_allclose(equal["dense"]["bias"],
                               (trees[0]["dense"]["bias"] + trees[1]["dense"]["bias"]) / 2,
                               rtol=1e-6)  # fmt: skip
    for bad in ((1.0, 2.0), (1.0, 0.0, 1.0)):
        with pytest.raises(ValueError, match="one positive weight per tree"):
            average_params(trees, bad)


def policy_dir(path, config, key: int, batch: int):
    """A policy directory of ``config``'s network with freshly initialised parameters."""
    params = Trainer(config).init(jax.random.PRNGKey(key)).teams[0].params
    save_policy(path, config, (params,), batch)
    return params


def test_average_policies_writes_the_weighted_mean_of_runs_that_act_alike(tmp_path):
    # Training-only fields (learning rate, reward weights, seed) may differ.
    first = make_config("battle", seed=0, **SMALL)
    second = dataclasses.replace(first, seed=5, lr=1e-4, kill_credit=1.0)
    a = policy_dir(tmp_path / "a", first, key=0, batch=3)
    b = policy_dir(tmp_path / "b", second, key=1, batch=7)
    out = tmp_path / "soup"
    runs = (str(tmp_path / "a"), str(tmp_path / "b"))
    result = average_policies.main(average_policies.Args(runs=runs, out=str(out),
                                                         weights=(1.0, 3.0)))  # fmt: skip
    _, runner = loop.load_runner(out)
    expected = jax.tree.map(lambda x, y: 0.25 * x + 0.75 * y, a, b)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
                 runner.teams[0].params, expected)  # fmt: skip
    assert int(runner.batch) == 7 and result["batch"] == 7
    assert load_config(out) == first
    sources = json.loads((out / average_policies.SOURCES_FILE).read_text())
    assert sources["runs"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert sources["weights"] == [1.0, 3.0]


def test_average_policies_refuses_runs_of_other_networks_before_loading(tmp_path):
    config = make_config("battle", **SMALL)
    policy_dir(tmp_path / "a", config, key=0, batch=1)
    policy_dir(tmp_path / "wide", dataclasses.replace(config, width=32), key=1, batch=1)
    policy_dir(tmp_path / "far", dataclasses.replace(config, view_radius=2), key=2, batch=1)
    policy_dir(tmp_path / "team", dataclasses.replace(config, critic_input="team"), key=3, batch=1)
    out = tmp_path / "soup"
    a, wide, far, team = (str(tmp_path / name) for name in ("a", "wide", "far", "team"))

    def run(runs, **kwargs):
        average_policies.main(average_policies.Args(runs=runs, out=str(out), **kwargs))

    with pytest.raises(ValueError, match=r"'runs'=.*wide.*another network.*width: 16 vs 32"):
        run((a, wide))
    with pytest.raises(ValueError, match=r"view_radius: None vs 2"):
        run((a, far))
    # The same policy, another critic: the parameter trees differ.
    with pytest.raises(ValueError, match=r"critic_input: 'ego' vs 'team'"):
        run((a, team))
    with pytest.raises(ValueError, match=r"'runs'.*needs two or more"):
        run((a,))
    with pytest.raises(ValueError, match=r"'weights'.*one weight per run"):
        run((a, a), weights=(1.0,))
    with pytest.raises(ValueError, match=r"'weights'.*must all be > 0"):
        run((a, a), weights=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"'out'.*must not be one of --runs"):
        average_policies.main(average_policies.Args(runs=(a, wide), out=a))
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / loop.SEED_SET_FILE).write_text(json.dumps({"seeds": [0, 1]}))
    with pytest.raises(ValueError, match=r"is a seed set \(seeds \[0, 1\]\)"):
        run((a, str(tmp_path / "set")))
    assert not out.exists()  # every refusal came before anything was written
