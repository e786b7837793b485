"""Reference policies for Deception: what fixed home-team controllers score against the scripted
adversary.

    python -m experiments.deception_reference --episodes 2000 --json out.json

The home team (team 0) plays ``stay`` (every agent holds), ``random`` or ``scripted`` (walk to
the nearest target in sight and stand on it, random walk when none is in sight), or one of two
*full-information* plans that know every landmark and which are targets - yardsticks of what
coordination buys (the landmark compass's), not bounds:

* ``spread``: home agent k walks to landmark k mod L (targets first) and stands on it;
* ``decoy_first``: every home agent walks to the first decoy; home agent k < num_targets leaves
  for target k once the steps left are at most its distance plus ``DECOY_LEAD``.

The adversary is always ``scripted`` (heads for the landmark with the most home agents within
distance 2 and holds beside it). Prints and saves the home-team terminal reward x100 with its 95%
interval - the yardsticks for a learned Deception policy (docs/NOTEBOOK.md).
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
from envs.opponents import make_controller, step_toward
from experiments.common import ReferenceArgs, play_episodes, save_references
from qmarl_jax.evaluate import summarise

REFERENCES = ("stay", "random", "scripted", "spread", "decoy_first")
#: Extra steps ``decoy_first`` allows for its walk from the decoy to the target (2,000 tiny games:
#: a lead of 0 scores -76.5, 1: -33.2, 2: 0.7, 4: 15.5, 5 and more: 15.9 - a blocked step costs
#: time - and a plan that leaves at once, i.e. ``spread``, -14.0).
DECOY_LEAD = 5


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
        if reference in ("spread", "decoy_first"):
            mine = full_information_moves(env, state, reference)
        else:
            mine = own(own_key, state, None)
        if reference == "stay":
            mine = jnp.full_like(mine, STAY)
        return jnp.where(home, mine, adversary(other_key, state, None))

    _, final, rewards = play_episodes(env, params, act, keys)
    return 100.0 * jnp.sum(rewards * home, axis=-1) / jnp.sum(home), final


def full_information_moves(env, state, plan: str) -> jax.Array:
    """Moves of the ``spread`` or ``decoy_first`` plan for every agent (only home agents' are
    used) -> ``int32[N]``: a step toward the agent's goal landmark, ``stay`` on it."""
    cfg, grid = env.config, state.grid
    rank = jnp.arange(env.num_agents)  # home agents come first
    if plan == "spread":
        goal = state.landmarks[rank % cfg.num_landmarks]
    else:
        target = state.landmarks[rank % cfg.num_targets]
        distance = jnp.max(jnp.abs(target - grid.positions), axis=-1)
        leave = (rank < cfg.num_targets) & (state.step >= state.horizon - distance - DECOY_LEAD)
        decoy = state.landmarks[cfg.num_targets % cfg.num_landmarks]
        goal = jnp.where(leave[:, None], target, decoy)
    offset = goal - grid.positions
    arrived = jnp.all(offset == 0, axis=-1)
    return jnp.where(arrived, STAY, step_toward(env.spec, grid, offset))


def main(args: Args) -> dict:
    env, params = envs.make("deception", args.preset)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    rows = {}
    for reference in REFERENCES:
        reward, _ = home_rewards(env, params, reference, keys)
        rows[reference] = summarise({"home_reward": np.asarray(reward)})
        r = rows[reference]["home_reward"]
        print(f"{reference:11s} vs scripted adversary: home reward x100 {r['mean']:.1f} "
              f"[{r['low']:.1f}, {r['high']:.1f}]")  # fmt: skip
    return save_references(args, rows)


if __name__ == "__main__":
    main(tyro.cli(Args))
