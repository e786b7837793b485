"""Deception: home agents hide which landmark is the target from adversaries (SPEC section 3).

Landmarks are static, non-blocking cells; the first ``num_targets`` of them are targets. Home
agents (team 0) see the target channel; adversaries (team 1) see landmarks but not which are
targets. Rewards are 0 until the last step, then:

* an adversary has *found* a target if it stands within Chebyshev distance 1 of it;
* a target is *covered* if a home agent stands on it;
* home agents: mean over targets of (+1 if covered and not found, else -1);
* adversaries: +1 if within distance 1 of any target, else -1.

An optional potential-based shaping term (``shaping``, default 0; Ng et al. 1999) pays home agents
``shaping * (payoff(s') - payoff(s))`` every step, where ``payoff`` is the home reward the episode
would pay if it ended in that state: covering the target pays at once, being found costs at once;
summed over an episode it telescopes to ``shaping * (final payoff - start payoff)``, so the best
policy of the undiscounted return is unchanged (the learner's discount 0.99 over 25 steps bends
that only slightly). The reported ``home_reward`` stays the terminal payoff.

Observation ``features float32[N, 9*5 (+ 6 * landmark_slots) (+ 1)]``: the 3x3 window (off-grid,
teammates, other team, landmark, target - the last only for home agents); with ``landmark_sight``
> 0 (ours, off by default: the SPEC's observation is the window alone) a *landmark compass*; with
``observe_time`` the fraction of the episode left. Action ``int32[N]`` in [0, 5). Reward
``float32[N]``. The episode is **terminated** after ``max_steps`` (the payoff is decided then;
``truncated`` is always False). ``info``: ``covered bool[T]``, ``found bool[T]`` (meaningful on the
last step), ``invalid_actions int32[]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import core
from envs.base import GridConfig, GridEnv, require, time_left

HOME, ADVERSARY = 0, 1
#: Features per landmark-compass slot: present, row offset, column offset, target, teammates
#: near it, opponents near it.
COMPASS_FEATURES = 6


@dataclasses.dataclass(frozen=True)
class DeceptionConfig(GridConfig):
    """Deception settings (plus every ``GridConfig`` field).

    ``num_agents`` is derived as ``num_home + num_adversaries``; setting it to anything else is
    an error.

    Attributes:
      num_home: home agents, team 0 (>= 1).
      num_adversaries: adversaries, team 1 (>= 1).
      num_landmarks: landmark cells (>= num_targets).
      num_targets: landmarks that are targets (>= 1).
      landmark_sight: radius of the landmark compass (ours; 0 = off, the SPEC's observation).
        Each agent also observes the ``landmark_slots`` nearest landmarks within this Chebyshev
        radius, nearest first: per slot a present flag, the offset (row, col) / radius, a target
        flag (home agents only: adversaries never see which landmarks are targets), the number
        of *other* teammates within distance 1 of that landmark / team size and the number of
        opponents there / their team size. It lets home agents find the target beyond the 3x3
        window and see which landmarks a teammate holds and where the adversary waits (SPEC
        section 8); computed in O(N x window + L x 9).
      landmark_slots: landmarks per agent in the compass (>= 1).
      observe_time: also observe the fraction of the episode left, (max_steps - step) /
        max_steps (the payoff is decided on the last step).
      shaping: weight of the optional potential-based shaping of the home reward (0 = the
        paper's terminal reward only).
    """

    height: int = 6
    width: int = 6
    num_agents: int | None = None
    max_steps: int = 25
    num_home: int = 2
    num_adversaries: int = 1
    num_landmarks: int = 2
    num_targets: int = 1
    landmark_sight: int = 0
    landmark_slots: int = 2
    observe_time: bool = False
    shaping: float = 0.0

    def __post_init__(self):
        for name in ("num_home", "num_adversaries", "num_targets", "landmark_slots"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        require(self.landmark_sight >= 0, "landmark_sight", self.landmark_sight, "must be >= 0")
        require(
            self.num_landmarks >= self.num_targets,
            "num_landmarks",
            self.num_landmarks,
            f"must be >= num_targets={self.num_targets}",
        )
        derived = self.num_home + self.num_adversaries
        require(
            self.num_agents in (None, derived),
            "num_agents",
            self.num_agents,
            f"is derived as num_home + num_adversaries = {derived}; set those instead",
        )
        object.__setattr__(self, "num_agents", derived)
        super().__post_init__()

    @property
    def num_entities(self) -> int:
        return self.num_agents + self.num_landmarks

    @property
    def pad(self) -> int:
        return max(super().pad, self.landmark_sight)


@struct.dataclass
class DeceptionParams:
    """Traced Deception parameters.

    Attributes:
      max_steps: int32[] episode length.
      shaping: float32[] weight of the potential-based shaping of the home reward.
    """

    max_steps: jax.Array
    shaping: jax.Array


@struct.dataclass
class DeceptionState:
    """Attributes:
    grid: the shared grid (team 0 home, team 1 adversaries).
    landmarks: int32[L, 2] landmark cells; the first ``num_targets`` are targets.
    landmark_index: int32[cells] landmark id on each padded cell, -1 elsewhere (static).
    step: int32[] steps taken in this episode.
    horizon: int32[] the episode's length (``params.max_steps``).
    """

    grid: core.Grid
    landmarks: jax.Array
    landmark_index: jax.Array
    step: jax.Array
    horizon: jax.Array


class Deception(GridEnv):
    """The Deception scenario; see the module docstring for the observation/reward layout."""

    name = "deception"
    num_teams = 2
    config: DeceptionConfig

    @property
    def teams(self) -> np.ndarray:
        return (np.arange(self.num_agents) >= self.config.num_home).astype(np.int32)

    @property
    def reveal_target(self) -> np.ndarray:
        return np.array([True, False])

    @property
    def num_extra_features(self) -> int:
        cfg = self.config
        compass = COMPASS_FEATURES * cfg.landmark_slots if cfg.landmark_sight else 0
        return compass + int(cfg.observe_time)

    def default_params(self) -> DeceptionParams:
        return DeceptionParams(
            max_steps=jnp.int32(self.config.max_steps), shaping=jnp.float32(self.config.shaping)
        )

    def reset_state(self, key: jax.Array, params: DeceptionParams) -> DeceptionState:
        cfg = self.config
        cells = core.sample_cells(key, cfg.height, cfg.width, cfg.num_entities)
        return self.state_from(cells[: cfg.num_agents], cells[cfg.num_agents :], params.max_steps)

    def state_from(
        self, positions: jax.Array, landmarks: jax.Array, horizon: jax.Array | int | None = None
    ) -> DeceptionState:
        """A fresh state: agents at ``positions int32[N, 2]``, ``landmarks int32[L, 2]`` (the
        first ``num_targets`` are targets), an episode of ``horizon`` steps (default: the
        config's ``max_steps``)."""
        cfg = self.config
        horizon = cfg.max_steps if horizon is None else horizon
        landmarks = jnp.asarray(landmarks, jnp.int32)
        kinds = jnp.where(jnp.arange(cfg.num_landmarks) < cfg.num_targets, core.TARGET, core.ITEM)
        grid = core.make_grid(
            self.spec,
            jnp.asarray(positions),
            jnp.asarray(self.teams),
            landmarks,
            kinds.astype(jnp.int8),
        )
        landmark_index = (
            jnp.full(self.spec.num_cells, -1, jnp.int32)
            .at[self.spec.flat(landmarks)]
            .set(jnp.arange(cfg.num_landmarks, dtype=jnp.int32))
        )
        return DeceptionState(
            grid, landmarks, landmark_index, jnp.int32(0), jnp.asarray(horizon, jnp.int32)
        )

    def team_counts(self, grid: core.Grid, cells: jax.Array, radius: int) -> jax.Array:
        """Agents of each team within Chebyshev ``radius`` of each of ``cells int32[C, 2]`` ->
        ``int32[C, 2]`` (home, adversaries). O(C x (2 radius + 1)^2)."""
        around = self.spec.gather(grid.occupancy, cells, core.window_displacements(radius))
        team = jnp.where(around >= 0, grid.team[jnp.maximum(around, 0)], -1)
        return jnp.sum(team[..., None] == jnp.array([HOME, ADVERSARY]), axis=1, dtype=jnp.int32)

    def target_status(self, grid: core.Grid, landmarks: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(covered bool[T], found bool[T])`` of the targets in the current grid."""
        targets = landmarks[: self.config.num_targets]
        on_target = grid.occupancy[self.spec.flat(targets)]
        covered = (on_target >= 0) & (grid.team[jnp.maximum(on_target, 0)] == HOME)
        return covered, self.team_counts(grid, targets, 1)[:, ADVERSARY] > 0

    @staticmethod
    def home_payoff(covered: jax.Array, found: jax.Array) -> jax.Array:
        """The home reward if the episode ended now: mean over targets of +1 (covered and not
        found) or -1 -> ``float32[]``."""
        return jnp.mean(jnp.where(covered & ~found, 1.0, -1.0))

    def transition(self, key: jax.Array, state: DeceptionState, actions: jax.Array, params):
        payoff_before = self.home_payoff(*self.target_status(state.grid, state.landmarks))
        moved = core.resolve_moves(key, self.spec, state.grid, actions)
        grid = moved.grid
        step = state.step + 1
        terminated = step >= params.max_steps
        covered, found = self.target_status(grid, state.landmarks)
        home_reward = self.home_payoff(covered, found)
        near_target = jnp.any(
            self.spec.gather(grid.terrain, grid.positions, core.window_displacements(1))
            == core.TARGET,
            axis=-1,
        )
        adversary_reward = jnp.where(near_target, 1.0, -1.0)
        reward = jnp.where(grid.team == HOME, home_reward, adversary_reward)
        shaped = params.shaping * (home_reward - payoff_before) * (grid.team == HOME)
        reward = (jnp.where(terminated, reward, 0.0) + shaped) * grid.alive
        info = {"covered": covered, "found": found, "invalid_actions": moved.invalid_actions}
        return state.replace(grid=grid, step=step), reward, terminated, jnp.bool_(False), info

    def extra_features(self, state: DeceptionState) -> jax.Array | None:
        cfg = self.config
        parts = []
        if cfg.landmark_sight:
            parts.append(self.landmark_compass(state))
        if cfg.observe_time:
            parts.append(time_left(state, self.num_agents))
        return jnp.concatenate(parts, axis=-1) if parts else None

    def landmark_compass(self, state: DeceptionState) -> jax.Array:
        """The ``landmark_slots`` nearest landmarks within ``landmark_sight`` of every agent ->
        ``float32[N, landmark_slots * COMPASS_FEATURES]`` (see ``DeceptionConfig``); empty
        slots are zero. O(N x (2 landmark_sight + 1)^2 x slots + L x 9)."""
        cfg, grid = self.config, state.grid
        window = core.window_displacements(cfg.landmark_sight)
        window = window[core.nearest_first(window)]
        seen = self.spec.gather(state.landmark_index, grid.positions, window)  # [N, W]
        # The window is sorted nearest first, so slot s holds the smallest window index with a
        # landmark after slot s-1's: one min-reduction per slot (a cumsum over the window
        # costs O(W^2) per agent on CPU, where XLA lowers it to a reduce-window; an argmax is a
        # slower two-value reduction).
        size = window.shape[0]
        index = jnp.where(seen >= 0, jnp.arange(size), size)  # [N, W]
        nearest = [jnp.min(index, axis=-1)]
        for _ in range(cfg.landmark_slots - 1):
            nearest.append(jnp.min(jnp.where(index > nearest[-1][:, None], index, size), axis=-1))
        nearest = jnp.stack(nearest, axis=-1)  # [N, S]
        present = nearest < size
        nearest = jnp.minimum(nearest, size - 1)
        offset = jnp.where(present[..., None], jnp.asarray(window)[nearest], 0)  # [N, S, 2]
        landmark = jnp.maximum(jnp.take_along_axis(seen, nearest, axis=-1), 0)  # [N, S]
        crowd = self.team_counts(grid, state.landmarks, 1)  # [L, 2]
        team = grid.team[:, None]
        itself = jnp.max(jnp.abs(offset), axis=-1) <= 1
        teammates = jnp.take_along_axis(crowd[landmark], team[..., None], axis=-1)[..., 0] - itself
        opponents = jnp.take_along_axis(crowd[landmark], 1 - team[..., None], axis=-1)[..., 0]
        sizes = jnp.array([cfg.num_home, cfg.num_adversaries], jnp.float32)
        target = (landmark < cfg.num_targets) & jnp.asarray(self.reveal_target)[team]
        features = jnp.stack(
            [
                present,
                offset[..., 0] / cfg.landmark_sight,
                offset[..., 1] / cfg.landmark_sight,
                present & target,
                present * teammates / sizes[team],
                present * opponents / sizes[1 - team],
            ],
            axis=-1,
        )
        return features.reshape(self.num_agents, -1).astype(jnp.float32)
