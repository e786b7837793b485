"""The environment interface shared by the scenarios (gymnax-style pure functions).

``reset(key, params) -> (obs, state)`` and
``step(key, state, actions, params) -> (obs, state, reward, terminated, truncated, info)``.
Shape-setting values live in the env's frozen config; traced values live in ``params``; the key is
always an argument. ``step`` auto-resets finished episodes and keeps the final observation in
``info["final_observation"]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import core


@struct.dataclass
class Observation:
    """What every agent perceives, batched over agents (N = num_agents, K = neighbour slots).

    Attributes:
      features: float32[N, F] the flattened ``(2r+1, 2r+1, 5)`` entity window, then the
        scenario's scalars (Jungle: normalised hp). Zero for dead agents.
      neighbours: int32[N, K] ids of alive neighbours (EMPTY where masked), ring-slot order.
      neighbour_mask: bool[N, K] which slots hold a neighbour.
      alive: bool[N].
      team: int32[N].
    """

    features: jax.Array
    neighbours: jax.Array
    neighbour_mask: jax.Array
    alive: jax.Array
    team: jax.Array


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """Settings common to every scenario. Validated on construction.

    Attributes:
      height: grid rows (>= 2).
      width: grid columns (>= 2).
      num_agents: agent capacity N (>= 1), all alive at reset.
      max_steps: episode length limit (>= 1).
      view_radius: observation window radius r (>= 1): a (2r+1)^2 window.
      graph_radius: Chebyshev radius of a neighbour-graph edge (>= 1).
      sight_radius: how far the scripted controllers look (>= 1).
    """

    height: int = 5
    width: int = 5
    num_agents: int = 4
    max_steps: int = 30
    view_radius: int = 1
    graph_radius: int = 1
    sight_radius: int = 4

    def __post_init__(self):
        for name in ("height", "width"):
            require(getattr(self, name) >= 2, name, getattr(self, name), "must be >= 2")
        for name in ("num_agents", "max_steps", "view_radius", "graph_radius", "sight_radius"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        require(
            self.num_entities <= self.height * self.width,
            "num_agents",
            self.num_agents,
            f"with the scenario's other entities needs {self.num_entities} cells but the "
            f"{self.height}x{self.width} grid has {self.height * self.width}",
        )

    @property
    def num_entities(self) -> int:
        """Cells needed at reset (agents plus static items)."""
        return self.num_agents

    @property
    def pad(self) -> int:
        """Off-grid border wide enough for every window gathered."""
        return max(self.view_radius, self.graph_radius, self.sight_radius, 1)

    @property
    def density(self) -> float:
        """Agents per cell."""
        return self.num_agents / (self.height * self.width)


def time_left(state, num_agents: int) -> jax.Array:
    """The fraction of the episode left, ``(horizon - step) / horizon``, for every agent of a state
    with ``step`` and ``horizon`` fields -> ``float32[num_agents, 1]`` (an extra feature)."""
    left = (state.horizon - state.step) / state.horizon
    return jnp.full((num_agents, 1), left, jnp.float32)


def require(condition: bool, field: str, value: Any, message: str) -> None:
    """Unless ``condition``, raise ``ValueError`` naming the config ``field``, its ``value`` and
    ``message`` (what is allowed)."""
    if not condition:
        raise ValueError(f"invalid config field '{field}'={value!r}: {message}")


class GridEnv:
    """Base class of the scenarios: static config, auto-reset, observation assembly.

    Subclasses implement ``reset_state(key, params) -> state`` and
    ``transition(key, state, actions, params) -> (state, reward, terminated, truncated, info)``
    and may extend ``extra_features``. States must have a ``grid: core.Grid`` field.
    """

    name: ClassVar[str]
    num_teams: ClassVar[int]

    def __init__(self, config: GridConfig):
        self.config = config
        self.spec = core.GridSpec(config.height, config.width, config.pad)

    # ---- static description -------------------------------------------------------------
    @property
    def num_agents(self) -> int:
        return self.config.num_agents

    @property
    def num_actions(self) -> int:
        return core.NUM_ACTIONS

    @property
    def num_extra_features(self) -> int:
        """Scalars appended after the window channels."""
        return 0

    @property
    def obs_dim(self) -> int:
        side = 2 * self.config.view_radius + 1
        return side * side * core.NUM_CHANNELS + self.num_extra_features

    @property
    def neighbour_displacement(self) -> np.ndarray:
        """int32[K, 2] (row, col) offset of each neighbour slot."""
        return core.ring_displacements(self.config.graph_radius)

    @property
    def max_degree(self) -> int:
        return self.neighbour_displacement.shape[0]

    @property
    def teams(self) -> np.ndarray:
        """int32[N] team of each agent (static)."""
        raise NotImplementedError

    @property
    def reveal_target(self) -> np.ndarray:
        """bool[num_teams] which teams see the target channel."""
        return np.zeros(self.num_teams, bool)

    def default_params(self):
        raise NotImplementedError

    # ---- the pure API -------------------------------------------------------------------
    def reset(self, key: jax.Array, params) -> tuple[Observation, Any]:
        """Start an episode -> ``(Observation, state)``."""
        state = self.reset_state(key, params)
        return self.observe(state), state

    def step(self, key: jax.Array, state, actions: jax.Array, params):
        """Advance one env by one step with ``actions int32[N]``; auto-reset when it ends.

        Returns:
          ``(obs, state, reward float32[N], terminated bool[], truncated bool[], info)``; on the
          last step ``obs``/``state`` are of the next episode and ``info["final_observation"]``
          holds the observation of the finished one. Under ``vmap`` the reset is computed for
          every env on every step (``cond`` becomes ``select``): use ``batch_step`` for batches.
        """
        key_step, key_reset = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = self.step_no_reset(
            key_step, state, actions, params
        )
        obs, state = jax.lax.cond(
            terminated | truncated,
            lambda: self.reset(key_reset, params),
            lambda: (obs, state),
        )
        return obs, state, reward, terminated, truncated, info

    def batch_reset(self, keys: jax.Array, params):
        """``reset`` of E envs from ``keys [E]`` -> batched ``(obs, state)``."""
        return jax.vmap(self.reset, in_axes=(0, None))(keys, params)

    def batch_step(self, keys: jax.Array, states, actions: jax.Array, params):
        """``vmap(step)`` over E envs (``keys [E]``, ``actions int32[E, N]``), same results.

        Resets are computed only on steps where at least one episode ends, instead of every step.
        """
        keys = jax.vmap(jax.random.split)(keys)
        obs, states, reward, terminated, truncated, info = jax.vmap(
            self.step_no_reset, in_axes=(0, 0, 0, None)
        )(keys[:, 0], states, actions, params)
        done = terminated | truncated

        def reset_finished():
            fresh = self.batch_reset(keys[:, 1], params)
            return jax.tree.map(
                lambda new, old: jnp.where(done.reshape((-1,) + (1,) * (old.ndim - 1)), new, old),
                fresh,
                (obs, states),
            )

        obs, states = jax.lax.cond(jnp.any(done), reset_finished, lambda: (obs, states))
        return obs, states, reward, terminated, truncated, info

    def step_no_reset(self, key: jax.Array, state, actions: jax.Array, params):
        """One step without auto-reset; ``info["final_observation"]`` is the returned ``obs``."""
        state, reward, terminated, truncated, info = self.transition(key, state, actions, params)
        obs = self.observe(state)
        return obs, state, reward, terminated, truncated, {**info, "final_observation": obs}

    def observe(self, state) -> Observation:
        """Observation of every agent, with the neighbour table (O(N x window))."""
        grid = state.grid
        windows = core.observation_windows(
            self.spec, grid, self.config.view_radius, jnp.asarray(self.reveal_target)
        )
        features = windows.reshape(self.num_agents, -1)
        extra = self.extra_features(state)
        if extra is not None:
            features = jnp.concatenate([features, extra * grid.alive[:, None]], axis=-1)
        table = core.neighbour_table(self.spec, grid, self.config.graph_radius)
        return Observation(
            features=features,
            neighbours=table.ids,
            neighbour_mask=table.mask,
            alive=grid.alive,
            team=grid.team,
        )

    def extra_features(self, state) -> jax.Array | None:
        """float32[N, num_extra_features] scalars appended to the features, or None."""
        return None

    def reset_state(self, key: jax.Array, params):
        raise NotImplementedError

    def transition(self, key: jax.Array, state, actions: jax.Array, params):
        raise NotImplementedError
