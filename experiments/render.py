"""Render an episode of a scenario to a GIF with non-learning controllers.

    python -m experiments.render --scenario battle --preset tiny --out battle.gif

Each team is driven by ``--controllers`` (one per team: random or scripted).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import tyro

import envs
from envs import render
from envs.opponents import make_controller


@dataclasses.dataclass
class Args:
    """Episode rendering settings."""

    scenario: str = "battle"
    """jungle, battle or deception."""
    preset: str = "tiny"
    """tiny, n100, n1k or n10k."""
    out: str = "episode.gif"
    """Output GIF path."""
    controllers: tuple[str, ...] = ("scripted", "random")
    """Controller of each team in team order (extra entries are ignored)."""
    seed: int = 0
    fps: int = 6


def record_episode(env, params, controllers, key):
    """Run one episode (no auto-reset) -> ``(states stacked over max_steps + 1, length)``."""
    policies = [make_controller(kind, env) for kind in controllers[: env.num_teams]]

    @jax.jit
    def run(key):
        reset_key, key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def body(carry, key):
            state, done = carry
            keys = jax.random.split(key, len(policies) + 1)
            actions = jnp.zeros(env.num_agents, jnp.int32)
            for team, policy in enumerate(policies):
                actions = jnp.where(
                    state.grid.team == team, policy(keys[team], state, params), actions
                )
            _, next_state, _, terminated, truncated, _ = env.step_no_reset(
                keys[-1], state, actions, params
            )
            next_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state, next_state)
            return (next_state, done | terminated | truncated), (next_state, done)

        _, (states, done_before) = jax.lax.scan(
            body, (state, jnp.bool_(False)), jax.random.split(key, env.config.max_steps)
        )
        states = jax.tree.map(
            lambda first, rest: jnp.concatenate([first[None], rest]), state, states
        )
        return states, 1 + jnp.sum(~done_before)

    return run(key)


def main(args: Args):
    env, params = envs.make(args.scenario, args.preset)
    states, length = record_episode(env, params, args.controllers, jax.random.key(args.seed))
    frames = [render.frame(env, s) for s in render.unstack(states, int(length))]
    path = render.save_gif(frames, args.out, fps=args.fps)
    print(f"wrote {path} ({len(frames)} frames)")
    return path


if __name__ == "__main__":
    main(tyro.cli(Args))
