"""Seed sets: several seeds of one config trained by one vmapped program, each written as a run."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from qmarl_jax import loop
from qmarl_jax.checkpoint import Checkpointer, load_config
from qmarl_jax.config import make_config
from qmarl_jax.train import Trainer

SMALL = dict(games_per_batch=4, max_steps=8, width=16, num_blocks=1, batches_per_chunk=2)
QUIET = dict(progress=False, finish=False)


def rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def assert_rows_close(got, expected):
    assert [r["batch"] for r in got] == [r["batch"] for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-4, atol=1e-5)


def test_each_seed_of_a_set_is_the_run_train_makes_for_that_seed(tmp_path):
    config = make_config("battle", num_batches=2, seed=3, **SMALL)  # one chunk: one program
    root = loop.train_seed_set(config, seeds=2, run_dir=tmp_path / "set", **QUIET)
    assert loop.seed_set_seeds(root) == [3, 4]
    assert loop.seed_set_seeds(loop.seed_dir(root, 3)) is None
    configs = [load_config(loop.seed_dir(root, s)) for s in (3, 4)]
    # One program: one budget, the calibration of config.seed, pinned in every seed's config.
    trainer = Trainer(config)
    assert len(trainer.actor.ladder) > 1  # the seeds share each switch of the budget ladder
    for seed, saved in zip((3, 4), configs, strict=True):
        assert saved == dataclasses.replace(
            config, seed=seed,
            node_budget=trainer.actor.node_budget, edge_budget=trainer.actor.edge_budget,
        )  # fmt: skip
    finals = []
    for saved in configs:
        run = loop.seed_dir(root, saved.seed)
        # Seed S trains as the single run of its config does, up to batched float rounding.
        alone = loop.train(saved, run_dir=tmp_path / f"alone_{saved.seed}", **QUIET)
        assert_rows_close(rows(run), rows(alone))
        _, ours = loop.load_runner(run)
        _, theirs = loop.load_runner(alone)
        assert int(ours.batch) == 2
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     ours.teams[0].params, theirs.teams[0].params)  # fmt: skip
        finals.append(ours.teams[0].params)
    # The seeds are different runs.
    pairs = zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1]), strict=True)
    assert any(np.any(a != b) for a, b in pairs)


def test_a_seed_set_resumes_to_the_uninterrupted_numbers_after_a_kill_between_two_saves(
    tmp_path,
):
    config = make_config("jungle", num_batches=4, **SMALL)
    whole = loop.train_seed_set(config, seeds=2, run_dir=tmp_path / "whole", **QUIET)
    half = dataclasses.replace(config, num_batches=2)
    split = loop.train_seed_set(half, seeds=2, run_dir=tmp_path / "split", **QUIET)
    # Resume past the end, then go back: seed 0 saved batch 4, seed 1 was killed before its
    # save. The resume returns both to batch 2 and plays 3-4 again.
    loop.train_seed_set(config, resume=split, **QUIET)
    Checkpointer(loop.seed_dir(split, 1)).drop_after(2)
    assert Checkpointer(loop.seed_dir(split, 0)).latest_batch() == 4
    resumed = loop.train_seed_set(config, resume=split, **QUIET)
    for seed in (0, 1):
        a, b = loop.seed_dir(whole, seed), loop.seed_dir(resumed, seed)
        assert rows(a) == rows(b)
        jax.tree.map(np.testing.assert_array_equal, loop.load_runner(a)[1],
                     loop.load_runner(b)[1])  # fmt: skip
    assert loop.finished(resumed) and loop.finished(loop.seed_dir(resumed, 0))
    assert not loop.finished(tmp_path / "nothing")
    Checkpointer(loop.seed_dir(split, 1)).drop_after(2)
    assert not loop.finished(split) and loop.finished(loop.seed_dir(split, 0))
    with pytest.raises(ValueError, match=r"incompatible config.*lr: saved 0.003, requested 0.1"):
        loop.train_seed_set(dataclasses.replace(config, lr=0.1), resume=split, **QUIET)
    with pytest.raises(ValueError, match="is a seed set: resume it with train_seed_set"):
        loop.train(config, resume=split, **QUIET)
    with pytest.raises(ValueError, match="is not a seed set"):
        loop.train_seed_set(config, resume=loop.seed_dir(split, 0), **QUIET)


def test_a_seed_set_starts_from_an_earlier_set_or_one_run_and_refuses_bad_settings(tmp_path):
    config = make_config("jungle", num_batches=1, **SMALL)
    first = loop.train_seed_set(config, seeds=2, run_dir=tmp_path / "first", **QUIET)
    later = dataclasses.replace(config, lr=1e-4, init_from=str(first))
    second = loop.train_seed_set(later, seeds=2, run_dir=tmp_path / "second", **QUIET)
    trainer = Trainer(config)
    for seed in (0, 1):
        assert load_config(loop.seed_dir(second, seed)).init_from == str(loop.seed_dir(first, seed))
        like = trainer.init(jax.random.PRNGKey(seed))
        start = Checkpointer(loop.seed_dir(second, seed)).restore(like, batch=0)
        trained = loop.load_runner(loop.seed_dir(first, seed))[1]
        jax.tree.map(np.testing.assert_array_equal, start.teams[0].params,
                     trained.teams[0].params)  # fmt: skip
    # One run for every seed.
    one = dataclasses.replace(later, init_from=str(loop.seed_dir(first, 1)))
    both = loop.train_seed_set(one, seeds=2, run_dir=tmp_path / "both", **QUIET)
    starts = [
        Checkpointer(loop.seed_dir(both, s)).restore(trainer.init(jax.random.PRNGKey(s)), 0)
        for s in (0, 1)
    ]
    jax.tree.map(np.testing.assert_array_equal, starts[0].teams[0].params,
                 starts[1].teams[0].params)  # fmt: skip

    refused = {
        "seeds": (config, 0, "'seeds'=0: must be >= 1"),
        "init_from": (dataclasses.replace(later, seed=1), 2,
                      r"'init_from'=.*the seed set of seeds \[0, 1\] has no seed 2"),
        "num_devices": (dataclasses.replace(config, num_devices=2), 2,
                        "'num_devices'=2: 1 device"),
        "shapes": (dataclasses.replace(later, width=32), 2, "other parameter shapes"),
    }  # fmt: skip
    for name, (bad, seeds, message) in refused.items():
        with pytest.raises(ValueError, match=message):
            loop.train_seed_set(bad, seeds=seeds, run_dir=tmp_path / name, **QUIET)
        assert not (tmp_path / name).exists()  # refused before anything was written


def test_the_train_and_evaluate_commands_take_a_seed_set(tmp_path, capsys):
    from experiments import evaluate as evaluate_cli
    from experiments import train as train_cli
    from qmarl_jax.evaluate import evaluate_run, shared_evaluator

    small = ["--scenario", "jungle", "--games-per-batch", "4", "--max-steps", "8", "--width",
             "16", "--num-blocks", "1", "--no-progress"]  # fmt: skip
    root = tmp_path / "set"
    assert train_cli.main([*small, "--seeds", "0", "--run-dir", str(root)]) == 2
    assert "'seeds'=0: must be >= 1" in capsys.readouterr().err
    assert train_cli.main([*small, "--seeds", "2", "--seed", "5", "--num-batches", "1",
                           "--run-dir", str(root)]) == 0  # fmt: skip
    assert f"run directory: {root}" in capsys.readouterr().out
    assert train_cli.main(["--resume", str(root), "--num-batches", "2", "--no-progress"]) == 0
    single = loop.seed_dir(root, 5)
    assert train_cli.main(["--resume", str(single), "--seeds", "2"]) == 2
    assert "is a single run, not a seed set; resume it without --seeds" in capsys.readouterr().err
    for seed in (5, 6):
        run = loop.seed_dir(root, seed)
        assert [r["batch"] for r in rows(run)] == [1, 2]
        assert load_config(run).seed == seed and load_config(run).num_batches == 2
        assert (run / "curve.png").exists() and (run / "policy.gif").exists()

    # The evaluation of a seed set: every seed as `evaluate --run SET/seed_S`, and their mean.
    # The seeds share one compiled evaluator: their evaluation configs are equal.
    out = tmp_path / "eval.json"
    shared_evaluator.cache_clear()
    assert evaluate_cli.main(["--run", str(root), "--episodes", "4", "--json", str(out)]) == 0
    assert (shared_evaluator.cache_info().misses, shared_evaluator.cache_info().hits) == (1, 1)
    printed = capsys.readouterr().out
    assert f"seed set {root}: 2 seeds" in printed
    summary = json.loads(out.read_text())
    assert summary["seeds"] == [5, 6]
    alone = [evaluate_run(loop.seed_dir(root, s), episodes=4) for s in (5, 6)]
    for seed, single in zip(("5", "6"), alone, strict=True):
        assert summary["per_seed"][seed]["metrics"] == single["metrics"]
        assert summary["per_seed"][seed]["run"] == str(loop.seed_dir(root, int(seed)))
    for name in ("score", "survival"):
        expected = np.mean([single["metrics"][name]["mean"] for single in alone])
        assert summary["mean"][name] == pytest.approx(expected)
    expected = np.mean([single["score_vs_oracle"] for single in alone])
    assert summary["mean"]["score_vs_oracle"] == pytest.approx(expected)
