"""Evaluate a trained run: win / draw / loss with 95% intervals, terminal reward, Jungle oracle.

    python -m experiments.evaluate --run RUN_DIR --opponent scripted --episodes 1000 --json out.json
    python -m experiments.evaluate --run RUN_DIR --num-agents 28 --ensemble none --greedy
    python -m experiments.evaluate --run RUN_DIR --num-agents 400 --density 0.16 --ensemble none
    python -m experiments.evaluate --run RUN_DIR --depth 0   # without the neighbours' messages
    python -m experiments.evaluate --run RUN_DIR --num-agents 28 --paired-ensemble none
    python -m experiments.evaluate --run RUN_DIR --ensemble-hops 1 --paired-ensemble none
    python -m experiments.evaluate --run RUN_DIR --greedy --paired-run OTHER_RUN_DIR

``--opponent`` is ``scripted``, ``random``, Battle's ``pack`` or ``strike`` rule
(``envs.opponents``) or another run directory (its frozen policy plays every team this run did
not learn). For a self-play run, ``--team T`` evaluates learned team ``T`` alone
(the opponent plays every other team). ``--paired-ensemble MODE`` also plays the same episodes
(the same start states) with that ensemble mode and reports each value's mean difference (the
run's mode minus MODE) with a 95% interval on the per-episode differences; every other setting,
``--ensemble-hops H`` too (only the ego-graphs centred within H hops of an agent vote for it),
is the same in both. ``--paired-run OTHER`` does the same with another run's (or policy
directory's) parameters in place of the ensemble mode: this run minus OTHER, on the same start
states and with the same keys: two policies that agree on a move play it alike, so the interval
of their difference is narrower than for two independent evaluations, though less so than for
two ensemble modes of one policy (Battle, two stage-3 policies, 2,000 greedy games: +-2.5
points against about +-3.0). Prints a table and writes the JSON summary (``--json``).

``--run`` may be a seed set (``experiments.train --seeds N``): every seed's run is evaluated
with these settings (the same start states) and the summary adds the mean over the seeds of
each value, as results over seeds are reported.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments.common import add_world_size_arguments, machine, write_json

#: Headline values printed per scenario (every value is in the JSON).
SHOWN = {
    "jungle": ("score", "oracle", "survival", "food_contact"),
    "battle": ("win", "draw", "loss", "terminal_reward"),
    "deception": ("home_reward", "found", "covered"),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run",
        required=True,
        help="training run directory, seed set, or policy directory (experiments.export_policy)",
    )
    parser.add_argument(
        "--opponent",
        default="scripted",
        help="scripted, random, Battle's pack or strike rule, or another run directory "
        "(default scripted)",
    )
    parser.add_argument(
        "--team",
        type=int,
        default=None,
        help="of a self-play run: the learned team to evaluate (--opponent plays the others)",
    )
    parser.add_argument("--episodes", type=int, default=1000)
    add_world_size_arguments(parser)
    parser.add_argument("--ensemble", default=None, help="mean_prob, mean_logit or none")
    parser.add_argument(
        "--paired-ensemble",
        default=None,
        help="also play the same episodes with this ensemble mode and report the paired "
        "differences",
    )
    parser.add_argument(
        "--paired-run",
        default=None,
        help="also play the same episodes with this run's (or policy directory's) parameters "
        "and report the paired differences",
    )
    parser.add_argument(
        "--ensemble-hops",
        type=int,
        default=None,
        help="only ego-graphs centred within this many hops of an agent vote for its action",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        help="ego-graph depth to play with instead of the run's (0: each agent alone)",
    )
    parser.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500, help="episodes per jitted batch")
    parser.add_argument("--json", default=None, help="write the summary here")
    return parser.parse_args(argv)  # fmt: skip


def report(summary: dict) -> str:
    """A short text table of the headline values."""
    density = f" ({summary['density']:g} per cell)" if summary.get("density") else ""
    match = f", team {summary['team']} against {summary['opponent']}" if summary["opponent"] else ""
    hops = summary.get("ensemble_hops")
    within = "" if hops is None else f" (ego-graphs within {hops} hops)"
    lines = [
        f"{summary['scenario']} / {summary['algo']}: {summary['episodes']} episodes, "
        f"{summary['num_agents']} agents{density}{match}, ensemble "
        f"{summary['ensemble']}{within}, depth {summary['depth']}, "
        f"{'greedy' if summary['greedy'] else 'sampled'}"
    ]
    # (Jungle above ``ORACLE_MAX_AGENTS`` agents has no oracle bound.)
    for name in (n for n in SHOWN[summary["scenario"]] if n in summary["metrics"]):
        m = summary["metrics"][name]
        lines.append(f"  {name:16s} {m['mean']:9.3f}   95% [{m['low']:.3f}, {m['high']:.3f}]")
    if "score_vs_oracle" in summary:
        lines.append(f"  {'score_vs_oracle':16s} {summary['score_vs_oracle']:9.3f}")
        parts = [f"{name} {row['score_vs_oracle']:.3f} ({row['share']:.0%})"
                 for name, row in summary["oracle_breakdown"].items()]  # fmt: skip
        lines.append(f"  {'  by episode':16s} {', '.join(parts)}")
    if "paired" in summary:
        paired = summary["paired"]
        if "run" in paired:
            lines.append(f"  paired on the same episodes: this run minus {paired['run']}")
        else:
            lines.append(f"  paired on the same episodes: ensemble {summary['ensemble']} minus "
                         f"{paired['ensemble']}")  # fmt: skip
        for name in (n for n in SHOWN[summary["scenario"]] if n in paired["difference"]):
            d = paired["difference"][name]
            interval = f"95% [{d['low']:+.3f}, {d['high']:+.3f}]"
            lines.append(f"  {name:16s} {d['mean']:+9.3f}   {interval}")
    t = summary["timing"]
    lines.append(f"  compile {t['compile_s']:.1f} s, play {t['play_s']:.1f} s")
    return "\n".join(lines)


def evaluate(run: str, args: argparse.Namespace) -> dict:
    """The summary of one run under the command's settings (``paired`` added with
    ``--paired-ensemble`` or ``--paired-run``; the per-episode values dropped)."""
    from qmarl_jax.evaluate import evaluate_run, paired_difference

    settings = dict(episodes=args.episodes, opponent=args.opponent, num_agents=args.num_agents,
                    greedy=args.greedy, seed=args.seed, batch_size=args.batch_size,
                    density=args.density, team=args.team, depth=args.depth,
                    ensemble_hops=args.ensemble_hops)  # fmt: skip
    summary = evaluate_run(run, ensemble=args.ensemble, **settings)
    if args.paired_ensemble is not None:
        other = evaluate_run(run, ensemble=args.paired_ensemble, **settings)
        difference = paired_difference(summary["per_episode"], other["per_episode"])
        summary["paired"] = {"ensemble": args.paired_ensemble, "difference": difference}
    if args.paired_run is not None:
        other = evaluate_run(args.paired_run, ensemble=args.ensemble, **settings)
        difference = paired_difference(summary["per_episode"], other["per_episode"])
        summary["paired"] = {"run": args.paired_run, "difference": difference}
    summary.pop("per_episode")
    return summary


def seed_set_summary(run: str, per_seed: dict[int, dict]) -> dict:
    """The mean over a seed set's runs of each value's mean (``metrics``, ``score_vs_oracle``
    and the paired differences), beside every seed's own summary."""
    runs = list(per_seed.values())
    mean = lambda values: float(np.mean(values))
    summary = {
        "run": run,
        "seeds": list(per_seed),
        "mean": {name: mean([r["metrics"][name]["mean"] for r in runs])
                 for name in runs[0]["metrics"]},
        "per_seed": {str(seed): r for seed, r in per_seed.items()},
    }  # fmt: skip
    if "score_vs_oracle" in runs[0]:
        summary["mean"]["score_vs_oracle"] = mean([r["score_vs_oracle"] for r in runs])
    if "paired" in runs[0]:
        summary["paired_mean"] = {
            name: mean([r["paired"]["difference"][name]["mean"] for r in runs])
            for name in runs[0]["paired"]["difference"]
        }
    return summary


def seed_set_report(summary: dict) -> str:
    """The headline values of every seed and their mean, one line each."""
    some = next(iter(summary["per_seed"].values()))
    names = [n for n in SHOWN[some["scenario"]] if n in some["metrics"]]
    names += ["score_vs_oracle"] if "score_vs_oracle" in summary["mean"] else []
    value = lambda r, n: r[n] if n == "score_vs_oracle" else r["metrics"][n]["mean"]
    lines = [f"seed set {summary['run']}: {len(summary['seeds'])} seeds",
             f"  {'seed':8s}" + "".join(f"{n:>17s}" for n in names)]  # fmt: skip
    for seed, r in summary["per_seed"].items():
        lines.append(f"  {seed:8s}" + "".join(f"{value(r, n):17.3f}" for n in names))
    lines.append(f"  {'mean':8s}" + "".join(f"{summary['mean'][n]:17.3f}" for n in names))
    return "\n".join(lines)


def check_paired_run(run: str, other: str, paired_ensemble: str | None) -> None:
    """Refuse a ``--paired-run`` that cannot play the same episodes as ``--run``, before any
    work: a seed set on either side, another scenario, or ``--paired-ensemble`` as well."""
    from envs.base import require
    from qmarl_jax.checkpoint import load_config
    from qmarl_jax.loop import require_one_run

    require(paired_ensemble is None, "paired_run", other,
            "pairs the run with another run; give it or --paired-ensemble, not both")  # fmt: skip
    require_one_run("run", run)
    require_one_run("paired_run", other)
    mine, theirs = load_config(run).scenario, load_config(other).scenario
    require(mine == theirs, "paired_run", other,
            f"is a {theirs} run; {run} plays {mine}: pair runs of one scenario")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from qmarl_jax.evaluate import check_choices
    from qmarl_jax.loop import seed_dir, seed_set_seeds

    try:
        check_choices(args.opponent, args.ensemble, args.paired_ensemble)
        seeds = seed_set_seeds(args.run)
        if args.paired_run is not None:
            check_paired_run(args.run, args.paired_run, args.paired_ensemble)
        if seeds is None:
            summary = evaluate(args.run, args)
            print(report(summary))
        else:
            per_seed = {s: evaluate(str(seed_dir(args.run, s)), args) for s in seeds}
            summary = seed_set_summary(args.run, per_seed)
            print("\n".join(report(r) for r in per_seed.values()))
            print(seed_set_report(summary))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary["machine"] = machine()
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
