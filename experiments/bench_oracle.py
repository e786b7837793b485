"""Seconds per episode of the Jungle oracle bound (``qmarl_jax.evaluate.jungle_oracles``).

    python -m experiments.bench_oracle --num-agents 4 400 1000 10000 --json oracle.json

For each agent count: the world ``envs.sized_config`` builds for it (the nearest preset's density
and food ratio, as ``experiments.evaluate --num-agents N`` plays), ``--episodes`` random start
states from the env's own reset, and the median over ``--repeats`` timed calls (after a warm-up
call) of the bound of all of them (host NumPy and SciPy: no compile). Prints and saves
(``--json``) one row per count.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import numpy as np
import tyro

import envs
from experiments.common import machine, peak_rss_mb, write_json
from qmarl_jax.evaluate import jungle_oracles


@dataclasses.dataclass
class Args:
    """Oracle benchmark settings."""

    num_agents: tuple[int, ...] = (4, 400, 1000, 10000)
    """Agent counts to measure."""
    episodes: int = 4
    """Start states per timed call."""
    repeats: int = 3
    """Timed calls per agent count (the median is reported)."""
    seed: int = 0
    json: str | None = None
    """Write the results here as JSON."""


def measure(num_agents: int, episodes: int, repeats: int, seed: int) -> dict:
    """One row: world size, food, mean bound and median seconds per episode at ``num_agents``."""
    if episodes < 1 or repeats < 1:
        raise ValueError(f"invalid episodes={episodes} / repeats={repeats}: each must be >= 1")
    config = envs.sized_config("jungle", num_agents)
    env = envs.make_env(config)
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    states = jax.vmap(env.reset_state, in_axes=(0, None))(keys, env.default_params())
    states = jax.device_get(states)
    jungle_oracles(states, config)  # warm-up: SciPy's lazy imports
    seconds, bounds = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        bounds = jungle_oracles(states, config)
        seconds.append(time.perf_counter() - start)
    if bounds is None:
        raise ValueError(f"no oracle bound at num_agents={num_agents} (above the evaluation's cap)")
    return {
        "num_agents": config.num_agents,
        "grid": [config.height, config.width],
        "num_food": config.num_food,
        "episodes": episodes,
        "oracle_mean": float(np.mean(bounds)),
        "seconds_per_episode": statistics.median(seconds) / episodes,
        "repeats_s": seconds,
    }


def main(args: Args) -> list[dict]:
    """Measure every agent count; print a table and write ``--json``."""
    rows = []
    for num_agents in args.num_agents:
        row = measure(num_agents, args.episodes, args.repeats, args.seed)
        rows.append(row)
        print(f"{row['num_agents']:>6} agents  {row['grid'][0]}x{row['grid'][1]}  "
              f"{row['num_food']:>5} food  oracle {row['oracle_mean']:6.2f}  "
              f"{row['seconds_per_episode']:.4f} s per episode", flush=True)  # fmt: skip
    write_json(args.json, {"rows": rows, "peak_rss_mb": peak_rss_mb(), **machine()})
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
