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
* ``informed`` - the same rule with more than a learner has (``envs.opponents``, a controller):
  it knows where every food is (it walks the shortest Manhattan way to the nearest food side)
  and sees other agents in a 5x5 window when avoiding harm.
* ``claim`` - the decentralised rule of ``envs.opponents`` (a controller and kickstart teacher):
  each agent matches the agents and food sides in its 9x9 sight to each other, walks its own
  side's shortest way and steers clear of cells beside where the others plan to step.
* ``lookahead`` - a centralised rollout planner over ``informed`` (``envs.planner``):
  each step it scores ``informed``'s joint action and variants of it by the team's reward over a
  few steps played on the env's own dynamics (collisions and harm included). A ceiling of what a
  team that sees everything can reach; at its default settings also the ``lookahead``
  controller, a privileged kickstarting teacher (``envs.opponents.jungle_lookahead``).

Each scores moves and takes the best, ties broken at random. Prints and saves the Jungle score
x100, the oracle bound and ``score_vs_oracle`` with 95% intervals (docs/NOTEBOOK.md); above
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
from envs.opponents import (
    GREEDY_NOISE,
    LOOKAHEAD_CANDIDATES,
    LOOKAHEAD_HORIZON,
    informed_lookahead,
    make_controller,
    move_scores,
)
from experiments.common import (
    ReferenceArgs,
    play_episodes,
    require_planner_settings,
    save_references,
)
from qmarl_jax.evaluate import jungle_oracles, summarise

REFERENCES = ("stay", "random", "local")
#: Jungle controllers of ``envs.opponents`` scored beside them.
CONTROLLER_REFERENCES = ("informed", "claim")


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
    lookahead_candidates: int = LOOKAHEAD_CANDIDATES
    """Joint actions the planner scores per step."""
    lookahead_horizon: int = LOOKAHEAD_HORIZON
    """Steps each candidate is played out (the first with the candidate, then ``informed``)."""


def reference_actions(reference: str, env, key: jax.Array, state) -> jax.Array:
    """Team actions of ``reference`` (``REFERENCES``) -> ``int32[N]`` (ties broken with
    ``key``)."""
    num_agents = state.grid.positions.shape[0]
    if reference == "stay":
        return jnp.full(num_agents, core.STAY, jnp.int32)
    noise = jax.random.uniform(key, (num_agents, core.NUM_ACTIONS))
    if reference == "random":
        return jnp.argmax(noise, axis=-1).astype(jnp.int32)
    scores = move_scores(env, state, radius=1) + GREEDY_NOISE * noise
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


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
        act = informed_lookahead(env, params, args.lookahead_candidates, args.lookahead_horizon)
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
