"""Training-speed benchmark: seconds to collect and learn from 100 episodes (the paper's Fig. 9).

    python -m experiments.bench_train --scenario jungle --num-agents 10000 --episodes 100 \
        --json out.json

One batch = ``games`` episodes of ``max_steps`` steps played in parallel, then one update (the
learner of ``--algo``). The batch is compiled once, timed ``--repeats`` times after a warm-up,
and the median scaled to ``--episodes`` episodes. The JSON also holds ``agent_steps_per_s``,
``compile_s``, ``peak_rss_mb`` and ego-graph statistics (mean/max nodes, truncated and
over-budget counts).
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import numpy as np
import tyro

from experiments.common import device_peak_mb, machine, peak_rss_mb, time_compiled, write_json
from qmarl_jax import sharding
from qmarl_jax.config import make_config
from qmarl_jax.train import Trainer


@dataclasses.dataclass
class Args:
    """Training benchmark settings."""

    scenario: str = "jungle"
    """jungle, battle or deception."""
    num_agents: int = 10000
    """Agents per episode (the grid is sized at the nearest preset's density)."""
    episodes: int = 100
    """Episodes the reported time is scaled to."""
    density: float | None = None
    """Agents per cell (default: the nearest preset's, 4% for Jungle)."""
    games: int = 0
    """Episodes per batch (played in parallel); 0 = max(1, 1000 // num_agents)."""
    algo: str = "qmarl_ac"
    """Learner (qmarl_ac, qmarl_pg, qmarl_ppo, vanilla_pg or mha)."""
    depth: int = 2
    width: int = 64
    max_steps: int = 30
    update_chunks: int = 0
    """Time chunks of the qmarl_ac / mha update (0 = auto: one per step on CPU, one piece on an
    accelerator; the row records the number used)."""
    budget_buckets: int = 0
    """Budget sizes the network may run on (0 = auto; 1 = always the full budgets)."""
    share_ego_graphs: bool = True
    """Store identical ego-graphs once (TrainConfig.share_ego_graphs)."""
    repeats: int = 3
    seed: int = 0
    json: str | None = None


def make_batch(args: Args):
    """The benchmark's trainer, a placed runner state and the jitted one-batch step.

    Returns:
      ``(trainer, runner, batch)`` where ``batch(runner, 1) -> (runner, metrics [1])``.
    """
    games = args.games or max(1, 1000 // args.num_agents)
    opponents = {"jungle": ("learn",), "battle": ("learn", "scripted"),
                 "deception": ("learn", "scripted")}[args.scenario]  # fmt: skip
    config = make_config(
        args.scenario, num_agents=args.num_agents, density=args.density,
        max_steps=args.max_steps, algo=args.algo, depth=args.depth, width=args.width,
        games_per_batch=games, controllers=opponents, seed=args.seed,
        update_chunks=args.update_chunks, budget_buckets=args.budget_buckets,
        share_ego_graphs=args.share_ego_graphs,
    )  # fmt: skip
    trainer = Trainer(config)
    # Placed as the chunks' outputs are, so the timed calls reuse the first call's compile.
    runner = sharding.replicate(trainer.init(jax.random.PRNGKey(args.seed)), trainer.mesh)
    return trainer, runner, jax.jit(trainer.run_batches, static_argnums=1)


def measure(args: Args) -> dict:
    """Time one training batch (median of ``args.repeats`` compiled calls) -> a JSON row: the
    setting and its graph budgets, seconds per batch and per 100 episodes, agent-steps per
    second, compile seconds, peak memory and the batch's graph sizes."""
    trainer, runner, batch = make_batch(args)
    config = trainer.config
    games = config.games_per_batch
    state = {"runner": runner, "metrics": None}

    def run():
        state["runner"], state["metrics"] = batch(state["runner"], 1)
        return state["runner"]

    first, times = time_compiled(run, args.repeats)
    seconds = statistics.median(times)
    metrics = {k: float(np.asarray(v)[0]) for k, v in jax.device_get(state["metrics"]).items()}
    agents = config.env_config.num_agents
    agent_steps = agents * games * config.env_config.max_steps
    return {
        "scenario": args.scenario,
        "algo": args.algo,
        "num_agents": agents,
        "grid": [config.env_config.height, config.env_config.width],
        "density": round(config.env_config.density, 4),
        "depth": args.depth,
        "width": args.width,
        "games_per_batch": games,
        "max_steps": config.env_config.max_steps,
        "node_budget": trainer.actor.node_budget,
        "edge_budget": trainer.actor.edge_budget,
        "update_chunks": trainer.update_chunks,
        "budget_ladder": [list(size) for size in trainer.actor.ladder],
        "share_ego_graphs": config.share_ego_graphs,
        "seconds_per_batch": seconds,
        "seconds_per_100_episodes": seconds * 100 / games,
        "seconds_per_episodes": seconds * args.episodes / games,
        "episodes": args.episodes,
        "agent_steps_per_s": agent_steps / seconds,
        "compile_s": first - seconds,
        "repeats": args.repeats,
        "peak_rss_mb": peak_rss_mb(),
        "device_peak_mb": device_peak_mb(),
        "graph_nodes_mean": metrics["graph_nodes"],
        "graph_nodes_max": metrics["graph_max_nodes"],
        "truncated_nodes": metrics["graph_truncated_nodes"],
        "overflow_nodes": metrics["graph_overflow_nodes"],
        "overflow_edges": metrics["graph_overflow_edges"],
        **machine(),
    }


def main(args: Args) -> dict:
    row = measure(args)
    print(f"{row['scenario']} {row['algo']} N={row['num_agents']} on {row['backend']} "
          f"({row['device']}): {row['seconds_per_episodes']:.1f} s per {args.episodes} episodes "
          f"of {row['max_steps']} steps, {row['agent_steps_per_s']:,.0f} agent-steps/s, "
          f"compile {row['compile_s']:.1f} s, ego-graph {row['graph_nodes_mean']:.2f} nodes "
          f"(max {row['graph_nodes_max']:.0f}), overflow {row['overflow_nodes']:.0f}")  # fmt: skip
    write_json(args.json, row)
    return row


if __name__ == "__main__":
    main(tyro.cli(Args))
