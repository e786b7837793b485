"""Centralised rollout planners: one step of policy improvement over a fixed joint policy.

``lookahead_policy`` scores candidate joint actions; ``agentwise_policy`` lets each agent alone
try each of its actions while the others keep the base policy's. Both see the whole map and
play the env forward on its own dynamics, so no agent could run them alone. The reference
scripts use ``lookahead_policy`` as a ceiling (``battle_reference`` plans over ``pack`` against
the scripted team, ``jungle_reference`` over the ``informed`` rule). As privileged kickstarting
teachers (``envs.opponents``: Jungle's ``lookahead``, Battle's ``rollout``) the student learns
from its own ego-graphs and acts without them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs import core

#: ``policy(key, state) -> int32[N]``: one action per agent.
JointPolicy = Callable[[jax.Array, object], jax.Array]
#: ``value(final_state, rewards float32[N]) -> float32[]``: the score of one rollout, from its
#: last state and each agent's rewards summed over the steps played before the episode ended.
RolloutValue = Callable[[object, jax.Array], jax.Array]


def rollout_value(env, params, base: JointPolicy, value: RolloutValue, horizon: int):
    """``value`` of playing a joint action once and ``base`` for ``horizon - 1`` more steps:
    ``fn(key, state, first int32[N]) -> float32[]``.

    The rollout stops where the episode ends (terminated, or truncated at ``max_steps``): later
    steps change neither the state nor the summed rewards.
    """

    def step(carry, key):
        state, done, total, actions = carry
        act_key, step_key = jax.random.split(key)
        _, after, reward, terminated, truncated, _ = env.step_no_reset(
            step_key, state, actions, params
        )
        after = jax.tree.map(lambda old, new: jnp.where(done, old, new), state, after)
        total = total + jnp.where(done, 0.0, reward)
        return (after, done | terminated | truncated, total, base(act_key, after)), None

    def played(key, state, first):
        zero = jnp.zeros(env.num_agents, jnp.float32)
        start = (state, jnp.bool_(False), zero, first)
        (final, _, total, _), _ = jax.lax.scan(step, start, jax.random.split(key, horizon))
        return value(final, total)

    return played


def lookahead_policy(env, params, base: JointPolicy, value: RolloutValue, candidates: int,
                     horizon: int, planned: jax.Array | None = None, rollouts: int = 4,
                     perturb: float = 0.3) -> JointPolicy:  # fmt: skip
    """A centralised rollout planner over ``base``: ``policy(key, state) -> int32[N]``.

    Each step it draws ``candidates`` joint actions - ``base``'s own, then ``base``'s with the
    action of every ``planned`` agent (``bool[N]``, default all) replaced by a uniform one with
    probability ``perturb`` - plays each for one step and ``base`` for ``horizon - 1`` more on
    the env's own dynamics (the same ``rollouts`` keys for every candidate), and keeps the one
    with the best mean ``value`` (``base``'s on ties). Agents outside ``planned`` always play
    ``base`` (Battle: the scripted opponent).
    """
    planned = jnp.ones(env.num_agents, bool) if planned is None else jnp.asarray(planned)
    played = rollout_value(env, params, base, value, horizon)

    def policy(key, state):
        base_key, flip_key, draw_key, rollout_key = jax.random.split(key, 4)
        own = base(base_key, state)
        flip = (jax.random.uniform(flip_key, (candidates, env.num_agents)) < perturb) & planned
        drawn = jax.random.randint(draw_key, flip.shape, 0, core.NUM_ACTIONS, dtype=jnp.int32)
        options = jnp.where(flip, drawn, own[None]).at[0].set(own)
        keys = jax.random.split(rollout_key, rollouts)

        def score(option):
            return jnp.mean(jax.vmap(lambda k: played(k, state, option))(keys))

        return options[jnp.argmax(jax.vmap(score)(options))]  # the first best: base on ties

    return policy


def agentwise_policy(env, params, base: JointPolicy, value: RolloutValue, horizon: int,
                     planned: np.ndarray, rollouts: int = 1) -> JointPolicy:  # fmt: skip
    """One step of policy improvement over ``base`` for each agent alone: ``policy(key, state,
    moves=None) -> int32[N]``.

    Each agent of ``planned`` (``int[P]`` agent ids, static) tries each of its actions while every
    other agent plays ``base``'s, plays it for one step and ``base`` for ``horizon - 1`` more on
    the env's own dynamics (the same ``rollouts`` keys for every try), and keeps the action with
    the best mean ``value`` (``base``'s on ties). The planned agents decide together, each on the
    assumption that the others play ``base``; the other agents play ``base``. Given ``moves
    int32[N]`` (a joint move already chosen, e.g. a learner's), the first step starts from
    ``moves`` instead of ``base``'s: each agent tries its actions against the others' ``moves``
    and keeps its own move on ties. Costs P x 5 x ``rollouts`` whole-world rollouts per step:
    O(P x N), for small worlds.
    """
    planned = np.asarray(planned, np.int32)
    played = rollout_value(env, params, base, value, horizon)
    tried = jnp.arange(core.NUM_ACTIONS, dtype=jnp.int32)

    def policy(key, state, moves=None):
        base_key, rollout_key = jax.random.split(key)
        own = base(base_key, state) if moves is None else jnp.asarray(moves, jnp.int32)
        keys = jax.random.split(rollout_key, rollouts)

        def score(agent, action):
            option = own.at[agent].set(action)
            return jnp.mean(jax.vmap(lambda k: played(k, state, option))(keys))

        values = jax.vmap(lambda agent: jax.vmap(lambda a: score(agent, a))(tried))(planned)
        kept = jnp.take_along_axis(values, own[planned][:, None], axis=-1)[:, 0]
        better = jnp.max(values, axis=-1) > kept
        chosen = jnp.where(better, jnp.argmax(values, axis=-1), own[planned])
        return own.at[planned].set(chosen.astype(jnp.int32))

    return policy
