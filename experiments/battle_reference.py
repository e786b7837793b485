"""Reference policies for Battle: what fixed team-0 controllers score against the scripted team.

    python -m experiments.battle_reference --episodes 2000 --json out.json

Team 0 plays ``stay`` (every agent holds), ``random``, ``corner`` (every agent moves up until the
top edge, then left until the corner, then holds: a fixed convention a 3x3 view can follow, since
the off-grid channel shows the edges), ``pack`` (up while the cell above is free, else left while
the cell to the left is free, else hold: the 3x3 view shows both, and the team packs into a
block in the top-left corner instead of a line along the edge), ``scripted`` (the mirror match) or
``charge`` (the scripted rule without holding once beside an enemy); team 1 is always
``scripted`` (walks at the nearest enemy within ``sight_radius`` 4, else at the enemy centroid: it
sees the whole map, a learner sees its 3x3 window). ``lookahead`` is a centralised rollout planner
over ``pack`` on the env's own dynamics (``lookahead_policy``): not a policy a learner could
copy, but proof of how far above the scripted team a team can get. Prints and saves win / draw /
loss rates with 95% Wilson intervals and the mean terminal reward x100 of team 0 — the
yardsticks for a learned Battle policy (docs/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from envs import core
from envs.base import require
from envs.core import LEFT, STAY, UP
from envs.opponents import battle_scripted, make_controller
from experiments.common import ReferenceArgs, play_episodes, save_references
from qmarl_jax.evaluate import summarise

REFERENCES = ("stay", "random", "corner", "pack", "scripted", "charge")


@dataclasses.dataclass
class Args(ReferenceArgs):
    """Battle reference settings (``preset`` tiny: the paper's sizes)."""

    lookahead_episodes: int = 500
    """Games of the ``lookahead`` planner (the first of the ``episodes`` keys; 0 = skip it)."""
    lookahead_candidates: int = 16
    """Joint actions the planner scores per step."""
    lookahead_horizon: int = 6
    """Steps each candidate is played out (the first with the candidate, then ``pack``)."""


def corner_actions(positions: jax.Array) -> jax.Array:
    """The ``corner`` convention: up while not on the top row, then left, then stay ->
    ``int32[N]`` for ``positions int32[N, 2]``."""
    row, col = positions[:, 0], positions[:, 1]
    return jnp.where(row > 0, UP, jnp.where(col > 0, LEFT, STAY)).astype(jnp.int32)


def pack_actions(env, grid: core.Grid) -> jax.Array:
    """The ``pack`` convention: up while the cell above is on the grid and free, else left while
    the cell to the left is, else stay -> ``int32[N]``."""
    free = env.spec.gather(grid.occupancy, grid.positions, core.ADJACENT4) == core.EMPTY
    row, col = grid.positions[:, 0], grid.positions[:, 1]
    up = (row > 0) & free[:, UP]
    left = (col > 0) & free[:, LEFT]
    return jnp.where(up, UP, jnp.where(left, LEFT, STAY)).astype(jnp.int32)


def survivors_margin(alive: jax.Array, team0: jax.Array) -> jax.Array:
    """Team 0's survivors minus team 1's from ``alive bool[..., N]`` -> ``int32[...]``."""
    return jnp.sum(alive & team0, axis=-1) - jnp.sum(alive & ~team0, axis=-1)


def reference_policy(env, reference: str) -> Callable[[jax.Array, object], jax.Array]:
    """The ``reference`` controller: ``policy(key, state) -> int32[N]`` (the caller keeps team
    0's entries)."""
    own = make_controller("random" if reference == "random" else "scripted", env)
    if reference == "charge":
        own = battle_scripted(env, hold_when_adjacent=False)

    def policy(key, state):
        if reference == "stay":
            return jnp.full((env.num_agents,), STAY, jnp.int32)
        if reference == "corner":
            return corner_actions(state.grid.positions)
        if reference == "pack":
            return pack_actions(env, state.grid)
        return own(key, state, None)

    return policy


def lookahead_policy(env, params, base, candidates: int, horizon: int, rollouts: int = 4,
                     perturb: float = 0.3) -> Callable[[jax.Array, object], jax.Array]:  # fmt: skip
    """A centralised rollout planner for team 0 (one step of policy improvement over ``base``):
    ``policy(key, state) -> int32[N]``.

    Each step it draws ``candidates`` joint actions - ``base``'s own, then ``base``'s with every
    agent's action replaced by a uniform one with probability ``perturb`` - plays each for one
    step and ``base`` for ``horizon - 1`` more against the scripted team on the env's own
    dynamics (the same ``rollouts`` keys for every candidate), and keeps the one with the best
    mean survivors' margin (``base``'s on ties). It sees the whole map and knows the opponent's
    rule: a yardstick of what a team can reach against ``scripted``, not a decentralised policy.
    """
    scripted = make_controller("scripted", env)
    team0 = jnp.asarray(env.teams) == 0

    def joint(key, state, mine):
        return jnp.where(team0, mine, scripted(key, state, None))

    def margin_after(key, state, first):
        def step(carry, key):
            state, done, actions = carry
            act_key, step_key = jax.random.split(key)
            _, after, _, ended, _, _ = env.step_no_reset(step_key, state, actions, params)
            after = jax.tree.map(lambda old, new: jnp.where(done, old, new), state, after)
            return (after, done | ended, joint(act_key, after, base(act_key, after))), None

        first_key, steps_key = jax.random.split(key)
        start = (state, jnp.bool_(False), joint(first_key, state, first))
        (final, _, _), _ = jax.lax.scan(step, start, jax.random.split(steps_key, horizon))
        return survivors_margin(final.grid.alive, team0)

    def policy(key, state):
        base_key, flip_key, draw_key, rollout_key = jax.random.split(key, 4)
        own = base(base_key, state)
        flip = jax.random.uniform(flip_key, (candidates, env.num_agents)) < perturb
        drawn = jax.random.randint(draw_key, flip.shape, 0, core.NUM_ACTIONS, dtype=jnp.int32)
        options = jnp.where(flip, drawn, own[None]).at[0].set(own)
        keys = jax.random.split(rollout_key, rollouts)

        def score(option):
            margins = jax.vmap(lambda k: margin_after(k, state, option))(keys)
            return jnp.mean(margins.astype(jnp.float32))

        return options[jnp.argmax(jax.vmap(score)(options))]  # the first best: base on ties

    return policy


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


def main(args: Args) -> dict:
    for name in ("lookahead_candidates", "lookahead_horizon"):
        require(getattr(args, name) >= 1, name, getattr(args, name), "must be >= 1")
    require(0 <= args.lookahead_episodes <= args.episodes, "lookahead_episodes",
            args.lookahead_episodes, f"must be in 0..episodes ({args.episodes})")  # fmt: skip
    env, params = envs.make("battle", args.preset)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    rows = {}
    for reference in REFERENCES:
        outcome = outcomes(env, params, reference_policy(env, reference), keys)
        rows[reference] = summarise_outcomes(reference, np.asarray(outcome))
    if args.lookahead_episodes:
        planner = lookahead_policy(env, params, reference_policy(env, "pack"),
                                   args.lookahead_candidates, args.lookahead_horizon)  # fmt: skip
        outcome = outcomes(env, params, planner, keys[: args.lookahead_episodes])
        rows["lookahead"] = summarise_outcomes("lookahead", np.asarray(outcome))
        rows["lookahead"].update(candidates=args.lookahead_candidates,
                                 horizon=args.lookahead_horizon, base="pack")  # fmt: skip
    return save_references(args, rows)


if __name__ == "__main__":
    main(tyro.cli(Args))
