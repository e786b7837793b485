"""Reference policies for Deception: what fixed home-team controllers score against the scripted
adversary.

    python -m experiments.deception_reference --episodes 2000 --json out.json

The home team (team 0) plays ``stay`` (every agent holds), ``random`` or ``scripted`` (walk to
the nearest target in sight and stand on it, random walk when none is in sight); the adversary
is always ``scripted`` (heads for the landmark with the most home agents within distance 2 and
holds beside it). Prints and saves the home-team terminal reward x100 with its 95% interval -
the yardsticks for a learned Deception policy (README "Results").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from envs.core import STAY
from envs.deception import HOME
from envs.opponents import make_controller
from experiments.common import ReferenceArgs, play_episodes, save_references
from qmarl_jax.evaluate import summarise

REFERENCES = ("stay", "random", "scripted")


@dataclasses.dataclass
class Args(ReferenceArgs):
    """Deception reference settings (``preset`` tiny: the paper's sizes)."""


def home_rewards(env, params, reference: str, keys: jax.Array):
    """Home-team terminal reward x100 of one episode per key and the final states ->
    ``(float32[E], DeceptionState)``. Every home agent is paid the same at the end (0 before),
    so the team's reward is the mean of its agents' summed rewards."""
    adversary = make_controller("scripted", env)
    own = make_controller("random" if reference == "random" else "scripted", env)
    home = jnp.asarray(env.teams) == HOME

    def act(key, state):
        own_key, other_key = jax.random.split(key)
        mine = own(own_key, state, None)
        if reference == "stay":
            mine = jnp.full_like(mine, STAY)
        return jnp.where(home, mine, adversary(other_key, state, None))

    _, final, rewards = play_episodes(env, params, act, keys)
    return 100.0 * jnp.sum(rewards * home, axis=-1) / jnp.sum(home), final


def main(args: Args) -> dict:
    env, params = envs.make("deception", args.preset)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    rows = {}
    for reference in REFERENCES:
        reward, _ = home_rewards(env, params, reference, keys)
        rows[reference] = summarise({"home_reward": np.asarray(reward)})
        r = rows[reference]["home_reward"]
        print(f"{reference:8s} vs scripted adversary: home reward x100 {r['mean']:.1f} "
              f"[{r['low']:.1f}, {r['high']:.1f}]")  # fmt: skip
    return save_references(args, rows)


if __name__ == "__main__":
    main(tyro.cli(Args))
