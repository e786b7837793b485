"""Reference policies for Battle: what fixed team-0 controllers score against the scripted team.

    python -m experiments.battle_reference --episodes 2000 --json out.json

Team 0 plays ``stay`` (every agent holds), ``random``, ``corner`` (every agent moves up until the
top edge, then left until the corner, then holds: a fixed convention a 3x3 view can follow, since
the off-grid channel shows the edges, which packs the team into one corner) or ``scripted`` (the
mirror match); team 1 is always ``scripted`` (walks at the nearest enemy in sight, else at the
enemy centroid: it sees the whole map, a learner sees its 3x3 window). Prints and saves win /
draw / loss rates with 95% Wilson intervals and the mean terminal reward x100 of team 0 — the
yardsticks for a learned Battle policy (README "Results").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from envs.core import LEFT, STAY, UP
from envs.opponents import make_controller
from experiments.common import ReferenceArgs, play_episodes, save_references
from qmarl_jax.evaluate import summarise

REFERENCES = ("stay", "random", "corner", "scripted")


@dataclasses.dataclass
class Args(ReferenceArgs):
    """Battle reference settings (``preset`` tiny: the paper's sizes)."""


def corner_actions(positions: jax.Array) -> jax.Array:
    """The ``corner`` convention: up while not on the top row, then left, then stay ->
    ``int32[N]`` for ``positions int32[N, 2]``."""
    row, col = positions[:, 0], positions[:, 1]
    return jnp.where(row > 0, UP, jnp.where(col > 0, LEFT, STAY)).astype(jnp.int32)


def outcomes(env, params, reference: str, keys: jax.Array) -> jax.Array:
    """Team 0's outcome (+1 / 0 / -1) of one episode per key -> ``int32[E]``: the sign of the
    survivors' difference at the end (a wiped-out team stays wiped out, so the survivors of the
    step that ended the game are the final ones)."""
    scripted = make_controller("scripted", env)
    own = make_controller("random" if reference == "random" else "scripted", env)
    team0 = jnp.asarray(env.teams) == 0

    def act(key, state):
        own_key, other_key = jax.random.split(key)
        mine = own(own_key, state, None)
        if reference == "stay":
            mine = jnp.full_like(mine, STAY)
        elif reference == "corner":
            mine = corner_actions(state.grid.positions)
        return jnp.where(team0, mine, scripted(other_key, state, None))

    _, final, _ = play_episodes(env, params, act, keys)
    alive = final.grid.alive
    margin = jnp.sum(alive & team0, axis=-1) - jnp.sum(alive & ~team0, axis=-1)
    return jnp.sign(margin).astype(jnp.int32)


def main(args: Args) -> dict:
    env, params = envs.make("battle", args.preset)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    rows = {}
    for reference in REFERENCES:
        outcome = np.asarray(outcomes(env, params, reference, keys))
        values = {"win": outcome > 0, "draw": outcome == 0, "loss": outcome < 0,
                  "terminal_reward": 100.0 * outcome}  # fmt: skip
        rows[reference] = summarise(values)
        r = rows[reference]
        print(f"{reference:8s} vs scripted: win {r['win']['mean']:.3f} "
              f"[{r['win']['low']:.3f}, {r['win']['high']:.3f}], draw {r['draw']['mean']:.3f}, "
              f"loss {r['loss']['mean']:.3f}, terminal reward x100 "
              f"{r['terminal_reward']['mean']:.1f} [{r['terminal_reward']['low']:.1f}, "
              f"{r['terminal_reward']['high']:.1f}]")  # fmt: skip
    return save_references(args, rows)


if __name__ == "__main__":
    main(tyro.cli(Args))
