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


def team_policy(env, controllers):
    """One policy for all agents from a controller kind per team."""
    policies = [make_controller(kind, env) for kind in controllers[: env.num_teams]]

    def policy(key, state):
        keys = jax.random.split(key, len(policies))
        actions = jnp.zeros(env.num_agents, jnp.int32)
        for team, team_policy in enumerate(policies):
            chosen = team_policy(keys[team], state, None)
            actions = jnp.where(state.grid.team == team, chosen, actions)
        return actions

    return policy


def main(args: Args):
    env, params = envs.make(args.scenario, args.preset)
    policy = team_policy(env, args.controllers)
    states, length = render.record_episode(env, params, policy, jax.random.key(args.seed))
    frames = [render.frame(env, s) for s in render.unstack(states, int(length))]
    path = render.save_gif(frames, args.out, fps=args.fps)
    print(f"wrote {path} ({len(frames)} frames)")
    return path


if __name__ == "__main__":
    main(tyro.cli(Args))
