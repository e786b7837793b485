"""How closely does a trained Battle policy follow the ``strike`` rule (or ``strike2``, or the
``rollout`` teacher) on its own games?

    python -m experiments.teacher_agreement --run RUN --games 256 [--teacher strike] --json F

Plays ``games`` games with the run's latest team-0 policy (its ensembled, sampled actions, as in
training) against the scripted team, labels every state with the teacher's actions and prints
the policy's argmax agreement with them: over all nodes of alive team-0 agents, and on the
agent-steps where the teacher departs from ``pack`` (its foresight: for ``strike`` the
2.5-3.7% of labels that make its +71.5 against ``pack``'s -3.6), as
``experiments.battle_imitation`` measures its DAgger students on held-out states. A
kickstarted run's ``teacher_agreement`` metric is the first number; the second says whether the
foresight was learned.
"""

from __future__ import annotations

import dataclasses

import jax
import tyro

from envs.base import require
from experiments.battle_imitation import RULE_TEACHERS, describe, label_agreement, labelled_games
from experiments.battle_reference import reference_policy
from experiments.common import machine, require_battle_run, write_json
from qmarl_jax.loop import load_runner


@dataclasses.dataclass
class Args:
    """Agreement settings: how often a Battle policy takes its teacher's action on its own games."""

    run: str
    """A Battle training run directory (its latest checkpoint is measured)."""
    games: int = 256
    """Games played and labelled."""
    minibatch: int = 256
    """States per jitted agreement count."""
    teacher: str | None = None
    """The teacher the states are labelled with: ``strike``, ``strike2`` or ``rollout``
    (``envs.opponents``); default: the run's own kickstart teacher if it is one of them (a
    ``--preset kickstart`` run's is ``rollout``), else ``strike``."""
    seed: int = 0
    json: str | None = None


def run_teacher(config) -> str:
    """The rule a run's states are labelled with by default: its kickstart teacher when that is
    one of ``RULE_TEACHERS``, else ``strike``."""
    return config.kickstart if config.kickstart in RULE_TEACHERS else "strike"


def main(args: Args) -> dict:
    require(args.games >= 1, "games", args.games, "must be >= 1")
    require(args.minibatch >= 1, "minibatch", args.minibatch, "must be >= 1")
    allowed = f"choose one of: {', '.join(RULE_TEACHERS)}"
    require(args.teacher in (None, *RULE_TEACHERS), "teacher", args.teacher, allowed)
    teacher = args.teacher or run_teacher(require_battle_run(args.run))
    trainer, runner = load_runner(args.run)
    play = labelled_games(trainer, reference_policy(trainer.env, teacher), args.games, False)
    data = play(runner.teams[0].params, jax.random.PRNGKey(args.seed))
    agreement = label_agreement(trainer, runner.teams[0].params, data, args.minibatch)
    print(f"{args.run} (batch {int(runner.batch)}, {args.games} games): agreement with "
          f"{teacher} {describe(agreement)}")  # fmt: skip
    out = {**{k: v for k, v in dataclasses.asdict(args).items() if k != "json"}, "teacher": teacher,
           "trained_batches": int(runner.batch), "agreement": agreement, **machine()}  # fmt: skip
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
