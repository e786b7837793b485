"""The paper's experiments at CPU size: learning curves, Table 1, ensemble ablation, depth, Fig. 9.

    python -m experiments.reproduce curves   --scenarios jungle battle --seeds 3
    python -m experiments.reproduce table1   # needs `curves` (evaluates its trained parameters)
    python -m experiments.reproduce depth    --scenarios jungle
    python -m experiments.reproduce fig9     --sizes 10 100 1000 10000
    python -m experiments.reproduce all      # make reproduce: every stage, then the tables

``curves`` trains every algorithm on every scenario's ``tiny`` preset for ``--seeds`` seeds
(vmapped: one compile, the seeds in one program) and saves the curves (Figure 6) and the final
parameters. ``table1`` evaluates those parameters at the training size and at twice the agents
(Jungle 4 -> 8, Battle 14 -> 28, Deception 3 -> 6) with ``--episodes`` episodes per seed, with
ensembling (``mean_prob``) and without (``none``): Table 1 and the ensemble ablation. ``depth``
trains ``qmarl_ac`` at depth 1, 2 and 3 and reports score against seconds per batch. ``fig9`` runs
the training benchmark for ``qmarl_ac`` and ``mha`` at each N (one process per point).

Every stage writes ``OUT/<stage>.json`` when it finishes, merged with the settings earlier calls
measured (e.g. one scenario at a time; ``all`` skips stages already written, ``--force`` redoes
them) and ``tables`` renders ``OUT/tables.md`` and the PNGs from them.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from experiments.common import machine, run_module, write_json
from qmarl_jax.metrics import HEADLINE

TEST_AGENTS = {"jungle": 8, "battle": 28, "deception": 6}
STAGES = ("curves", "table1", "depth", "fig9")


@dataclasses.dataclass
class Args:
    """Reproduction settings (defaults: CPU-sized, about an hour on 2 cores)."""

    stage: tyro.conf.Positional[Literal["curves", "table1", "depth", "fig9", "tables", "all"]] = (
        "all"
    )
    """Which stage to run (all: every stage not yet done, then the tables)."""
    scenarios: tuple[str, ...] = ("jungle", "battle", "deception")
    algos: tuple[str, ...] = ("qmarl_ac", "qmarl_pg", "vanilla_pg", "mha")
    seeds: int = 3
    """Seeds per setting (vmapped)."""
    batches: int = 40
    """Training batches per run."""
    games: int = 32
    """Games per batch."""
    episodes: int = 200
    """Evaluation episodes per seed and setting."""
    depths: tuple[int, ...] = (1, 2, 3)
    sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    """Agent counts of the Figure 9 timing."""
    out: str = "results/reproduce"
    media: str = "docs/media"
    """Where the tables stage writes its PNGs."""
    force: bool = False


def train_config(args: Args, scenario: str, algo: str, **overrides):
    """The scenario's default config (its ``tiny`` world) for ``algo``, at this reproduction's
    games per batch and batch count."""
    from qmarl_jax.config import make_config

    fields = dict(algo=algo, games_per_batch=args.games, num_batches=args.batches)
    return make_config(scenario, **{**fields, **overrides})


def vmapped_train(trainer):
    """``keys [seeds, 2] -> (RunnerState, metrics)``, each stacked over the seeds: ``trainer.train``
    vmapped, every budget-ladder switch running all seeds on the size the fullest one needs
    (``graph.one_size_across``), so a switch stays a switch instead of running every size."""
    from qmarl_jax import graph, sharding

    return graph.vmap_one_size(trainer.train, sharding.SEEDS)  # as loop.chunk_program's


def train_seeds(config, seeds: int):
    """Train ``seeds`` runs in one vmapped program -> (params per seed, curves, seconds).

    Seed ``s`` is ``Trainer(config).train(split(PRNGKey(config.seed), seeds)[s])``, up to
    batched float rounding. ``seconds`` is the run time of the compiled program (compile
    excluded).
    """
    import jax

    from qmarl_jax.train import Trainer

    keys = jax.random.split(jax.random.PRNGKey(config.seed), seeds)
    compiled = jax.jit(vmapped_train(Trainer(config))).lower(keys).compile()
    start = time.perf_counter()
    runner, metrics = jax.block_until_ready(compiled(keys))
    seconds = time.perf_counter() - start
    params = [
        tuple(jax.tree.map(lambda x, s=s: np.asarray(x[s]), t.params) for t in runner.teams)
        for s in range(seeds)
    ]
    curves = {k: np.asarray(v).tolist() for k, v in metrics.items()}
    return params, curves, seconds


def stage_curves(args: Args, out: Path) -> dict:
    """Train every (scenario, algo) for ``args.seeds`` seeds -> ``{"scenario/algo": {config,
    curves [seeds, batches] per metric, seconds}}``; the parameters go to
    ``OUT/params-<scenario>-<algo>.pkl`` for ``table1``."""
    results = {}
    for scenario in args.scenarios:
        for algo in args.algos:
            config = train_config(args, scenario, algo)
            params, curves, seconds = train_seeds(config, args.seeds)
            name = f"{scenario}/{algo}"
            results[name] = {"config": config.to_dict(), "curves": curves, "seconds": seconds}
            with open(out / f"params-{scenario}-{algo}.pkl", "wb") as file:
                pickle.dump(params, file)
            final = np.mean(np.asarray(curves[HEADLINE[scenario]])[:, -5:])
            print(
                f"[curves] {name}: {seconds:.0f} s, last-5-batch {HEADLINE[scenario]} {final:.1f}"
            )
    return results


def evaluate_seeds(config, params_per_seed, episodes: int) -> dict:
    """Mean over seeds of the evaluation metrics (and each seed's value); one compile."""
    from qmarl_jax.evaluate import Evaluator

    evaluator = Evaluator(config)
    per_seed = [
        evaluator(params, episodes, seed=1000 + s) for s, params in enumerate(params_per_seed)
    ]
    names = list(per_seed[0]["metrics"])
    out = {
        name: {
            "mean": float(np.mean([r["metrics"][name]["mean"] for r in per_seed])),
            "seeds": [r["metrics"][name]["mean"] for r in per_seed],
            "half_width": float(np.mean([(r["metrics"][name]["high"] - r["metrics"][name]["low"])
                                         / 2 for r in per_seed])),
        }
        for name in names
    }  # fmt: skip
    if "score_vs_oracle" in per_seed[0]:
        ratios = [r["score_vs_oracle"] for r in per_seed]
        out["score_vs_oracle"] = {"mean": float(np.mean(ratios)), "seeds": ratios}
    return out


def stage_table1(args: Args, out: Path) -> dict:
    """Evaluate ``curves``' parameters at the training size and at ``TEST_AGENTS``, with and
    without ensembling (the baselines, one node per agent: without only) ->
    ``{"scenario/algo/train|test/mode": metrics over seeds}``."""
    from qmarl_jax.config import config_from_dict
    from qmarl_jax.evaluate import evaluation_config

    curves = json.loads((out / "curves.json").read_text())["results"]
    results = {}
    for name, run in curves.items():
        scenario, algo = name.split("/")
        config = config_from_dict(run["config"], source=f"curves.json[{name}]")
        with open(out / f"params-{scenario}-{algo}.pkl", "rb") as file:
            params = pickle.load(file)
        # Baselines have one node per agent (no ego-graph overlap): ensembling cannot apply.
        modes = ("mean_prob", "none") if algo.startswith("qmarl") else ("none",)
        for size in (None, TEST_AGENTS[scenario]):
            for mode in modes:
                eval_config = evaluation_config(config, args.episodes, size, mode, "scripted")
                key = f"{name}/{'train' if size is None else 'test'}/{mode}"
                results[key] = evaluate_seeds(eval_config, params, args.episodes)
                value = results[key][HEADLINE[scenario]]["mean"]
                print(f"[table1] {key}: {HEADLINE[scenario]} {value:.1f}")
    return results


def stage_depth(args: Args, out: Path) -> dict:
    """Train and evaluate ``qmarl_ac`` at each of ``args.depths`` -> ``{"scenario/depthD":
    {seconds, seconds_per_batch, evaluation, graph_nodes}}``."""
    from qmarl_jax.evaluate import evaluation_config

    results = {}
    for scenario in args.scenarios:
        for depth in args.depths:
            config = train_config(args, scenario, "qmarl_ac", depth=depth)
            params, curves, seconds = train_seeds(config, args.seeds)
            evaluated = evaluate_seeds(
                evaluation_config(config, args.episodes), params, args.episodes
            )
            results[f"{scenario}/depth{depth}"] = {
                "seconds": seconds, "seconds_per_batch": seconds / args.batches,
                "evaluation": evaluated,
                "graph_nodes": float(np.mean(curves["graph_nodes"])),
            }  # fmt: skip
            value = evaluated[HEADLINE[scenario]]["mean"]
            print(f"[depth] {scenario} depth {depth}: {HEADLINE[scenario]} {value:.1f}, "
                  f"{seconds:.0f} s")  # fmt: skip
    return results


def stage_fig9(args: Args, out: Path) -> dict:
    """Time ``qmarl_ac`` and ``mha`` training on Jungle at each of ``args.sizes`` agents (one
    ``experiments.bench_train`` process per point) -> ``{"rows": its JSON rows}``."""
    rows = []
    for algo in ("qmarl_ac", "mha"):
        for n in args.sizes:
            flags = ["--scenario", "jungle", "--num-agents", str(n), "--algo", algo]
            rows += run_module("experiments.bench_train", *flags, "--repeats", "1")
            seconds = rows[-1]["seconds_per_100_episodes"]
            print(f"[fig9] {algo} N={n}: {seconds:.1f} s per 100 episodes")
    return {"rows": rows}


def stage_tables(args: Args, out: Path) -> Path:
    """Render OUT/tables.md and the PNGs from the stages' JSON files."""
    from experiments.reproduce_report import render

    return render(out, args)


RUNNERS = {"curves": stage_curves, "table1": stage_table1, "depth": stage_depth,
           "fig9": stage_fig9}  # fmt: skip


def main(args: Args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = STAGES if args.stage == "all" else (() if args.stage == "tables" else (args.stage,))
    for stage in stages:
        path = out / f"{stage}.json"
        if args.stage == "all" and path.exists() and not args.force:
            print(f"[{stage}] already done: {path}")
            continue
        start = time.perf_counter()
        results = RUNNERS[stage](args, out)
        if path.exists():  # keep the settings measured by earlier calls (other scenarios)
            results = {**json.loads(path.read_text())["results"], **results}
        payload = {"stage": stage, "settings": dataclasses.asdict(args),
                   "seconds": time.perf_counter() - start, "machine": machine(),
                   "results": results}  # fmt: skip
        write_json(str(path), payload)
    print(f"wrote {stage_tables(args, out)}")


if __name__ == "__main__":
    main(tyro.cli(Args))
