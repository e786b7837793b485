"""Reference policies for Battle: what fixed team-0 controllers score against the scripted team.

    python -m experiments.battle_reference --episodes 2000 --json out.json

Team 0 plays ``stay`` (every agent holds), ``random``, ``corner`` (every agent moves up until the
top edge, then left until the corner, then holds: a fixed convention a 3x3 view can follow, since
the off-grid channel shows the edges), ``pack`` (up while the cell above is free, else left while
the cell to the left is free, else hold: the 3x3 view shows both, and the team packs into a
block in the top-left corner instead of a line along the edge), ``scripted`` (the mirror match),
``charge`` (the scripted rule without holding once beside an enemy) or ``strike`` (``pack`` plus
one step of foresight: each agent steps beside an enemy that three of its team would then touch,
and never onto a cell where three enemies would touch it, predicting the enemies' moves by their
rule: ``envs.opponents.strike_actions``; ``strike_static`` takes the enemies where they stand
instead), or ``strike2`` (``strike`` planned again with each teammate on the cell its ``strike``
move takes it to: one round of coordination), or ``rollout`` (each agent alone tries its 5
actions and plays each 2 steps forward on the env's own dynamics, its team on ``strike`` and the
enemies on their rule, keeping the one with the best survivors' margin: privileged, a
kickstarting teacher, not a policy a learner could run); team 1 is always ``scripted`` (walks at the
nearest enemy within ``sight_radius`` 4, else at the enemy centroid: it sees the whole map, a
learner sees its 3x3 window).
``lookahead`` is a centralised rollout planner over ``pack`` on the env's own dynamics
(``planner``, ``envs.planner``): not a policy a learner could copy, but proof of how far
above the scripted team a team can get.
Prints and saves win / draw / loss rates with 95% Wilson intervals and the mean terminal reward
x100 of team 0 — the yardsticks for a learned Battle policy (docs/RESULTS.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from envs.base import require
from envs.battle import survivors_margin
from envs.core import LEFT, STAY, UP
from envs.opponents import (
    CONTROLLERS,
    TEACHERS_ONLY,
    battle_scripted,
    make_controller,
    pack_actions,
    strike_actions,
    survivors_margin_value,
)
from envs.planner import JointPolicy, lookahead_policy
from experiments.common import (
    ReferenceArgs,
    play_episodes,
    require_planner_settings,
    save_references,
)
from qmarl_jax.evaluate import summarise

REFERENCES = ("stay", "random", "corner", "pack", "scripted", "charge", "strike", "strike2",
              "strike_static", "rollout")  # fmt: skip


@dataclasses.dataclass
class Args(ReferenceArgs):
    """Battle reference settings (``preset`` tiny: the paper's sizes)."""

    lookahead_episodes: int = 500
    """Games of the ``lookahead`` planner (the first of the ``episodes`` keys; 0 = skip it)."""
    lookahead_candidates: int = 16
    """Joint actions the planner scores per step."""
    lookahead_horizon: int = 6
    """Steps each candidate is played out (the first with the candidate, then ``pack``)."""
    rollout_episodes: int | None = None
    """Games of ``rollout``, by far the costliest reference (each step every team-0 agent plays
    its 5 actions 2 steps forward): the first of the ``episodes`` keys; None = all of them."""


def corner_actions(positions: jax.Array) -> jax.Array:
    """The ``corner`` convention: up while not on the top row, then left, then stay ->
    ``int32[N]`` for ``positions int32[N, 2]``."""
    row, col = positions[:, 0], positions[:, 1]
    return jnp.where(row > 0, UP, jnp.where(col > 0, LEFT, STAY)).astype(jnp.int32)


def reference_policy(env, reference: str) -> JointPolicy:
    """The ``reference`` controller: ``policy(key, state) -> int32[N]`` (the caller keeps team
    0's entries)."""
    if reference == "charge":
        own = battle_scripted(env, hold_when_adjacent=False)
    elif reference in (*CONTROLLERS, *TEACHERS_ONLY):  # random, scripted, pack, strike(2), rollout
        own = make_controller(reference, env)

    def policy(key, state):
        if reference == "stay":
            return jnp.full((env.num_agents,), STAY, jnp.int32)
        if reference == "corner":
            return corner_actions(state.grid.positions)
        if reference == "strike_static":
            return strike_actions(env, state.grid, jnp.full((env.num_agents,), STAY, jnp.int32))
        return own(key, state, None)

    return policy


def planner(env, params, candidates: int, horizon: int) -> JointPolicy:
    """The ``lookahead`` yardstick: ``envs.planner.lookahead_policy`` for team 0 over ``pack``, the
    scripted team playing its rule, each rollout scored by the survivors' margin at its end ->
    ``policy(key, state) -> int32[N]`` (the caller keeps team 0's entries). It sees the whole map
    and knows the opponent's rule: a yardstick of what a team can reach against ``scripted``, not
    a decentralised policy."""
    scripted = make_controller("scripted", env)
    team0 = jnp.asarray(env.teams) == 0

    def base(key, state):
        return jnp.where(team0, pack_actions(env, state.grid), scripted(key, state, None))

    margin = survivors_margin_value(env)
    return lookahead_policy(env, params, base, margin, candidates, horizon, planned=team0)


def outcomes(env, params, policy, keys: jax.Array) -> jax.Array:
    """Team 0's outcome (+1 / 0 / -1) with ``policy(key, state)`` against the scripted team, one
    episode per key -> ``int32[E]``: the sign of the survivors' difference at the end (a
    wiped-out team stays wiped out, so the survivors of the step that ended the game are the
    final ones)."""
    scripted = make_controller("scripted", env)
    team0 = jnp.asarray(env.teams) == 0

    def act(key, state):
        own_key, other_key = jax.random.split(key)
        return jnp.where(team0, policy(own_key, state), scripted(other_key, state, None))

    _, final, _ = play_episodes(env, params, act, keys)
    return jnp.sign(survivors_margin(final.grid.alive, team0)).astype(jnp.int32)


def summarise_outcomes(name: str, outcome: np.ndarray) -> dict:
    """Win / draw / loss rates and the terminal reward x100 (with 95% intervals) of ``outcome
    int[E]``, printed on one line -> the summary."""
    values = {"win": outcome > 0, "draw": outcome == 0, "loss": outcome < 0,
              "terminal_reward": 100.0 * outcome}  # fmt: skip
    r = summarise(values)
    print(f"{name:9s} vs scripted: win {r['win']['mean']:.3f} "
          f"[{r['win']['low']:.3f}, {r['win']['high']:.3f}], draw {r['draw']['mean']:.3f}, "
          f"loss {r['loss']['mean']:.3f}, terminal reward x100 "
          f"{r['terminal_reward']['mean']:.1f} [{r['terminal_reward']['low']:.1f}, "
          f"{r['terminal_reward']['high']:.1f}] ({outcome.size} games)")  # fmt: skip
    return {**r, "episodes": int(outcome.size)}


def require_rollout_episodes(args: Args) -> None:
    """Refuse a ``rollout_episodes`` outside 1..``episodes`` before anything is played."""
    if args.rollout_episodes is not None:
        allowed = f"must be in 1..episodes ({args.episodes}) or None"
        require(1 <= args.rollout_episodes <= args.episodes, "rollout_episodes",
                args.rollout_episodes, allowed)  # fmt: skip


def reference_episodes(args: Args, reference: str) -> int:
    """How many of the ``episodes`` games ``reference`` plays: ``rollout_episodes`` for
    ``rollout`` when set, else all of them."""
    if reference == "rollout" and args.rollout_episodes is not None:
        return args.rollout_episodes
    return args.episodes


def main(args: Args) -> dict:
    require_planner_settings(args)
    require_rollout_episodes(args)
    env, params = envs.make("battle", args.preset)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    rows = {}
    for reference in REFERENCES:
        games = keys[: reference_episodes(args, reference)]
        outcome = outcomes(env, params, reference_policy(env, reference), games)
        rows[reference] = summarise_outcomes(reference, np.asarray(outcome))
    if args.lookahead_episodes:
        policy = planner(env, params, args.lookahead_candidates, args.lookahead_horizon)
        outcome = outcomes(env, params, policy, keys[: args.lookahead_episodes])
        rows["lookahead"] = summarise_outcomes("lookahead", np.asarray(outcome))
        rows["lookahead"].update(candidates=args.lookahead_candidates,
                                 horizon=args.lookahead_horizon, base="pack")  # fmt: skip
    return save_references(args, rows)


if __name__ == "__main__":
    main(tyro.cli(Args))
