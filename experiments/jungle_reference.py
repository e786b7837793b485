"""Reference policies for Jungle: what hand-written controllers score against the oracle bound.

    python -m experiments.jungle_reference --episodes 1000 --json out.json
    python -m experiments.jungle_reference --num-agents 8 --lookahead-episodes 500   # Table 1's 2x

The learned Jungle policy is judged by ``score_vs_oracle``, the score over the SPEC's oracle bound
(the best assignment of agents to distinct food-adjacent cells, walking shortest paths, with
collisions and harm ignored). These yardsticks say how much of that bound a policy can reach:

* ``stay`` - every agent holds; ``random`` - uniform moves.
* ``local`` - a greedy rule on the agent's own 3x3 view (what the learner sees): hold when
  4-adjacent to food; otherwise take the free move whose cell touches food in view, avoiding
  cells 4-adjacent to an agent in view, else a random free move.
* ``informed`` - the same rule with more than a learner has: it knows where every food is (it
  walks the shortest Manhattan way to the nearest food side) and sees other agents in a 5x5
  window when avoiding harm.
* ``claim`` - the decentralised rule of ``envs.opponents`` (a controller and kickstart teacher):
  each agent matches the agents and food sides in its 9x9 sight to each other, walks its own
  side's shortest way and steers clear of cells beside where the others plan to step.
* ``lookahead`` - a centralised rollout planner over ``informed`` (``experiments.lookahead``):
  each step it scores ``informed``'s joint action and variants of it by the team's reward over a
  few steps played on the env's own dynamics (collisions and harm included). A ceiling of what a
  team that sees everything can reach, not a policy a learner could copy.

Each scores moves and takes the best, ties broken at random. Prints and saves the Jungle score
x100, the oracle bound and ``score_vs_oracle`` with 95% intervals (README "Results"); above
``evaluate.ORACLE_MAX_AGENTS`` agents the score alone.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from envs import core
from envs.opponents import make_controller
from experiments.common import ReferenceArgs, play_episodes, save_references
from experiments.lookahead import lookahead_policy, require_planner_settings
from qmarl_jax.evaluate import jungle_oracles, summarise

REFERENCES = ("stay", "random", "local", "informed")
#: Jungle controllers of ``envs.opponents`` scored beside them.
CONTROLLER_REFERENCES = ("claim",)

#: Move scores: reaching a food side, standing next to another agent (harm), holding.
FOOD, HARM, HOLD = 10.0, 8.0, 0.5
#: Score of a move into a cell that is not free.
BLOCKED_MOVE = -100.0


@dataclasses.dataclass
class Args(ReferenceArgs):
    """Jungle reference settings (``preset`` tiny: the paper's sizes)."""

    episodes: int = 1000
    num_agents: int | None = None
    """Play at about this many agents (the nearest preset's density, as ``experiments.evaluate
    --num-agents``: 8 is Table 1's twice the tiny size, a 7x7 world with 2 food); None: the
    preset's."""
    lookahead_episodes: int = 1000
    """Games of the ``lookahead`` planner (the first of the ``episodes`` start states; 0 = skip
    it)."""
    lookahead_candidates: int = 64
    """Joint actions the planner scores per step."""
    lookahead_horizon: int = 12
    """Steps each candidate is played out (the first with the candidate, then ``informed``)."""


def move_scores(env, state, radius: int) -> jax.Array:
    """Greedy scores of the 5 actions from a ``(2 radius + 1)^2`` window -> ``float32[N, 5]``.

    A move scores ``FOOD`` when its cell is 4-adjacent to food in the window, ``-HARM`` when it is
    4-adjacent to another agent in the window, ``-HOLD`` for staying and ``BLOCKED_MOVE`` when its
    cell is not free. ``radius`` 1 is the learner's view; 2 sees every cell next to a move's cell.
    """
    grid = state.grid
    window = core.window_displacements(radius)
    slot = {tuple(d): k for k, d in enumerate(window.tolist())}
    occupancy = env.spec.gather(grid.occupancy, grid.positions, window)
    food = env.spec.gather(grid.terrain, grid.positions, window) >= core.ITEM
    others = (occupancy >= 0).at[:, slot[(0, 0)]].set(False)
    scores = []
    for move in map(tuple, core.MOVES.tolist()):
        held = move == (0, 0)
        free = (
            jnp.ones(grid.positions.shape[0], bool)
            if held
            else occupancy[:, slot[move]] == core.EMPTY
        )
        beside = [
            slot[c]
            for c in ((move[0] + dr, move[1] + dc) for dr, dc in core.ADJACENT4.tolist())
            if c in slot
        ]
        touches_food = jnp.any(food[:, beside], axis=-1)
        harmed = jnp.any(others[:, [k for k in beside if k != slot[(0, 0)]]], axis=-1)
        score = FOOD * touches_food - HARM * harmed - (HOLD if held else 0.0)
        scores.append(jnp.where(free, score, BLOCKED_MOVE))
    return jnp.stack(scores, axis=-1)


def food_distance(positions: jax.Array, food: jax.Array) -> jax.Array:
    """Manhattan steps from each action's cell to the nearest cell beside food -> ``int32[N, 5]``
    (0 = touching food; O(N x F), for the small presets)."""
    cells = positions[:, None, :] + jnp.asarray(core.MOVES)[None]
    return jnp.min(jnp.abs(cells[:, :, None, :] - food[None, None]).sum(-1), axis=-1) - 1


def reference_actions(reference: str, env, key: jax.Array, state) -> jax.Array:
    """Team actions of ``reference`` -> ``int32[N]`` (ties broken with ``key``)."""
    num_agents = state.grid.positions.shape[0]
    if reference == "stay":
        return jnp.full(num_agents, core.STAY, jnp.int32)
    noise = jax.random.uniform(key, (num_agents, core.NUM_ACTIONS))
    if reference == "random":
        return jnp.argmax(noise, axis=-1).astype(jnp.int32)
    if reference == "local":
        scores = move_scores(env, state, radius=1)
    else:
        scores = move_scores(env, state, radius=2) - 2.0 * food_distance(
            state.grid.positions, state.food
        )
    return jnp.argmax(scores + 0.1 * noise, axis=-1).astype(jnp.int32)


def planner(env, params, candidates: int, horizon: int):
    """The ``lookahead`` yardstick: ``lookahead.lookahead_policy`` over ``informed``, each rollout
    scored by the team's summed reward -> ``policy(key, state) -> int32[N]``."""
    base = lambda key, state: reference_actions("informed", env, key, state)
    team_reward = lambda final, rewards: jnp.sum(rewards)
    return lookahead_policy(env, params, base, team_reward, candidates, horizon)


def play(env, params, act, keys: jax.Array):
    """Score x100 of one episode per key with ``act(key, state) -> int32[N]`` and its start
    state -> ``(float32[E], JungleState)``."""
    cfg = env.config
    start, _, rewards = play_episodes(env, params, act, keys)
    return 100.0 * rewards.sum(axis=-1) / (cfg.num_agents * cfg.max_steps), start


def reference_env(args: Args):
    """``(env, params)`` of ``args``: the preset, or about ``args.num_agents`` agents."""
    if args.num_agents is None:
        return envs.make("jungle", args.preset)
    env = envs.make_env(envs.sized_config("jungle", args.num_agents))
    return env, env.default_params()


def score_references(args: Args) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-episode score x100 and oracle bound of every reference and the planner ->
    ``{reference: (float[E], float[E])}`` (the same ``args.episodes`` start states for all; the
    planner's the first ``args.lookahead_episodes`` of them)."""
    require_planner_settings(args)
    env, params = reference_env(args)
    cfg = env.config
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    policies = {reference: functools.partial(reference_actions, reference, env)
                for reference in REFERENCES}  # fmt: skip
    for kind in CONTROLLER_REFERENCES:
        policies[kind] = functools.partial(make_controller(kind, env), params=params)
    scores, bounds = {}, None
    for reference, act in policies.items():
        score, start = jax.device_get(play(env, params, act, keys))
        if bounds is None:  # every reference starts from the same states
            bounds = jungle_oracles(start, cfg)
            if bounds is None:  # too many agents for the bound
                bounds = np.full(args.episodes, np.nan)
        scores[reference] = (np.asarray(score), bounds)
    if args.lookahead_episodes:
        act = planner(env, params, args.lookahead_candidates, args.lookahead_horizon)
        score, _ = jax.device_get(play(env, params, act, keys[: args.lookahead_episodes]))
        scores["lookahead"] = (np.asarray(score), bounds[: args.lookahead_episodes])
    return scores


def main(args: Args, scores: dict | None = None) -> dict:
    """Summaries of ``scores`` (default: ``score_references(args)``), printed and saved."""
    rows = {}
    for reference, (score, bound) in (scores or score_references(args)).items():
        r = rows[reference] = summarise({"score": score})
        line = (f"{reference:8s} score x100 {r['score']['mean']:5.1f} [{r['score']['low']:.1f}, "
                f"{r['score']['high']:.1f}]")  # fmt: skip
        if not np.isnan(bound).any():
            ratio = float(score.mean() / bound.mean())
            r.update(summarise({"oracle": bound}), score_vs_oracle=ratio)
            line += f", oracle {r['oracle']['mean']:.1f}, score_vs_oracle {ratio:.3f}"
        print(line)
    return save_references(args, rows)


if __name__ == "__main__":
    main(tyro.cli(Args))
