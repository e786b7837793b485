"""``make bench``: env and training speed against N, and a density sweep at 10,000 agents.

    python -m experiments.bench_scaling --json bench/results.json --plot docs/media/scaling.png

For every N in ``--sizes``: the Jungle env benchmark (``experiments.bench_env``) and the training
benchmark (``experiments.bench_train``, seconds per 100 episodes of 30 steps) for every algorithm
in ``--algos``; then, at ``--density-agents`` agents, the training benchmark at each of
``--densities`` (ego-graph sizes, truncations, seconds, peak memory: the dense-crowd question).
Each measurement runs in a fresh process (its own compile and peak RSS). The JSON keeps every
row; the PNG is log-log.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from experiments.common import machine, run_module, write_json


@dataclasses.dataclass
class Args:
    """Scaling benchmark settings."""

    scenario: str = "jungle"
    sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    algos: tuple[str, ...] = ("qmarl_ac", "mha")
    densities: tuple[float, ...] = (0.04, 0.10, 0.20, 0.40)
    density_agents: int = 10000
    density_update_chunks: int = 0
    """Time chunks of the density sweep's update (bounds its memory; the same gradient; 0 = the
    training default)."""
    repeats: int = 3
    """Timed repeats per training measurement (the median is reported)."""
    skip_env: bool = False
    skip_density: bool = False
    json: str = "bench/results.json"
    plot: str = "docs/media/scaling.png"


def measure(args: Args) -> dict:
    """Every row, saved to ``args.json`` after each measurement (a run cut short keeps them)."""
    results = {"env": [], "train": [], "density": [], "failed": [], "machine": machine()}

    def record(part: str, rows: list[dict]) -> None:
        results[part] += rows
        write_json(args.json, results)

    if not args.skip_env:
        sizes = [str(n) for n in args.sizes]
        record("env", run_module("experiments.bench_env", "--scenario", args.scenario,
                                 "--num-agents", *sizes))  # fmt: skip
    for algo in args.algos:
        for n in args.sizes:
            record("train", run_module("experiments.bench_train", "--scenario", args.scenario,
                                       "--num-agents", str(n), "--algo", algo,
                                       "--repeats", str(args.repeats),
                                       failures=results["failed"]))  # fmt: skip
    if not args.skip_density:
        for density in args.densities:
            record("density", run_module(
                "experiments.bench_train", "--scenario", args.scenario,
                "--num-agents", str(args.density_agents), "--density", str(density),
                "--update-chunks", str(args.density_update_chunks),
                "--repeats", str(args.repeats), failures=results["failed"],
            ))  # fmt: skip
    return results


def plot(results: dict, path: str) -> Path:
    """Log-log PNG: seconds per 100 episodes and agent-steps/s against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    algos = sorted({row["algo"] for row in results["train"]})
    for algo in algos:
        rows = sorted((r for r in results["train"] if r["algo"] == algo),
                      key=lambda r: r["num_agents"])  # fmt: skip
        n = [r["num_agents"] for r in rows]
        left.plot(n, [r["seconds_per_100_episodes"] for r in rows], "o-", label=f"train {algo}")
        right.plot(n, [r["agent_steps_per_s"] for r in rows], "o-", label=f"train {algo}")
    if results["env"]:
        rows = sorted(results["env"], key=lambda r: r["num_agents"])
        right.plot([r["num_agents"] for r in rows], [r["agent_steps_per_s"] for r in rows],
                   "s--", label="env only (random actions)")  # fmt: skip
    left.set_ylabel("seconds per 100 episodes (30 steps)")
    right.set_ylabel("agent-steps per second")
    device = results["machine"]["device"]
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("agents N")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"{results['train'][0]['scenario']} scaling on {device}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def main(args: Args) -> dict:
    results = measure(args)
    if results["train"]:
        plot(results, args.plot)
    for r in results["train"] + results["density"]:
        device_peak = f" (device {r['device_peak_mb']:.0f} MB)" if r.get("device_peak_mb") else ""
        print(f"{r['algo']:9s} N={r['num_agents']:6d} density={r['density']:.3f}: "
              f"{r['seconds_per_100_episodes']:9.1f} s / 100 episodes, "
              f"{r['agent_steps_per_s']:11,.0f} agent-steps/s, ego-graph "
              f"{r['graph_nodes_mean']:.2f} nodes (max {r['graph_nodes_max']:.0f}), "
              f"truncated {r['truncated_nodes']:.0f}, "
              f"peak {r['peak_rss_mb']:.0f} MB{device_peak}")  # fmt: skip
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
