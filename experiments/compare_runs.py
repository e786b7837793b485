"""Learning curves of several training runs side by side: binned means as JSON, one PNG.

    python -m experiments.compare_runs runs/a runs/b --labels plain adaptive --bin 50 \\
        --json out.json --plot out.png
    python -m experiments.compare_runs a.json b.json --bin 50 --json out.json --plot out.png

A run is a training run directory (its ``metrics.jsonl``, one row per batch), a seed set
(``experiments.train --seeds``) or the ``--json`` of ``experiments.train_seeds`` (several vmapped
seeds). Each is cut into bins of ``--bin`` batches;
the JSON holds, per run, the bins' first and last batch, the mean of every numeric metric over
the bin (for several seeds: the mean over seeds of each seed's bin mean, and the headline and
entropy per seed), the run's config and, from ``train_seeds``, its evaluation. The PNG draws the
scenario's headline metric (Jungle ``score``, Battle ``terminal_reward``, Deception
``home_reward``) per bin against the batch, with the seeds' min-max band.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.common import write_json
from qmarl_jax.metrics import HEADLINE


def binned(rows: list[dict], size: int) -> dict[str, list]:
    """Means over consecutive bins of ``size`` rows -> ``{"first_batch", "last_batch", metric:
    [per bin]}`` (the last bin may be shorter; non-numeric fields are left out)."""
    bins = [rows[i : i + size] for i in range(0, len(rows), size)]
    names = [k for k, v in rows[0].items() if isinstance(v, int | float) and k != "batch"]
    out = {"first_batch": [b[0]["batch"] for b in bins],
           "last_batch": [b[-1]["batch"] for b in bins]}  # fmt: skip
    for name in names:
        out[name] = [float(np.mean([row[name] for row in b if name in row])) for b in bins]
    return out


def binned_seeds(curves: dict[str, list], size: int, metric: str) -> dict[str, list]:
    """``binned`` of every seed of ``train_seeds`` curves (``{name: [seeds][batches]}``, shaped
    as ``curves[metric]``; others are left out) -> ``{"first_batch", "last_batch", name:
    [seeds][bins]}``."""
    shape = np.shape(curves[metric])
    names = [k for k, v in curves.items() if np.shape(v) == shape]
    per_seed = []
    for seed in range(shape[0]):
        rows = [{"batch": b + 1, **{k: float(curves[k][seed][b]) for k in names}}
                for b in range(shape[1])]  # fmt: skip
        per_seed.append(binned(rows, size))
    bounds = {k: per_seed[0][k] for k in ("first_batch", "last_batch")}
    return {**bounds, **{k: [bins[k] for bins in per_seed] for k in names}}


def load_seeds(path: Path, size: int) -> dict:
    """``{"config", "batches", "seeds", "curves", "curves_per_seed", "evaluation"}`` of one
    ``train_seeds`` JSON: ``curves`` are the means over seeds of the per-seed bin means."""
    result = json.loads(path.read_text())
    if not isinstance(result, dict) or "curves" not in result or "seeds" not in result:
        raise ValueError(f"{path} is not the --json of experiments.train_seeds")
    return seeds_summary(result, size)


def load_seed_set(root: Path, seeds: list[int], size: int) -> dict:
    """``load_seeds`` of a seed set: every seed's ``metrics.jsonl`` (the batches all have)."""
    from qmarl_jax.loop import seed_dir

    per_seed = [_rows(seed_dir(root, seed)) for seed in seeds]
    batches = min(len(rows) for rows in per_seed)
    names = [k for k, v in per_seed[0][0].items() if isinstance(v, int | float) and k != "batch"]
    curves = {name: [[row[name] for row in rows[:batches]] for rows in per_seed]
              for name in names}  # fmt: skip
    config = json.loads((seed_dir(root, seeds[0]) / "config.json").read_text())
    return seeds_summary({"config": config, "seeds": len(seeds), "curves": curves}, size)


def seeds_summary(result: dict, size: int) -> dict:
    """The summary of ``{"config", "seeds", "curves": {name: [seeds][batches]}}``."""
    metric = HEADLINE[result["config"]["scenario"]]
    per_seed = binned_seeds(result["curves"], size, metric)
    bounds = {k: per_seed.pop(k) for k in ("first_batch", "last_batch")}
    return {
        "config": result["config"],
        "batches": bounds["last_batch"][-1],
        "seeds": result["seeds"],
        "curves": {**bounds, **{k: np.mean(v, axis=0).tolist() for k, v in per_seed.items()}},
        "curves_per_seed": {k: per_seed[k] for k in (metric, "entropy") if k in per_seed},
        "evaluation": result.get("evaluation"),
    }


def load_run(run_dir: Path, size: int) -> dict:
    """``{"config", "batches", "curves"}`` of one run directory (``load_seed_set`` of a seed
    set, ``load_seeds`` of a ``train_seeds`` JSON)."""
    from qmarl_jax.loop import seed_set_seeds

    if run_dir.is_file():
        return load_seeds(run_dir, size)
    seeds = seed_set_seeds(run_dir)
    if seeds is not None:
        return load_seed_set(run_dir, seeds, size)
    rows = _rows(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    return {"config": config, "batches": rows[-1]["batch"], "curves": binned(rows, size)}


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        raise ValueError(f"run {run_dir} has no batches in metrics.jsonl")
    return rows


def plot(runs: dict[str, dict], path: Path) -> Path:
    """The headline metric of every run per bin (bin centre on the x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    metric = None
    for label, run in runs.items():
        metric = HEADLINE[run["config"]["scenario"]]
        curves = run["curves"]
        centre = (np.asarray(curves["first_batch"]) + np.asarray(curves["last_batch"])) / 2
        (line,) = ax.plot(centre, curves[metric], marker=".", label=label)
        seeds = run.get("curves_per_seed", {}).get(metric)
        if seeds is not None and len(seeds) > 1:
            low, high = np.min(seeds, axis=0), np.max(seeds, axis=0)
            ax.fill_between(centre, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("batch")
    ax.set_ylabel(f"{metric} (x100, bin mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories, seed sets or train_seeds JSONs")
    parser.add_argument("--labels", nargs="*", default=None, help="one per run (default: names)")
    parser.add_argument("--bin", type=int, default=50, help="batches per bin")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    labels = args.labels or [Path(run).name for run in args.runs]
    if len(labels) != len(args.runs):
        print(f"error: {len(labels)} --labels for {len(args.runs)} runs", file=sys.stderr)
        return 2
    if args.bin < 1:
        print(f"error: --bin must be >= 1, got {args.bin}", file=sys.stderr)
        return 2
    try:
        runs = {label: load_run(Path(run), args.bin)
                for label, run in zip(labels, args.runs, strict=True)}  # fmt: skip
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for label, run in runs.items():
        metric = HEADLINE[run["config"]["scenario"]]
        values = " ".join(f"{v:.1f}" for v in run["curves"][metric])
        line = f"{label} ({run['batches']} batches), {metric} per {args.bin}: {values}"
        evaluated = (run.get("evaluation") or {}).get("train", {})
        for name in (metric, "score_vs_oracle"):
            if name in evaluated:
                line += f"; evaluated {name} {evaluated[name]['mean']:.3f}"
        print(line)
    write_json(args.json, {"bin": args.bin, "runs": runs})
    if args.plot:
        plot(runs, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
