"""Battle: two equal teams fight (SPEC section 3).

After moving, an alive agent with at least ``kill_threshold`` (3) alive enemies within Chebyshev
distance 1 dies; deaths are simultaneous. Rewards are 0 per step; when the episode ends every agent
alive at the start of the last step receives +1 if its team has more survivors, -1 if fewer, 0 on a
tie. An optional dense shaping term (``shaping``, default 0) adds
``shaping * (enemy deaths - own deaths) / team_size`` per step to every agent alive at the start of
the step (a dying agent gets it on its last transition). An optional per-agent kill credit
(``kill_credit``, default 0) pays ``kill_credit`` to an agent for every enemy that dies within
Chebyshev distance 1 of it after the move (it took part in the kill) and ``-kill_credit`` on its
own death: the team-wide shaping does not say which agents made a kill.

Agents ``0 .. N/2-1`` are team 0, the rest team 1. Observation ``features float32[N, 9*5]``: the
3x3 window (off-grid, teammates, enemies, -, -), then with ``observe_time`` the fraction of the
episode left (``float32[N, 9*5 + 1]``). Action ``int32[N]`` in [0, 5). Reward
``float32[N]``. The episode is **terminated** when a team is wiped out or after ``max_steps``: the
game is over and its payoff decided, so there is nothing to bootstrap (``truncated`` is always
False). ``info``: ``deaths bool[N]``, ``survivors int32[2]``, ``outcome int32[2]`` (+1 win,
0 draw, -1 loss on the last step, 0 before), ``invalid_actions int32[]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import core
from envs.base import GridConfig, GridEnv, require, time_left


@dataclasses.dataclass(frozen=True)
class BattleConfig(GridConfig):
    """Battle settings (plus every ``GridConfig`` field; ``num_agents`` must be even).

    Attributes:
      kill_threshold: alive enemies within distance 1 that kill an agent (1..8).
      shaping: weight of the optional dense shaping reward (0 = the paper's sparse reward).
      kill_credit: weight of the optional per-agent kill credit (0 = off).
      observe_time: also observe the fraction of the episode left, (max_steps - step) /
        max_steps: the payoff is decided by the survivors on the last step.
    """

    height: int = 10
    width: int = 10
    num_agents: int = 14
    max_steps: int = 30
    kill_threshold: int = 3
    shaping: float = 0.0
    kill_credit: float = 0.0
    observe_time: bool = False

    def __post_init__(self):
        require(
            self.num_agents % 2 == 0,
            "num_agents",
            self.num_agents,
            "must be even (two teams of equal size)",
        )
        require(
            1 <= self.kill_threshold <= 8, "kill_threshold", self.kill_threshold, "must be in 1..8"
        )
        require(self.kill_credit >= 0, "kill_credit", self.kill_credit, "must be >= 0")
        super().__post_init__()

    @property
    def team_size(self) -> int:
        return self.num_agents // 2


@struct.dataclass
class BattleParams:
    """Traced Battle parameters.

    Attributes:
      max_steps: int32[] episode length.
      shaping: float32[] dense shaping weight.
      kill_credit: float32[] per-agent kill credit weight.
    """

    max_steps: jax.Array
    shaping: jax.Array
    kill_credit: jax.Array


@struct.dataclass
class BattleState:
    """Attributes:
    grid: the shared grid (teams 0 and 1).
    step: int32[] steps taken in this episode.
    horizon: int32[] the episode's length (``params.max_steps``).
    """

    grid: core.Grid
    step: jax.Array
    horizon: jax.Array


def team_outcome(survivors: jax.Array) -> jax.Array:
    """+1 / 0 / -1 per team of two from ``survivors int32[2]`` -> ``int32[2]``."""
    sign = jnp.sign(survivors[0] - survivors[1]).astype(jnp.int32)
    return jnp.stack([sign, -sign])


def survivors_margin(alive: jax.Array, team0: jax.Array) -> jax.Array:
    """Team 0's survivors minus team 1's from ``alive bool[..., N]`` -> ``int32[...]``."""
    return jnp.sum(alive & team0, axis=-1) - jnp.sum(alive & ~team0, axis=-1)


def enemy_deaths_beside(around: jax.Array, team: jax.Array, deaths: jax.Array) -> jax.Array:
    """Enemies in each agent's ``around int32[N, 8]`` window (agent ids, < 0 for none) that die
    this step -> ``float32[N]``."""
    present = around >= 0
    ids = jnp.maximum(around, 0)
    killed = present & (team[ids] != team[:, None]) & deaths[ids]
    return jnp.sum(killed, axis=-1, dtype=jnp.float32)


class Battle(GridEnv):
    """The Battle scenario; see the module docstring for the observation/reward layout."""

    name = "battle"
    num_teams = 2
    config: BattleConfig

    @property
    def teams(self) -> np.ndarray:
        return (np.arange(self.num_agents) >= self.config.team_size).astype(np.int32)

    @property
    def num_extra_features(self) -> int:
        return int(self.config.observe_time)

    def default_params(self) -> BattleParams:
        cfg = self.config
        return BattleParams(
            max_steps=jnp.int32(cfg.max_steps),
            shaping=jnp.float32(cfg.shaping),
            kill_credit=jnp.float32(cfg.kill_credit),
        )

    def reset_state(self, key: jax.Array, params: BattleParams) -> BattleState:
        cfg = self.config
        cells = core.sample_cells(key, cfg.height, cfg.width, cfg.num_agents)
        return self.state_from(cells, params.max_steps)

    def state_from(
        self, positions: jax.Array, horizon: jax.Array | int | None = None
    ) -> BattleState:
        """A fresh state with agents at ``positions int32[N, 2]`` and an episode of ``horizon``
        steps (default: the config's ``max_steps``)."""
        horizon = self.config.max_steps if horizon is None else horizon
        grid = core.make_grid(self.spec, jnp.asarray(positions), jnp.asarray(self.teams))
        return BattleState(grid=grid, step=jnp.int32(0), horizon=jnp.asarray(horizon, jnp.int32))

    def transition(self, key: jax.Array, state: BattleState, actions: jax.Array, params):
        moved = core.resolve_moves(key, self.spec, state.grid, actions)
        grid = moved.grid
        was_alive = grid.alive
        around = core.window_agents(self.spec, grid, core.ring_displacements(1))
        enemies = core.count_adjacent(around, grid.team, grid.team, enemy=True)
        deaths = was_alive & (enemies >= self.config.kill_threshold)
        grid = core.remove_agents(self.spec, grid, deaths)

        survivors = jax.ops.segment_sum(grid.alive.astype(jnp.int32), grid.team, num_segments=2)
        step = state.step + 1
        terminated = jnp.any(survivors == 0) | (step >= params.max_steps)
        outcome = jnp.where(terminated, team_outcome(survivors), 0)

        team_deaths = jax.ops.segment_sum(deaths.astype(jnp.float32), grid.team, num_segments=2)
        own_deaths = team_deaths[grid.team]
        enemy_deaths = team_deaths[1 - grid.team]
        shaped = params.shaping * (enemy_deaths - own_deaths) / self.config.team_size
        credit = params.kill_credit * (enemy_deaths_beside(around, grid.team, deaths) - deaths)
        reward = (outcome[grid.team].astype(jnp.float32) + shaped + credit) * was_alive
        info = {
            "deaths": deaths,
            "survivors": survivors,
            "outcome": outcome,
            "invalid_actions": moved.invalid_actions,
        }
        return state.replace(grid=grid, step=step), reward, terminated, jnp.bool_(False), info

    def extra_features(self, state: BattleState) -> jax.Array | None:
        if not self.config.observe_time:
            return None
        return time_left(state, self.num_agents)
