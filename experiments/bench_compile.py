"""Compile time of a training chunk under XLA:CPU code-generation flags (what ``make test`` sets).

    python -m experiments.bench_compile --json bench/compile_cpu.json
    python -m experiments.bench_compile --scenarios battle --algos qmarl_ppo --repeats 5

Each measurement runs in a fresh process without the persistent compilation cache (XLA flags are
read when the backend starts): it traces, lowers and compiles one batch of ``Trainer.run_batches``
and then times ``--calls`` calls of the compiled program. The variants take turns, repeat by
repeat, so drift in the machine's load falls on all of them; medians over ``--repeats``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import tyro

from experiments.bench_env import parse_overrides
from experiments.common import machine, time_compiled, write_json

VARIANTS = {
    "default": "",
    "O0": "--xla_backend_optimization_level=0",
    "O0_loop_emitters": "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
}
"""Name -> XLA_FLAGS. ``O0_loop_emitters`` is what tests/conftest.py sets."""


@dataclasses.dataclass
class Args:
    """Compile-time benchmark settings."""

    scenarios: tuple[str, ...] = ("jungle", "battle")
    algos: tuple[str, ...] = ("qmarl_ppo", "qmarl_ac")
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Flag sets to compare (default, O0, O0_loop_emitters)."""
    config: tuple[str, ...] = ("games_per_batch=2", "max_steps=4", "width=16", "num_blocks=1")
    """TrainConfig overrides as FIELD=VALUE (default: the tests' tiny sizes)."""
    repeats: int = 3
    calls: int = 3
    """Timed calls of the compiled chunk per measurement (their median is its run time)."""
    json: str | None = None
    child: bool = False
    """Internal: measure once in this process and print one JSON row."""


def check(args: Args) -> None:
    """Refuse unknown variants and non-positive counts, naming the field."""
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"'variants' has {unknown}; choose from: {', '.join(VARIANTS)}")
    for field in ("repeats", "calls"):
        if getattr(args, field) < 1:
            raise ValueError(f"'{field}'={getattr(args, field)}: must be at least 1")


def measure_here(scenario: str, algo: str, overrides: dict, calls: int) -> dict:
    """Seconds to trace, lower and compile one training batch here, and its median run time."""
    import jax

    from qmarl_jax.config import make_config
    from qmarl_jax.train import Trainer

    trainer = Trainer(make_config(scenario, algo=algo, **overrides))
    runner = trainer.init(jax.random.PRNGKey(0))
    chunk = jax.jit(trainer.run_batches, static_argnums=1)
    start = time.perf_counter()
    traced = chunk.trace(runner, 1)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    _, runs = time_compiled(lambda: compiled(runner), calls)  # after one warm-up call
    return {"trace_s": traced_at - start, "lower_s": lowered_at - traced_at,
            "compile_s": compiled_at - lowered_at, "run_s": statistics.median(runs)}  # fmt: skip


def measure_in_child(variant: str, scenario: str, algo: str, args: Args) -> dict:
    """One measurement in a fresh process with the variant's XLA_FLAGS and no compile cache."""
    env = {**os.environ, "XLA_FLAGS": VARIANTS[variant], "JAX_PLATFORMS": "cpu",
           "JAX_ENABLE_COMPILATION_CACHE": "false"}  # fmt: skip
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    command = [sys.executable, "-m", "experiments.bench_compile", "--child",
               "--scenarios", scenario, "--algos", algo, "--calls", str(args.calls),
               "--config", *args.config]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} {scenario} {algo} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(samples: list[dict]) -> dict:
    """Median of each timing over the repeats."""
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def main(args: Args) -> list[dict]:
    check(args)
    overrides = parse_overrides(args.config)
    if args.child:
        row = measure_here(args.scenarios[0], args.algos[0], overrides, args.calls)
        print(json.dumps(row))
        return [row]
    cases = [(s, a) for s in args.scenarios for a in args.algos]
    samples = {(v, s, a): [] for v in args.variants for s, a in cases}
    for _ in range(args.repeats):
        for scenario, algo in cases:
            for variant in args.variants:
                samples[variant, scenario, algo].append(
                    measure_in_child(variant, scenario, algo, args)
                )
    rows = [{"variant": v, "xla_flags": VARIANTS[v], "scenario": s, "algo": a,
             "config": list(args.config), "repeats": args.repeats, **summarise(runs), **machine()}
            for (v, s, a), runs in samples.items()]  # fmt: skip
    print(f"{'scenario':<10} {'algo':<10} {'variant':<17} {'trace s':>8} {'lower s':>8} "
          f"{'compile s':>10} {'run s':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['scenario']:<10} {r['algo']:<10} {r['variant']:<17} {r['trace_s']:>8.2f} "
              f"{r['lower_s']:>8.2f} {r['compile_s']:>10.2f} {r['run_s']:>8.3f}")  # fmt: skip
    write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
