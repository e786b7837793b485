"""Battle's strongest recipe in one command: imitate the local ``strike`` rule, then RL.

    python -m experiments.battle_student --out runs/battle-student [--seed 0]

Three stages, each written under ``OUT`` (docs/RESULTS.md, Battle, "With a smaller learning rate,
RL does improve the student"):

1. ``OUT/student``: ``experiments.battle_imitation --teacher strike`` (DAgger on the ``strike``
   rule, ``iterations`` x ``games`` games, a ``(2 view_radius + 1)^2`` view); its per-iteration
   rows go to ``OUT/imitation.json``.
2. ``OUT/fine_tune``: ``experiments.train`` started from the student (``init_from``) with kill
   credit ``kill_credit``, the policy frozen for the first ``critic_warmup`` batches and learning
   rate ``lr`` (the default 0.003 throws the student away at once; 0.0001 lifts it).
3. ``OUT/evaluation.json``: the student and the fine-tuned run, ``episodes`` games each,
   sampled, greedy, without ensembling and at ``test_agents`` agents (Table 1's 2x).

A stage whose output exists is not redone: rerun the same command after a crash, Ctrl-C or kill.
The student is kept once it is saved, and the fine-tune resumes from its last checkpoint (with
other settings it refuses and names them); a fine-tune stopped early (Ctrl-C) is not evaluated.
Prints the evaluation table at the end. ``--view-radius 3`` (7x7) scores the same at 14 agents
and better at 28 (session 32).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import tyro

from envs.base import require
from experiments.common import machine, write_json


@dataclasses.dataclass
class Args:
    """Settings of the imitation + fine-tune pipeline (defaults: session 31's recipe)."""

    out: str = "runs/battle-student"
    """Directory of the three stages' outputs."""
    seed: int = 0
    """Seed of the DAgger games and of the fine-tune (its games, minibatches and sampling)."""
    view_radius: int = 2
    """The student's observation window radius (2: a 5x5 view)."""
    iterations: int = 8
    """DAgger iterations."""
    games: int = 256
    """Games played and labelled per DAgger iteration."""
    lr: float = 1e-4
    """The fine-tune's learning rate (annealed to 0 by the Battle default)."""
    critic_warmup: int = 30
    """Fine-tune batches that train the critic alone."""
    kill_credit: float = 1.0
    """The fine-tune's per-kill reward (``TrainConfig.kill_credit``)."""
    num_batches: int | None = None
    """Fine-tune batches (None: the Battle default, 300)."""
    games_per_batch: int | None = None
    """Fine-tune games per batch (None: the Battle default, 100)."""
    episodes: int = 1000
    """Evaluation games per setting (also after each DAgger iteration)."""
    test_agents: int = 28
    """Agents of the scale-out evaluation (Table 1: twice the 14 trained with)."""


#: The evaluations of stage 3: name -> ``(evaluate_run`` keywords, greedy).
SETTINGS = {
    "sampled": ({}, False),
    "greedy": ({}, True),
    "ensemble_none": ({"ensemble": "none"}, False),
}


def fine_tune_config(args: Args, student_dir: Path):
    """The fine-tune's ``TrainConfig``: Battle's default with the student's view, started from
    ``student_dir`` (validated: a bad field raises before anything is written)."""
    from qmarl_jax.config import make_config

    sizes = {name: getattr(args, name) for name in ("num_batches", "games_per_batch")
             if getattr(args, name) is not None}  # fmt: skip
    return make_config("battle", view_radius=args.view_radius, kill_credit=args.kill_credit,
                       init_from=str(student_dir), critic_warmup=args.critic_warmup, lr=args.lr,
                       seed=args.seed, **sizes)  # fmt: skip


#: The imitation settings a kept student must have been made with.
STUDENT_FIELDS = ("seed", "view_radius", "iterations", "games")


def check(args: Args) -> None:
    """Refuse bad settings, and outputs of an earlier call made with other settings, before any
    stage starts."""
    from qmarl_jax.checkpoint import check_compatible, load_config

    for name in ("iterations", "games", "episodes", "view_radius", "test_agents"):
        require(getattr(args, name) >= 1, name, getattr(args, name), "must be >= 1")
    out = Path(args.out)
    config = fine_tune_config(args, out / "student")  # the TrainConfig's own checks
    if student_saved(out):
        made = json.loads((out / "imitation.json").read_text())
        differ = [f"{name}: {made[name]!r} there, {getattr(args, name)!r} here"
                  for name in STUDENT_FIELDS if made[name] != getattr(args, name)]  # fmt: skip
        if differ:
            raise ValueError(f"the student in {out / 'student'} was made with other settings "
                             f"({'; '.join(differ)}): use another --out")  # fmt: skip
    if has_checkpoint(out / "fine_tune"):
        check_compatible(load_config(out / "fine_tune"), config)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a saved config and at least one checkpoint."""
    from qmarl_jax.checkpoint import CONFIG_FILE, latest_batch

    return (run_dir / CONFIG_FILE).exists() and latest_batch(run_dir) is not None


def student_saved(out: Path) -> bool:
    """Whether stage 1 finished: the student's checkpoint and ``imitation.json`` (written
    after it) are both there."""
    return has_checkpoint(out / "student") and (out / "imitation.json").exists()


def make_student(args: Args, student_dir: Path) -> None:
    """Stage 1: DAgger on ``strike`` into ``student_dir`` (skipped when it is saved; a student
    left without its ``imitation.json`` by a kill is made again)."""
    from experiments import battle_imitation

    if student_saved(student_dir.parent):
        print(f"student: kept {student_dir}")
        return
    shutil.rmtree(student_dir, ignore_errors=True)
    battle_imitation.main(battle_imitation.Args(
        teacher="strike", view_radius=args.view_radius, iterations=args.iterations,
        games=args.games, eval_episodes=args.episodes, seed=args.seed,
        run_dir=str(student_dir), json=str(student_dir.parent / "imitation.json"),
    ))  # fmt: skip


def fine_tune(args: Args, student_dir: Path, run_dir: Path) -> bool:
    """Stage 2: RL from the student into ``run_dir`` (resumed when it has a checkpoint) ->
    whether it reached its last batch (False after Ctrl-C, which ``loop.train`` answers by
    returning at the last saved batch)."""
    from qmarl_jax import loop
    from qmarl_jax.checkpoint import latest_batch

    config = fine_tune_config(args, student_dir)
    resume = run_dir if has_checkpoint(run_dir) else None
    loop.train(config, run_dir=run_dir, resume=resume)
    return latest_batch(run_dir) == config.num_batches


def evaluate(args: Args, runs: dict[str, Path]) -> dict:
    """Stage 3: each run of ``runs`` (name -> directory) under every ``SETTINGS`` entry and at
    ``test_agents`` agents against the scripted team -> ``{run: {setting: metrics}}``: what
    ``experiments.evaluate --run DIR --episodes N [--greedy | --ensemble none | --num-agents
    M]`` reports (seed 0)."""
    from qmarl_jax.evaluate import evaluate_run

    settings = {**SETTINGS, f"agents_{args.test_agents}": ({"num_agents": args.test_agents}, False)}
    return {name: {setting: evaluate_run(run_dir, episodes=args.episodes, greedy=greedy,
                                         **overrides)["metrics"]
                   for setting, (overrides, greedy) in settings.items()}
            for name, run_dir in runs.items()}  # fmt: skip


def report(results: dict) -> str:
    """A text table: the terminal reward x100 [95%] of every run and setting."""
    lines = []
    for name, rows in results.items():
        cells = [f"{setting} {m['terminal_reward']['mean']:+.1f} "
                 f"[{m['terminal_reward']['low']:+.1f}, {m['terminal_reward']['high']:+.1f}]"
                 for setting, m in rows.items()]  # fmt: skip
        lines.append(f"{name:10s} " + ", ".join(cells))
    return "\n".join(lines)


def main(args: Args) -> dict:
    check(args)
    out = Path(args.out)
    student_dir, run_dir = out / "student", out / "fine_tune"
    make_student(args, student_dir)
    if not fine_tune(args, student_dir, run_dir):
        print("the fine-tune stopped early: rerun the same command to resume it")
        return {"finished": False}
    results = evaluate(args, {"student": student_dir, "fine_tune": run_dir})
    print("terminal reward x100 against the scripted team:\n" + report(results))
    summary = {**dataclasses.asdict(args), "finished": True, "results": results, **machine()}
    write_json(str(out / "evaluation.json"), summary)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main(tyro.cli(Args))["finished"] else 130)
