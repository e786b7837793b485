"""Seed-set benchmark: N seeds in one vmapped program against N runs one after another.

    python -m experiments.bench_seed_set --scenario battle --preset kickstart --seeds 3 \
        --json bench/seed_set_battle_kickstart.json

Times, in one process and on the same machine, ``--batches`` batches of ``--preset``'s config
(compile excluded, the median of ``--repeats`` calls from the same state):

- ``one_run``: one seed as ``experiments.train`` runs it;
- ``seed_set``: ``--seeds`` seeds in one vmapped program (``experiments.train --seeds``), each
  budget-ladder switch on the size the fullest seed needs;
- ``seed_set_one_size``: the same with one budget size (``budget_buckets=1``), as a vmapped
  program without that sharing would have to run.

``speedup`` is ``seeds x one_run / seed_set``: the wall time of training the seeds one after
another over that of the seed set. As a check that the set trains what the runs do,
``seed0_metric_max_abs_diff`` is the largest difference between the metrics of the set's first
seed and those of ``one_run`` (the same seed, settings and batches; float rounding), with the
metric's name and magnitude.
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import numpy as np
import tyro

from envs.base import require
from experiments.common import machine, time_compiled, write_json
from qmarl_jax import loop, sharding
from qmarl_jax.config import preset_config
from qmarl_jax.train import Trainer


@dataclasses.dataclass
class Args:
    """Seed-set benchmark settings."""

    scenario: str = "battle"
    preset: str = "kickstart"
    seeds: int = 3
    """Seeds of the seed set (and of the sequential runs it is compared with)."""
    batches: int = 2
    """Batches per timed call (one chunk)."""
    repeats: int = 3
    games_per_batch: int = 0
    """Games per batch per seed (0: the preset's)."""
    width: int = 0
    """Hidden width (0: the preset's)."""
    max_steps: int = 0
    """Episode length (0: the preset's)."""
    seed: int = 0
    json: str | None = None


def bench_config(args: Args):
    """The preset's config with the benchmark's overrides (validated, naming the field)."""
    overrides = {
        name: getattr(args, name)
        for name in ("games_per_batch", "width", "max_steps")
        if getattr(args, name)
    }
    base = preset_config(args.scenario, args.preset)
    return dataclasses.replace(base, seed=args.seed, init_from=None, **overrides)


def time_chunks(trainer: Trainer, runner, stacked: bool, args: Args) -> dict:
    """Compile ``trainer``'s chunk program for ``runner`` and time ``args.repeats`` calls of
    ``args.batches`` batches from it -> seconds (median), compile seconds and the metrics."""
    chunk = loop.chunk_program(trainer, stacked)
    place = sharding.shard_seeds if stacked else sharding.replicate
    runner = place(runner, trainer.mesh)
    out = {}

    def run():
        out["metrics"] = chunk(runner, args.batches)[1]
        return out["metrics"]

    first, times = time_compiled(run, args.repeats)
    seconds = statistics.median(times)
    return {"seconds": seconds, "compile_s": first - seconds, "times": times,
            "metrics": jax.device_get(out["metrics"])}  # fmt: skip


def measure(args: Args) -> dict:
    """Time one run alone against ``args.seeds`` runs as one seed set (and as one seed set on one
    graph size) -> a JSON row: seconds per batch of each variant, the speedup over training the
    seeds one after another, and how far the seed set's seed 0 drifts from the run alone."""
    for name in ("seeds", "batches", "repeats"):
        require(getattr(args, name) >= 1, name, getattr(args, name), "must be >= 1")
    config = bench_config(args)
    configs = loop.seed_set_configs(config, args.seeds)
    key = jax.random.PRNGKey(config.seed)
    single = Trainer(configs[0])
    seed_set = loop.seed_set_trainer(configs[0], args.seeds)
    one_size = loop.seed_set_trainer(dataclasses.replace(configs[0], budget_buckets=1), args.seeds)
    stacked = loop.stack_runs([seed_set.init(jax.random.PRNGKey(c.seed)) for c in configs])
    rows = {
        "one_run": time_chunks(single, single.init(key), False, args),
        "seed_set": time_chunks(seed_set, stacked, True, args),
        "seed_set_one_size": time_chunks(one_size, stacked, True, args),
    }
    seed0 = {k: np.asarray(v)[0] for k, v in rows["seed_set"]["metrics"].items()}
    alone = rows["one_run"]["metrics"]
    differences = {k: float(np.max(np.abs(seed0[k] - np.asarray(alone[k])))) for k in alone}
    worst = max(differences, key=differences.get)
    for row in rows.values():
        row.pop("metrics")
        row["seconds_per_batch"] = row["seconds"] / args.batches
    rows["seed_set"]["seconds_per_seed_batch"] = rows["seed_set"]["seconds_per_batch"] / args.seeds
    speedup = args.seeds * rows["one_run"]["seconds"] / rows["seed_set"]["seconds"]
    return {
        "scenario": config.scenario,
        "preset": args.preset,
        "algo": config.algo,
        "seeds": args.seeds,
        "batches": args.batches,
        "repeats": args.repeats,
        "games_per_batch": config.games_per_batch,
        "width": config.width,
        "num_agents": config.env_config.num_agents,
        "budget_ladder": [list(size) for size in single.actor.ladder],
        "seed_set_devices": seed_set.mesh.devices.size,
        "variants": rows,
        "speedup": speedup,
        "seed0_metric_max_abs_diff": differences[worst],
        "seed0_metric_max_abs_diff_name": worst,
        "seed0_metric_max_abs_diff_value": float(np.max(np.abs(np.asarray(alone[worst])))),
        **machine(),
    }


def main(args: Args) -> dict:
    result = measure(args)
    for name, row in result["variants"].items():
        print(f"{name:18s} {row['seconds_per_batch']:8.2f} s per batch (compile "
              f"{row['compile_s']:.1f} s)")  # fmt: skip
    print(f"{result['seeds']} seeds in one program: {result['speedup']:.2f}x the speed of "
          f"{result['seeds']} runs one after another on {result['backend']} "
          f"({result['device']}); seed 0's metrics within "
          f"{result['seed0_metric_max_abs_diff']:.2g} of its run alone (the largest: "
          f"{result['seed0_metric_max_abs_diff_name']}, of magnitude "
          f"{result['seed0_metric_max_abs_diff_value']:.3g})")  # fmt: skip
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
