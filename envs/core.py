"""Grid mechanics shared by every scenario (SPEC section 2).

The world is a ``height x width`` grid surrounded by a border of ``pad`` off-grid cells, stored as
two flat maps over the padded grid:

* ``occupancy int32[cells]`` - the id of the alive agent standing on a cell, ``EMPTY`` (-1), or
  ``BLOCKED`` (-2) for off-grid and blocking terrain. It lives in the state and is updated in O(N)
  per step (only the cells that change are written), never rebuilt.
* ``terrain int8[cells]`` - ``PLAIN``, ``OFF_GRID``, ``ITEM`` (food or landmark) or ``TARGET``.
  Static within an episode.

Because the border is at least as wide as any window radius, every window around an on-grid cell
is a plain gather at ``flat(position) + offsets`` with no bounds checks. Nothing here costs more
than O(N x window): no N x N matrix, no full-map pass after ``reset``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

EMPTY = -1
BLOCKED = -2

PLAIN = 0
OFF_GRID = 1
ITEM = 2
TARGET = 3

NUM_ACTIONS = 5
UP, DOWN, LEFT, RIGHT, STAY = range(NUM_ACTIONS)
#: Row/column displacement of each action: up (row-1), down (row+1), left, right, stay.
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]], dtype=np.int32)
#: The four 4-adjacent offsets (up, down, left, right).
ADJACENT4 = MOVES[:4]

#: Observation channels per window cell, in order.
CHANNELS = ("off_grid", "own_team", "other_team", "item", "target")
NUM_CHANNELS = len(CHANNELS)


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """Static geometry of a padded grid (hashable, shapes only).

    Attributes:
      height: rows of the playable grid.
      width: columns of the playable grid.
      pad: width of the off-grid border; must be >= the largest window radius gathered.
    """

    height: int
    width: int
    pad: int

    @property
    def padded_height(self) -> int:
        return self.height + 2 * self.pad

    @property
    def padded_width(self) -> int:
        return self.width + 2 * self.pad

    @property
    def num_cells(self) -> int:
        """Number of cells of the padded map (length of the flat maps)."""
        return self.padded_height * self.padded_width

    def flat(self, positions: jax.Array) -> jax.Array:
        """Flat padded-map index of ``positions int32[..., 2]`` (row, col) -> ``int32[...]``."""
        return (positions[..., 0] + self.pad) * self.padded_width + positions[..., 1] + self.pad

    def offsets(self, displacements: np.ndarray) -> np.ndarray:
        """Flat-index offsets of ``displacements int[K, 2]`` -> ``int32[K]`` (static)."""
        d = np.asarray(displacements, dtype=np.int32)
        return (d[:, 0] * self.padded_width + d[:, 1]).astype(np.int32)

    def gather(self, flat_map: jax.Array, positions: jax.Array, displacements: np.ndarray):
        """Values of ``flat_map`` at ``positions int32[N, 2] + displacements[K, 2]`` -> ``[N, K]``.

        Every displacement must lie within ``pad`` of the grid (Chebyshev), which holds for all
        windows of radius <= pad around on-grid positions.
        """
        index = self.flat(positions)[:, None] + self.offsets(displacements)[None, :]
        return flat_map[index]


def window_displacements(radius: int) -> np.ndarray:
    """Row-major displacements of a ``(2r+1) x (2r+1)`` window -> ``int32[(2r+1)^2, 2]``."""
    span = np.arange(-radius, radius + 1, dtype=np.int32)
    rows, cols = np.meshgrid(span, span, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1)


def nearest_first(displacements: np.ndarray) -> np.ndarray:
    """Order of ``displacements int[W, 2]`` by Chebyshev, then Euclidean distance from the
    centre, then their own order -> ``int[W]`` indices (static)."""
    d = np.asarray(displacements)
    key = np.max(np.abs(d), axis=-1) * 1000 + np.sum(d * d, axis=-1)
    return np.argsort(key, kind="stable")


def ring_displacements(radius: int) -> np.ndarray:
    """The window of ``radius`` without its centre -> ``int32[(2r+1)^2 - 1, 2]``.

    These are the slots of the neighbour table, in row-major order.
    """
    window = window_displacements(radius)
    return window[np.any(window != 0, axis=-1)]


@struct.dataclass
class Grid:
    """Agents and maps of one environment (a pytree; shapes are static).

    Attributes:
      positions: int32[N, 2] (row, col); meaningless where ``alive`` is False.
      alive: bool[N].
      team: int32[N], team id of each agent (fixed for the env's lifetime).
      occupancy: int32[cells] agent id, EMPTY or BLOCKED, over the padded map.
      terrain: int8[cells] PLAIN, OFF_GRID, ITEM or TARGET, over the padded map.
    """

    positions: jax.Array
    alive: jax.Array
    team: jax.Array
    occupancy: jax.Array
    terrain: jax.Array


class NeighbourTable(NamedTuple):
    """Padded neighbour lists of the agent graph (SPEC section 2).

    Attributes:
      ids: int32[N, K] neighbour agent ids (EMPTY where masked), slots in ring order.
      mask: bool[N, K] True where the slot holds an alive neighbour of an alive agent.
      distance: float32[K] Euclidean length of each slot's displacement (the edge feature).
      displacement: int32[K, 2] (row, col) offset of each slot relative to the agent (static).
    """

    ids: jax.Array
    mask: jax.Array
    distance: jax.Array
    displacement: np.ndarray


def sample_cells(key: jax.Array, height: int, width: int, count: int) -> jax.Array:
    """``count`` distinct uniform random cells of a ``height x width`` grid -> ``int32[count, 2]``.

    Sparse grids (``2 count <= cells``) draw ``2 count`` cells with replacement and keep the first
    ``count`` distinct ones, redrawing in the rare case there are fewer: O(H W) and no sort (the
    kept set is uniform because the acceptance event is symmetric in the cells). Dense grids use a
    permutation, O(H W log(H W)). Either way it runs once per episode, never per step.
    """
    num_cells = height * width
    if 2 * count > num_cells:
        cells = jax.random.permutation(key, num_cells)[:count]
    else:
        num_draws = 2 * count
        order = jnp.arange(num_draws, dtype=jnp.int32)

        def draw(key):
            draws = jax.random.randint(key, (num_draws,), 0, num_cells, dtype=jnp.int32)
            first = jnp.full(num_cells, num_draws, jnp.int32).at[draws].min(order)
            return draws, first[draws] == order

        def too_few(carry):
            return jnp.sum(carry[2]) < count

        def redraw(carry):
            key, sub = jax.random.split(carry[0])
            return (key, *draw(sub))

        key, sub = jax.random.split(key)
        _, draws, is_first = jax.lax.while_loop(too_few, redraw, (key, *draw(sub)))
        rank = jnp.cumsum(is_first) - 1
        slot = jnp.where(is_first & (rank < count), rank, count)
        cells = jnp.zeros(count, jnp.int32).at[slot].set(draws, mode="drop")
    return jnp.stack([cells // width, cells % width], axis=-1).astype(jnp.int32)


def make_grid(
    spec: GridSpec,
    positions: jax.Array,
    team: jax.Array,
    items: jax.Array | None = None,
    item_kinds: jax.Array | None = None,
    items_block: bool = False,
) -> Grid:
    """Build the maps of a fresh episode (O(H W), once per reset).

    Args:
      spec: the padded geometry.
      positions: int32[N, 2] distinct on-grid agent cells; all agents start alive.
      team: int32[N] team ids.
      items: int32[M, 2] cells of food or landmarks (distinct from agents), or None.
      item_kinds: int8[M] ITEM or TARGET per item (default all ITEM).
      items_block: whether items block movement (Jungle food) or not (Deception landmarks).

    Returns:
      The episode's ``Grid``.
    """
    rows = jnp.arange(spec.padded_height)[:, None]
    cols = jnp.arange(spec.padded_width)[None, :]
    inside = (
        (rows >= spec.pad)
        & (rows < spec.pad + spec.height)
        & (cols >= spec.pad)
        & (cols < spec.pad + spec.width)
    ).ravel()
    terrain = jnp.where(inside, PLAIN, OFF_GRID).astype(jnp.int8)
    occupancy = jnp.where(inside, EMPTY, BLOCKED).astype(jnp.int32)
    if items is not None:
        kinds = jnp.full(items.shape[0], ITEM, jnp.int8) if item_kinds is None else item_kinds
        terrain = terrain.at[spec.flat(items)].set(kinds.astype(jnp.int8))
        if items_block:
            occupancy = occupancy.at[spec.flat(items)].set(BLOCKED)
    num_agents = positions.shape[0]
    occupancy = occupancy.at[spec.flat(positions)].set(jnp.arange(num_agents, dtype=jnp.int32))
    return Grid(
        positions=positions.astype(jnp.int32),
        alive=jnp.ones(num_agents, bool),
        team=team.astype(jnp.int32),
        occupancy=occupancy,
        terrain=terrain,
    )


def _drop_index(spec: GridSpec, keep: jax.Array, index: jax.Array) -> jax.Array:
    """``index`` where ``keep``, else an out-of-range index that ``mode='drop'`` scatters ignore."""
    return jnp.where(keep, index, spec.num_cells)


class MoveResult(NamedTuple):
    """Outcome of ``resolve_moves``.

    Attributes:
      grid: the grid after the moves.
      moved: bool[N] agents that changed cell.
      invalid_actions: int32[] alive agents whose action id was outside [0, 5) (they stayed).
    """

    grid: Grid
    moved: jax.Array
    invalid_actions: jax.Array


def resolve_moves(key: jax.Array, spec: GridSpec, grid: Grid, actions: jax.Array) -> MoveResult:
    """Simultaneous moves with one agent per cell (SPEC section 2), in O(N).

    An alive agent moves iff its target cell is on the grid, not blocking, and empty at the start
    of the step. When several agents target the same cell, the one with the smallest random
    priority drawn from ``key`` wins (uniform; the low bits hold the agent id so priorities are
    unique and the result is deterministic for a key); the others stay. No swaps, no chains.

    Args:
      key: PRNG key of the step.
      spec: the padded geometry.
      grid: the grid before the moves.
      actions: int32[N] action ids; ids outside [0, 5) act as STAY and are counted.

    Returns:
      A ``MoveResult``.
    """
    num_agents = grid.alive.shape[0]
    valid = (actions >= 0) & (actions < NUM_ACTIONS)
    invalid_actions = jnp.sum(grid.alive & ~valid, dtype=jnp.int32)
    action = jnp.where(valid & grid.alive, actions, STAY)
    target = grid.positions + jnp.asarray(MOVES)[action]
    source_cell = spec.flat(grid.positions)
    target_cell = spec.flat(target)
    wants = (action != STAY) & (grid.occupancy[target_cell] == EMPTY)

    id_bits = max(1, math.ceil(math.log2(num_agents)))
    if id_bits > 29:
        raise ValueError(f"num_agents={num_agents} exceeds the 2**29 supported by resolve_moves")
    random_bits = jax.random.bits(key, (num_agents,), jnp.uint32) >> (id_bits + 2)
    priority = (random_bits.astype(jnp.int32) << id_bits) | jnp.arange(num_agents, dtype=jnp.int32)
    claim = -3 - priority  # <= -3: distinct from EMPTY, BLOCKED and agent ids.
    claimed = grid.occupancy.at[_drop_index(spec, wants, target_cell)].min(claim, mode="drop")
    wins = wants & (claimed[target_cell] == claim)
    # Every claimed cell has exactly one winner, so writing winners overwrites every claim; and
    # a winner's source cell is never another winner's target (targets were empty).
    occupancy = claimed.at[_drop_index(spec, wins, source_cell)].set(EMPTY, mode="drop")
    occupancy = occupancy.at[_drop_index(spec, wins, target_cell)].set(
        jnp.arange(num_agents, dtype=jnp.int32), mode="drop"
    )
    positions = jnp.where(wins[:, None], target, grid.positions)
    grid = grid.replace(positions=positions, occupancy=occupancy)
    return MoveResult(grid=grid, moved=wins, invalid_actions=invalid_actions)


def remove_agents(spec: GridSpec, grid: Grid, dies: jax.Array) -> Grid:
    """Take the agents of ``dies bool[N]`` off the grid (they stay dead for the episode). O(N)."""
    dies = dies & grid.alive
    cell = _drop_index(spec, dies, spec.flat(grid.positions))
    return grid.replace(
        alive=grid.alive & ~dies, occupancy=grid.occupancy.at[cell].set(EMPTY, mode="drop")
    )


def window_agents(spec: GridSpec, grid: Grid, displacements: np.ndarray) -> jax.Array:
    """Agent ids (or EMPTY/BLOCKED) around every agent -> ``int32[N, K]`` (rows of dead agents are
    gathered from their last cell and must be masked by the caller)."""
    return spec.gather(grid.occupancy, grid.positions, displacements)


def count_adjacent(ids: jax.Array, team: jax.Array, my_team: jax.Array, enemy: bool) -> jax.Array:
    """Count agents in ``ids int32[N, K]`` whose team differs (``enemy``) or equals ``my_team``.

    Args:
      ids: window of agent ids, EMPTY/BLOCKED for no agent.
      team: int32[N] team of every agent.
      my_team: int32[N] team of the window's owner.
      enemy: count other-team agents if True, same-team agents otherwise.

    Returns:
      int32[N] counts.
    """
    present = ids >= 0
    other_team = team[jnp.maximum(ids, 0)] != my_team[:, None]
    hit = present & (other_team if enemy else ~other_team)
    return jnp.sum(hit, axis=-1, dtype=jnp.int32)


def neighbour_table(spec: GridSpec, grid: Grid, radius: int) -> NeighbourTable:
    """Neighbour table of the agent graph: edge i-j iff both alive and Chebyshev distance <= radius.

    Built from the occupancy map in O(N x (2r+1)^2); matches a brute-force O(N^2) reference.

    Args:
      spec: the padded geometry (``pad >= radius``).
      grid: current grid.
      radius: graph radius r >= 1.

    Returns:
      A ``NeighbourTable`` with K = (2r+1)^2 - 1 slots.
    """
    ring = ring_displacements(radius)
    ids = window_agents(spec, grid, ring)
    mask = (ids >= 0) & grid.alive[:, None]
    return NeighbourTable(
        ids=jnp.where(mask, ids, EMPTY),
        mask=mask,
        distance=jnp.asarray(np.linalg.norm(ring, axis=-1), jnp.float32),
        displacement=ring,
    )


def observation_windows(
    spec: GridSpec, grid: Grid, radius: int, reveal_target: jax.Array
) -> jax.Array:
    """Entity channels of the ``(2r+1)^2`` window around every agent (SPEC section 2).

    Args:
      spec: the padded geometry (``pad >= radius``).
      grid: current grid.
      radius: view radius r.
      reveal_target: bool[num_teams] whether each team sees the target channel.

    Returns:
      float32[N, 2r+1, 2r+1, NUM_CHANNELS] with channels ``CHANNELS``: off-grid, own team (other
      than the agent itself), other team, item (food or landmark), target. Zero for dead agents.
    """
    window = window_displacements(radius)
    ids = window_agents(spec, grid, window)
    terrain = spec.gather(grid.terrain, grid.positions, window)
    num_agents = grid.alive.shape[0]
    present = ids >= 0
    same_team = grid.team[jnp.maximum(ids, 0)] == grid.team[:, None]
    not_self = ids != jnp.arange(num_agents)[:, None]
    channels = jnp.stack(
        [
            terrain == OFF_GRID,
            present & same_team & not_self,
            present & ~same_team,
            terrain >= ITEM,
            (terrain == TARGET) & reveal_target[grid.team][:, None],
        ],
        axis=-1,
    )
    channels = channels & grid.alive[:, None, None]
    side = 2 * radius + 1
    return channels.astype(jnp.float32).reshape(num_agents, side, side, NUM_CHANNELS)
