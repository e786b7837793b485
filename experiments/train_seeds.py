"""Train one config on several seeds in one vmapped program and summarise the learning curves:
the tool for learning A/Bs, where one seed's curve says little.

    python -m experiments.train_seeds --scenario jungle --seeds 3 --json ab.json \\
        --algo qmarl_ac --view-radius 2 --num-batches 400 --games-per-batch 32 --q-head dueling

Every ``TrainConfig`` field is a flag, as in ``experiments.train``. Seeds are
``split(PRNGKey(seed), seeds)`` (``experiments.reproduce.train_seeds``). The budgets cannot
grow inside one vmapped program: nodes and edges they drop are counted in ``dropped_by_budget``
and warned about (raise ``--budget-margin``). Prints the mean of the
headline metric and the entropy over every 50 batches per seed, and writes the curves, the
per-seed mean over the last 50 batches and the run seconds (compile excluded) to ``--json``.

With ``--eval-episodes E`` each seed's final policy is also evaluated as ``experiments.evaluate``
does (E episodes, sampled actions, the scripted opponent, evaluation seed 1000 + seed index):
at the training size and, with ``--eval-num-agents M``, at M agents too (Table 1's twice the
size), printing the headline metric per seed (and Jungle's ``score_vs_oracle``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments.common import machine, write_json

WINDOW = 50


def summarise(curve: np.ndarray) -> list[float]:
    """Per-seed mean over the last ``WINDOW`` batches of a ``[seeds, batches]`` curve."""
    return np.round(curve[:, -WINDOW:].mean(axis=1), 3).tolist()


def evaluation_configs(config, episodes: int, num_agents: int | None) -> dict:
    """The evaluation configs of ``--eval-episodes`` (validated before any training):
    ``{"train": ...}`` plus ``{"num_agents_M": ...}`` with ``--eval-num-agents M``."""
    from qmarl_jax.evaluate import evaluation_config

    if episodes < 0:
        raise ValueError(f"invalid --eval-episodes={episodes}: must be >= 0")
    if not episodes:
        return {}
    sizes = {"train": None}
    if num_agents is not None:
        sizes[f"num_agents_{num_agents}"] = num_agents
    # TrainConfig validates its environment: a size the scenario cannot take raises here.
    return {name: evaluation_config(config, episodes, size) for name, size in sizes.items()}


def evaluate_final(configs: dict, params_per_seed, episodes: int) -> dict:
    """Evaluate each seed's final parameters under each of ``configs`` ->
    ``{name: reproduce.evaluate_seeds(...)}``; prints the headline metric per seed."""
    from experiments.reproduce import evaluate_seeds
    from qmarl_jax.metrics import HEADLINE

    out = {}
    for name, eval_config in configs.items():
        evaluated = evaluate_seeds(eval_config, params_per_seed, episodes)
        headline = HEADLINE[eval_config.scenario]
        line = (f"evaluation ({name}, {episodes} episodes): {headline} per seed "
                f"{np.round(evaluated[headline]['seeds'], 1).tolist()}, mean "
                f"{evaluated[headline]['mean']:.1f}")  # fmt: skip
        if "score_vs_oracle" in evaluated:
            ratio = evaluated["score_vs_oracle"]
            seeds = np.round(ratio["seeds"], 3).tolist()
            line += f"; score_vs_oracle {seeds}, mean {ratio['mean']:.3f}"
        print(line)
        out[name] = evaluated
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No prefix matching: `--seed` (a TrainConfig flag) must not be read as a front flag.
    front = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    front.add_argument("--scenario", default="jungle")
    front.add_argument("--preset", default="default")
    front.add_argument("--seeds", type=int, default=3)
    front.add_argument("--json", default=None)
    front.add_argument("--eval-episodes", type=int, default=0)
    front.add_argument("--eval-num-agents", type=int, default=None)
    known, rest = front.parse_known_args(argv)

    import tyro

    from envs.base import require
    from experiments.reproduce import train_seeds
    from qmarl_jax.config import FINETUNE_PRESETS, preset_config
    from qmarl_jax.metrics import HEADLINE

    fresh = (
        "starts every seed from a fresh network; fine-tune runs with experiments.train "
        "(--seeds N trains a seed set from another)"
    )
    require(known.preset not in FINETUNE_PRESETS, "preset", known.preset, fresh)
    base = preset_config(known.scenario, known.preset)
    config = tyro.cli(type(base), default=base, args=rest, prog="python -m experiments.train_seeds")
    require(config.init_from is None, "init_from", config.init_from, fresh)
    eval_configs = evaluation_configs(config, known.eval_episodes, known.eval_num_agents)
    params, curves, seconds = train_seeds(config, known.seeds)
    headline = HEADLINE[config.scenario]
    score, entropy = np.asarray(curves[headline]), np.asarray(curves["entropy"])
    for start in range(0, score.shape[1], WINDOW):
        window = slice(start, start + WINDOW)
        print(f"batches {start + 1}-{start + score[:, window].shape[1]}: {headline} "
              f"{np.round(score[:, window].mean(1), 1)}, entropy "
              f"{np.round(entropy[:, window].mean(1), 2)}")  # fmt: skip
    result = {
        "config": config.to_dict(),
        "seeds": known.seeds,
        "headline": headline,
        f"last{WINDOW}_{headline}_per_seed": summarise(score),
        f"last{WINDOW}_entropy_per_seed": summarise(entropy),
        "seconds": seconds,
        "curves": curves,
        "machine": machine(),
    }
    dropped = {k: float(np.sum(curves[f"graph_overflow_{k}"])) for k in ("nodes", "edges")}
    result["dropped_by_budget"] = dropped
    last = result[f"last{WINDOW}_{headline}_per_seed"]
    print(
        f"last {WINDOW} batches: {headline} per seed {last}; {seconds:.0f} s, {known.seeds} seeds"
    )
    if dropped["nodes"] or dropped["edges"]:
        # One vmapped program cannot regrow its budgets as the host loop does.
        print(f"warning: the ego-graph budgets dropped {dropped['nodes']:.0f} nodes and "
              f"{dropped['edges']:.0f} edges over the run; raise --budget-margin")  # fmt: skip
    if eval_configs:
        result["evaluation"] = evaluate_final(eval_configs, params, known.eval_episodes)
    write_json(known.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
