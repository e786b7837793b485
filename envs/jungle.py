"""Jungle: a cooperative social dilemma (SPEC section 3).

Agents gain +1 per step while 4-adjacent to a food cell, but every step an agent with another agent
4-adjacent loses 1 hp; at 0 hp it dies with reward -1 on that step. Food is static within an
episode, random per episode, and blocks movement.

Observation ``features float32[N, 9*5 + 1]``: the 3x3 entity window (off-grid, teammates, -,
food, -) then hp / start_hp. Action ``int32[N]`` in [0, 5). Reward ``float32[N]``: 1 food contact,
0 otherwise, -1 on the death step, 0 once dead. Ends truncated after ``max_steps``; terminated
early when every agent is dead. ``info``: ``food_contact bool[N]``, ``deaths bool[N]``,
``invalid_actions int32[]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import core
from envs.base import GridConfig, GridEnv, require


@dataclasses.dataclass(frozen=True)
class JungleConfig(GridConfig):
    """Jungle settings (plus every ``GridConfig`` field).

    Attributes:
      num_food: food cells per episode (>= 1).
      start_hp: hit points at reset (>= 1); one is lost per step next to another agent.
    """

    num_food: int = 1
    start_hp: int = 3

    def __post_init__(self):
        require(self.num_food >= 1, "num_food", self.num_food, "must be >= 1")
        require(self.start_hp >= 1, "start_hp", self.start_hp, "must be >= 1")
        super().__post_init__()

    @property
    def num_entities(self) -> int:
        return self.num_agents + self.num_food


@struct.dataclass
class JungleParams:
    """Traced Jungle parameters.

    Attributes:
      max_steps: int32[] episode length.
    """

    max_steps: jax.Array


@struct.dataclass
class JungleState:
    """Attributes:
    grid: the shared grid (single team 0).
    hp: int32[N] remaining hit points.
    food: int32[F, 2] food cells.
    step: int32[] steps taken in this episode.
    """

    grid: core.Grid
    hp: jax.Array
    food: jax.Array
    step: jax.Array


class Jungle(GridEnv):
    """The Jungle scenario; see the module docstring for the observation/reward layout."""

    name = "jungle"
    num_teams = 1
    config: JungleConfig

    @property
    def teams(self) -> np.ndarray:
        return np.zeros(self.num_agents, np.int32)

    @property
    def num_extra_features(self) -> int:
        return 1

    def default_params(self) -> JungleParams:
        return JungleParams(max_steps=jnp.int32(self.config.max_steps))

    def reset_state(self, key: jax.Array, params: JungleParams) -> JungleState:
        cfg = self.config
        cells = core.sample_cells(key, cfg.height, cfg.width, cfg.num_entities)
        return self.state_from(cells[: cfg.num_agents], cells[cfg.num_agents :])

    def state_from(self, positions: jax.Array, food: jax.Array) -> JungleState:
        """A fresh state with agents at ``positions int32[N, 2]`` and ``food int32[F, 2]``."""
        grid = core.make_grid(
            self.spec,
            jnp.asarray(positions),
            jnp.asarray(self.teams),
            jnp.asarray(food),
            items_block=True,
        )
        return JungleState(
            grid=grid,
            hp=jnp.full(self.num_agents, self.config.start_hp, jnp.int32),
            food=jnp.asarray(food, jnp.int32),
            step=jnp.int32(0),
        )

    def transition(self, key: jax.Array, state: JungleState, actions: jax.Array, params):
        moved = core.resolve_moves(key, self.spec, state.grid, actions)
        grid = moved.grid
        was_alive = grid.alive
        food_contact = was_alive & jnp.any(
            self.spec.gather(grid.terrain, grid.positions, core.ADJACENT4) >= core.ITEM, axis=-1
        )
        neighbours4 = core.window_agents(self.spec, grid, core.ADJACENT4)
        harmed = was_alive & jnp.any(neighbours4 >= 0, axis=-1)
        hp = state.hp - harmed.astype(jnp.int32)
        deaths = harmed & (hp <= 0)
        reward = jnp.where(deaths, -1.0, food_contact.astype(jnp.float32)) * was_alive
        grid = core.remove_agents(self.spec, grid, deaths)
        step = state.step + 1
        terminated = ~jnp.any(grid.alive)
        truncated = (step >= params.max_steps) & ~terminated
        info = {
            "food_contact": food_contact,
            "deaths": deaths,
            "invalid_actions": moved.invalid_actions,
        }
        new_state = state.replace(grid=grid, hp=hp, step=step)
        return new_state, reward, terminated, truncated, info

    def extra_features(self, state: JungleState) -> jax.Array:
        return (state.hp / self.config.start_hp)[:, None].astype(jnp.float32)
