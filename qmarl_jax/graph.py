"""Ego-graph decomposition (SPEC section 4): one sub-graph per alive agent, flat and padded.

With one agent per cell and a Chebyshev edge rule of radius r, the ``depth``-hop ego-graph of an
agent lies inside the ``(2 depth r + 1)^2`` window around it. Reachability by hops is therefore
``depth`` rounds of a dilation of the centre inside that window, masked by occupancy: fixed shapes,
vmapped over agents, no BFS queue, O(N x window) — never O(N^2).

All ego-graphs of one environment step are packed into one flat ``jraph.GraphsTuple`` padded to a
*total* node and edge budget (not every ego-graph to its worst case): at 4% density the mean
ego-graph has about 1.2 nodes. Nodes are compacted with a running count of the masks. A node that
does not fit the budget is dropped *and counted* (``EgoStats.overflow_nodes``); so are nodes beyond
the per-graph cap ``max_nodes`` (``EgoStats.truncated_nodes``).

**Layout: agent-aligned singleton slots, then the budget.** An agent with no neighbour has a
one-node ego-graph without edges and appears in no other ego-graph (about 72% of the agents at 4%
density). Node slot ``i < N`` is reserved for agent ``i``'s singleton ego-graph (padding when agent
``i`` has neighbours or is not a centre); the ``node_budget`` slots after them hold the ego-graphs
of two or more nodes, and every edge joins two of those. The network computes the edgeless slots
per agent without message passing (``nmp.MessagePassing``: their message sums are zero), so the
padded message-passing work scales with the agents that have neighbours, not with N.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from envs import core


class EgoStats(NamedTuple):
    """Size statistics of one step's ego-graphs (all int32[] / float32[] scalars).

    Attributes:
      num_graphs: alive agents (= non-empty ego-graphs).
      num_nodes: nodes kept in the flat batch (singleton slots included).
      singletons: one-node ego-graphs (held in the agent-aligned slots, outside the budget).
      num_edges: directed edges kept.
      max_graph_nodes: largest ego-graph (after the cap).
      truncated_nodes: nodes beyond ``max_nodes`` in their ego-graph (dropped by the cap).
      overflow_nodes: nodes dropped because the node budget was full.
      overflow_edges: edges dropped because the edge budget was full (edges of nodes lost to the
        node budget go with them and are counted through ``overflow_nodes``).
      shared_nodes: nodes of ego-graphs stored once for several centres (``share_components``)
        that are not stored again: ``num_nodes + shared_nodes`` counts every ego-graph's nodes.
    """

    num_graphs: jax.Array
    num_nodes: jax.Array
    singletons: jax.Array
    num_edges: jax.Array
    max_graph_nodes: jax.Array
    truncated_nodes: jax.Array
    overflow_nodes: jax.Array
    overflow_edges: jax.Array
    shared_nodes: jax.Array


@functools.cache
def window_geometry(depth: int, radius: int):
    """Static geometry of the ego window (numpy, cached).

    Returns:
      ``(window [W, 2], centre, neighbour_slots [W, K], order_rank [W])``: the window
      displacements; the centre slot; for each slot w the slot ``w + ring[k]`` of each ring
      displacement k (``W`` = outside the window); each slot's rank by (Euclidean distance, row,
      column).
    """
    window = core.window_displacements(depth * radius)
    ring = core.ring_displacements(radius)
    slot_of = {tuple(d): s for s, d in enumerate(window.tolist())}
    num_slots = len(window)
    neighbour_slots = np.array(
        [[slot_of.get((r + dr, c + dc), num_slots) for dr, dc in ring] for r, c in window],
        dtype=np.int32,
    )
    squared = np.sum(window * window, axis=-1)
    order = np.lexsort((window[:, 1], window[:, 0], squared))
    order_rank = np.empty(num_slots, np.int32)
    order_rank[order] = np.arange(num_slots)
    centre = slot_of[(0, 0)]
    return window, centre, neighbour_slots, order_rank


def hop_distances(ids: jax.Array, alive: jax.Array, depth: int, radius: int) -> jax.Array:
    """Hops from each centre to every slot of its window -> ``int32[N, W]`` (``depth + 1`` if the
    slot is empty or farther than ``depth`` hops).

    Args:
      ids: int32[N, W] agent ids in each agent's ego window (negative for no agent).
      alive: bool[N] whether each agent is a live centre (others reach nothing).
      depth: hops d >= 0.
      radius: graph radius r >= 1.
    """
    _, centre, neighbour_slots, *_ = window_geometry(depth, radius)
    occupied = ids >= 0
    unreached = depth + 1
    hop = (
        jnp.full(ids.shape, unreached, jnp.int32).at[:, centre].set(jnp.where(alive, 0, unreached))
    )
    for h in range(1, depth + 1):
        reached = jnp.pad(hop < h, ((0, 0), (0, 1)))  # column W = outside the window
        grown = jnp.any(reached[:, neighbour_slots], axis=-1) & occupied
        hop = jnp.where(grown & (hop > h), h, hop)
    return hop


def _exclusive_cumsum(x: jax.Array) -> jax.Array:
    return jnp.cumsum(x) - x


def inverse_positions(position: jax.Array, valid: jax.Array, size: int) -> jax.Array:
    """The inverse of a partial injection: ``int32[size]`` holding, at ``position[i]``, the index
    i of each valid entry, and ``len(position)`` where no valid entry lands.

    Args:
      position: int[M] target of each entry (any value where not valid; valid ones distinct,
        those at or beyond ``size`` are dropped).
      valid: bool[M].
      size: length of the result.
    """
    entries = position.shape[0]
    index = jnp.arange(entries, dtype=jnp.int32)
    # Entries that land nowhere go to distinct positions past the end: every target is unique.
    target = jnp.where(valid & (position < size), position, size + index)
    return (
        jnp.full(size, entries, jnp.int32).at[target].set(index, mode="drop", unique_indices=True)
    )


def ego_graphs(
    spec: core.GridSpec,
    grid: core.Grid,
    depth: int,
    radius: int,
    max_nodes: int,
    node_budget: int,
    edge_budget: int,
    centres: jax.Array | None = None,
    singleton_slots: bool = True,
    share_components: bool = False,
) -> tuple[jraph.GraphsTuple, EgoStats]:
    """Decompose one environment's agent graph into padded ego-graphs.

    Args:
      spec: padded grid geometry (``spec.pad >= depth * radius``).
      grid: the current grid (positions, alive, occupancy).
      depth: hops d of an ego-graph (the centre is hop 0).
      radius: graph radius r (edge iff Chebyshev distance <= r).
      max_nodes: cap on nodes per ego-graph; the closest by hop, then distance are kept.
      node_budget: node slots B of the ego-graphs with two or more nodes (the N singleton slots
        come on top).
      edge_budget: total directed-edge slots B_e of the flat batch.
      centres: optional bool[N]: build ego-graphs only around these agents (e.g. one team's);
        every alive agent can still appear as a node.
      singleton_slots: put one-node ego-graphs in the agent-aligned slots (default). False puts
        them in the budget like any other ego-graph (the reference layout of the tests).
      share_components: store identical ego-graphs once. An ego-graph of two or more nodes is
        *closed* when it holds its centre's whole connected component (no node has a neighbour
        outside it) within ``max_nodes``; all closed ego-graphs of a component are the same
        graph, and the network (which sees agents and distances, not the centre) gives them the
        same outputs, so only the one of the smallest closed centre is stored, with ``copies``
        = the number of closed centres. At 4% density this halves the budget's nodes.

    Returns:
      ``(graphs, stats)``. ``graphs`` is a ``jraph.GraphsTuple`` with ``B_n = N + B`` nodes and
      N + 1 graphs (graph i is the ego-graph of agent i, empty if it is dead or shared; the last
      graph holds the padding) and ``nodes = {"agent": int32[B_n] global agent id (N on
      padding), "graph": int32[B_n] ego-graph id (N on padding), "hop": int32[B_n], "copies":
      int32[B_n] ego-graphs the node's graph stands for (1, or the closed centres of a shared
      graph; 0 on padding), "own": int32[B_n] 1 where the node stands in its agent's own
      ego-graph (the centre, or a closed centre of a shared graph)}``, ``edges = {"distance":
      float32[B_e], "ring": int32[B_e]}`` (``ring``: the slot k of the ring displacement from
      sender to receiver, ``receiver = sender + ring[k]``: with the receiver's agent it names the
      neighbour pair), ``senders/receivers int32[B_e]`` flat node indices (padding edges point at
      node slot B_n, outside the node arrays, so segment sums drop them). Slot ``i < N`` holds
      agent i's one-node ego-graph, if it has one; the larger ego-graphs follow in agent order,
      each with its nodes ordered by (hop, distance, row, column): the centre first. Every edge
      joins two slots ``>= N``.
    """
    if depth * radius > spec.pad:
        raise ValueError(
            f"invalid depth={depth} with graph_radius={radius}: the ego window needs a grid "
            f"border of {depth * radius} but the environment has {spec.pad}; raise the env's "
            f"sight_radius or lower depth"
        )
    window, centre, neighbour_slots, order_rank = window_geometry(depth, radius)
    num_agents = grid.alive.shape[0]
    num_slots = len(window)
    total_slots = num_agents + node_budget
    ids = spec.gather(grid.occupancy, grid.positions, window)
    is_centre = grid.alive if centres is None else grid.alive & centres
    hop = hop_distances(ids, is_centre, depth, radius)
    reached = hop <= depth

    # Rank of each reached slot within its ego-graph by (hop, static order): centre first.
    key = hop * num_slots + jnp.asarray(order_rank)[None, :]
    before = (key[:, None, :] < key[:, :, None]) & reached[:, None, :]  # [N, W(slot), W(other)]
    rank = jnp.sum(before, axis=-1, dtype=jnp.int32)
    kept = reached & (rank < max_nodes)
    graph_size = jnp.sum(kept, axis=-1, dtype=jnp.int32)
    singleton = (graph_size == 1) & singleton_slots  # [N]: kept only its centre
    agents = jnp.arange(num_agents, dtype=jnp.int32)
    if share_components and depth > 0:
        closed_centre, copies, shared = _shared_components(
            ids, reached, is_centre & (graph_size > 1), max_nodes, centre, neighbour_slots
        )
    else:
        closed_centre = jnp.zeros_like(reached)
        copies, shared = jnp.ones(num_agents, jnp.int32), jnp.zeros(num_agents, bool)
    packed_size = jnp.where(singleton | shared, 0, graph_size)

    # Flat node slots: singleton i sits in slot i; a larger ego-graph i occupies
    # [N + offset_i, N + offset_i + size_i) while within the budget (a shared one: nowhere).
    packed = _exclusive_cumsum(packed_size)[:, None] + rank
    in_budget = kept & (packed < node_budget) & ~shared[:, None]
    fits = jnp.where(singleton[:, None], kept, in_budget)
    flat = jnp.where(singleton[:, None], agents[:, None], num_agents + packed)
    flat = jnp.where(fits, flat, total_slots)
    # One scatter of each node slot's source (ego-graph g, window slot w) -> g * W + w
    # (N * W on padding); every node field is then a gather of its [N, W] array.
    source = inverse_positions(flat.ravel(), fits.ravel(), total_slots)
    node_graph = source // num_slots  # N on padding
    node_window = source % num_slots  # 0 on padding

    def gather(values, fill):
        return jnp.append(values.ravel(), jnp.int32(fill))[source]

    nodes = {
        "agent": gather(ids, num_agents),
        "graph": node_graph,
        "hop": gather(hop, 0),
        "copies": jnp.append(copies, 0)[node_graph],
        "own": gather(((hop == 0) | closed_centre).astype(jnp.int32), 0),
    }
    n_node = jnp.sum(fits, axis=-1, dtype=jnp.int32)

    # Directed edges, enumerated from their senders: the node in budget slot j (window slot w
    # of ego-graph g) sends to each ring neighbour w + ring[k] kept in g. Edge slot e holds the
    # (e+1)-th such (j, k) in (j, k) order, placed by their running count: the work follows the
    # budget's B x K candidates, not every agent's window pairs.
    num_ring = neighbour_slots.shape[1]
    ring_distance = np.linalg.norm(core.ring_displacements(radius), axis=-1).astype(np.float32)
    budget_graph = node_graph[num_agents:]  # [B], N on padding
    real_node = budget_graph < num_agents
    target_window = jnp.asarray(neighbour_slots)[node_window[num_agents:]]  # [B, K]; W = outside
    inside = target_window < num_slots
    target = flat[
        jnp.where(real_node, budget_graph, 0)[:, None], jnp.where(inside, target_window, 0)
    ]
    edge_ok = (real_node[:, None] & inside & (target < total_slots)).ravel()  # [B * K]
    running = jnp.cumsum(edge_ok, dtype=jnp.int32)
    found = inverse_positions(running - 1, edge_ok, edge_budget)
    real = jnp.arange(edge_budget) < running[-1]
    sender, k = jnp.where(real, found // num_ring, 0), jnp.where(real, found % num_ring, 0)
    senders = jnp.where(real, num_agents + sender, num_agents)
    receivers = jnp.where(real, target[sender, k], total_slots)
    distance = jnp.where(real, jnp.asarray(ring_distance)[k], 0.0)
    ring = jnp.where(real, k, 0)
    edges_per_graph = jax.ops.segment_sum(
        jnp.sum(edge_ok.reshape(-1, num_ring), axis=-1, dtype=jnp.int32),
        budget_graph,
        num_segments=num_agents,
    )
    first_edge = _exclusive_cumsum(edges_per_graph)
    n_edge = jnp.clip(edge_budget - first_edge, 0, edges_per_graph)

    total_nodes = jnp.sum(n_node)
    total_edges = jnp.sum(n_edge)
    graphs = jraph.GraphsTuple(
        nodes=nodes,
        edges={"distance": distance, "ring": ring},
        senders=senders,
        receivers=receivers,
        globals=None,
        n_node=jnp.append(n_node, total_slots - total_nodes),
        n_edge=jnp.append(n_edge, edge_budget - total_edges),
    )
    stats = EgoStats(
        num_graphs=jnp.sum(is_centre, dtype=jnp.int32),
        num_nodes=total_nodes,
        singletons=jnp.sum(singleton & is_centre, dtype=jnp.int32),
        num_edges=total_edges,
        max_graph_nodes=jnp.max(n_node),
        truncated_nodes=jnp.sum(reached & ~kept, dtype=jnp.int32),
        overflow_nodes=jnp.sum(kept & ~fits & ~shared[:, None], dtype=jnp.int32),
        overflow_edges=jnp.sum(edges_per_graph) - total_edges,
        shared_nodes=jnp.sum(jnp.where(shared, graph_size, 0)),
    )
    return graphs, stats


def _shared_components(ids, reached, candidate, max_nodes, centre, neighbour_slots):
    """Which ego-graphs are stored once for several centres (``ego_graphs(share_components)``).

    Args:
      ids: int32[N, W] agent ids in each agent's window (negative: empty).
      reached: bool[N, W] slots within ``depth`` hops of each centre.
      candidate: bool[N] live centres whose ego-graph has two or more nodes.
      max_nodes: the per-graph cap (a truncated ego-graph differs per centre).
      centre, neighbour_slots: the window's centre slot and each slot's ring neighbours
        (``window_geometry``; W = outside).

    Returns:
      ``(closed_centre bool[N, W], copies int32[N], shared bool[N])``: which slots of each
      stored graph are closed centres (their own ego-graph is this graph); the ego-graphs each
      graph stands for; the centres whose ego-graph is stored as another's.
    """
    num_agents = ids.shape[0]
    occupied = jnp.pad(ids >= 0, ((0, 0), (0, 1)))
    degree = jnp.sum(occupied[:, neighbour_slots[centre]], axis=-1)  # [N] live neighbours
    # A node at hop < depth has every neighbour in the ego-graph; one at hop = depth may not.
    degree_inside = jnp.sum(jnp.pad(reached, ((0, 0), (0, 1)))[:, neighbour_slots], axis=-1)
    node_degree = degree[jnp.where(reached, ids, 0)]
    closed = (
        candidate
        & jnp.all(~reached | (degree_inside == node_degree), axis=-1)
        & (jnp.sum(reached, axis=-1) <= max_nodes)
    )
    # A closed ego-graph is its centre's component, so it sees every closed centre of it.
    is_closed = jnp.append(closed, False)
    closed_centre = reached & is_closed[jnp.where(reached, ids, num_agents)] & closed[:, None]
    first = jnp.min(jnp.where(closed_centre, ids, num_agents), axis=-1)
    copies = jnp.where(closed, jnp.sum(closed_centre, axis=-1, dtype=jnp.int32), 1)
    return closed_centre, copies, closed & (first != jnp.arange(num_agents))


def node_mask(graphs: jraph.GraphsTuple) -> jax.Array:
    """bool[..., B_n] True on real (non-padding) nodes."""
    num_agents = graphs.n_node.shape[-1] - 1
    return graphs.nodes["agent"] < num_agents


def edge_mask(graphs: jraph.GraphsTuple) -> jax.Array:
    """bool[..., B_e] True on real (non-padding) edges."""
    return graphs.receivers < graphs.nodes["agent"].shape[-1]


def budget_use(graphs: jraph.GraphsTuple, num_agents: int) -> tuple[jax.Array, jax.Array]:
    """``(nodes, edges)`` int32[]: the most budget node slots and edge slots that any one step of
    ``graphs`` (any leading axes, ``ego_graphs`` layout) fills with real nodes and edges.

    Real budget nodes sit in the first slots after the N agent-aligned ones and real edges in the
    first edge slots (``ego_graphs`` packs them), so ``trim_budget`` to sizes at least these
    keeps every real node and edge.
    """
    nodes = jnp.sum(node_mask(graphs)[..., num_agents:], axis=-1, dtype=jnp.int32)
    edges = jnp.sum(edge_mask(graphs), axis=-1, dtype=jnp.int32)
    return jnp.max(nodes), jnp.max(edges)


def trim_budget(
    graphs: jraph.GraphsTuple, num_agents: int, node_slots: int, edge_slots: int
) -> jraph.GraphsTuple:
    """``graphs`` (``ego_graphs`` layout, any leading axes) cut to ``N + node_slots`` node slots
    and ``edge_slots`` edge slots (static sizes). Only padding is removed when the sizes are at
    least ``budget_use``; the padding graph's ``n_node`` / ``n_edge`` shrink accordingly and
    padding edges still point outside the (smaller) node arrays."""
    num_slots = num_agents + node_slots
    removed_nodes = graphs.nodes["agent"].shape[-1] - num_slots
    removed_edges = graphs.receivers.shape[-1] - edge_slots
    cut = lambda size: lambda x: x[..., :size]
    return graphs._replace(
        nodes=jax.tree.map(cut(num_slots), graphs.nodes),
        edges=jax.tree.map(cut(edge_slots), graphs.edges),
        senders=graphs.senders[..., :edge_slots],
        receivers=graphs.receivers[..., :edge_slots],
        n_node=graphs.n_node.at[..., -1].add(-removed_nodes),
        n_edge=graphs.n_edge.at[..., -1].add(-removed_edges),
    )


#: Auto ladders (``budget_ladder(min_nodes=...)``) skip sizes below this many node slots: there
#: the work saved is smaller than the cost of one more compiled branch.
MIN_BUCKET_NODES = 64


def budget_ladder(
    node_budget: int, edge_budget: int, levels: int, min_nodes: int = 1
) -> tuple[tuple[int, int], ...]:
    """Static ``(node_slots, edge_slots)`` sizes the network can run on, smallest first: the
    budgets halved ``levels - 1`` times (rounded up), sizes below ``min_nodes`` node slots left
    out; the full budgets always last."""
    sizes = [
        (math.ceil(node_budget / 2**k), math.ceil(edge_budget / 2**k))
        for k in reversed(range(levels))
    ]
    return (*(size for size in sizes[:-1] if size[0] >= min_nodes), sizes[-1])


def at_ladder_size(ladder, graphs: jraph.GraphsTuple, num_agents: int, size):
    """``graphs`` (built for the full size, the ladder's last) at ladder ``size``: as built for
    the full size, else ``trim_budget``."""
    return graphs if size == ladder[-1] else trim_budget(graphs, num_agents, *size)


def on_trimmed_graphs(ladder, graphs: jraph.GraphsTuple, num_agents: int, fn):
    """``fn(graphs trimmed to the smallest ladder size that holds them)`` (``graphs`` as built
    for the full size, the ladder's last); ``fn``'s outputs must not depend on the size."""

    def on_size(*size):
        return fn(at_ladder_size(ladder, graphs, num_agents, size))

    return on_budget_ladder(ladder, *budget_use(graphs, num_agents), on_size)


#: The vmapped axis whose members share each ladder switch's size (``one_size_across``).
_SHARED_SIZE_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shared_size_axis", default=None
)


@contextlib.contextmanager
def one_size_across(axis_name: str):
    """While a function is traced inside, every budget-ladder switch (``on_budget_ladder``) runs
    the members of the vmapped axis ``axis_name`` on one size, the largest any of them needs
    (``lax.pmax``): the switch index is then the same for all, so the switch stays a switch
    under that ``vmap`` instead of a select that runs every size. The numbers do not change
    (only padding differs)."""
    token = _SHARED_SIZE_AXIS.set(axis_name)
    try:
        yield
    finally:
        _SHARED_SIZE_AXIS.reset(token)


def vmap_one_size(fn: Callable, axis_name: str, spmd_axis_name: str | None = None) -> Callable:
    """``jax.vmap(fn)`` over a leading axis named ``axis_name``, traced inside
    ``one_size_across(axis_name)``: each budget-ladder switch runs every member on the size the
    fullest one needs. ``spmd_axis_name``: that of ``jax.vmap`` (the mesh axis the members are
    split over)."""

    def mapped(*args):
        with one_size_across(axis_name):
            return jax.vmap(fn, axis_name=axis_name, spmd_axis_name=spmd_axis_name)(*args)

    return mapped


def on_budget_ladder(ladder, nodes: jax.Array, edges: jax.Array, branch):
    """``branch(node_slots, edge_slots)`` for the smallest ``ladder`` size holding ``nodes`` and
    ``edges`` (``budget_use``), chosen at run time by ``lax.switch``: every size is compiled,
    one runs. The branches must return the same shapes. A one-size ladder calls it directly.

    Under ``vmap`` with a batched size the switch becomes a select that runs every branch, unless
    it is traced inside ``one_size_across`` for that vmap's axis.
    """
    if len(ladder) == 1:
        return branch(*ladder[0])
    too_small = [(node_slots < nodes) | (edge_slots < edges) for node_slots, edge_slots in ladder]
    index = jnp.sum(jnp.stack(too_small), dtype=jnp.int32)
    shared = _SHARED_SIZE_AXIS.get()
    if shared is not None:
        index = jax.lax.pmax(index, shared)
    return jax.lax.switch(index, [functools.partial(branch, *size) for size in ladder])


def worst_case_budgets(num_agents: int, depth: int, radius: int, max_nodes: int):
    """``(nodes, edges)`` per env-step that no placement can exceed."""
    window = (2 * depth * radius + 1) ** 2
    per_graph = min(max_nodes, num_agents, window)
    degree = min(per_graph - 1, (2 * radius + 1) ** 2 - 1)
    return num_agents * per_graph, max(1, num_agents * per_graph * degree)


def calibrate_budgets(
    spec, reset, depth, radius, max_nodes, margin, key, num_envs=64, share_components=False
):
    """Budgets from the ego-graphs of ``num_envs`` random starts: ``margin`` x the largest totals
    seen (at least 8 slots), capped by the worst case. The node budget counts the nodes of
    ego-graphs with two or more nodes (singletons have their own slots).

    Args:
      spec: the env's grid geometry.
      reset: ``key -> state`` with a ``grid`` (the env's reset, params bound).
      depth, radius, max_nodes: ego-graph settings.
      margin: multiplier >= 1 on the observed maximum.
      key: PRNG key of the random starts.
      share_components: as in ``ego_graphs`` (shared ego-graphs take no budget of their own).

    Returns:
      ``(node_budget, edge_budget)``.
    """
    num_agents = jax.eval_shape(reset, key).grid.alive.shape[0]
    worst_nodes, worst_edges = worst_case_budgets(num_agents, depth, radius, max_nodes)

    @jax.jit
    def totals(key):
        # The barrier keeps XLA from constant-folding the all-alive start (slow at 10k agents).
        grid = jax.lax.optimization_barrier(reset(key).grid)
        _, stats = ego_graphs(spec, grid, depth, radius, max_nodes, worst_nodes, worst_edges,
                              share_components=share_components)  # fmt: skip
        return stats.num_nodes - stats.singletons, stats.num_edges

    nodes, edges = jax.vmap(totals)(jax.random.split(key, num_envs))
    node_budget = min(worst_nodes, max(8, int(np.ceil(margin * int(nodes.max())))))
    edge_budget = min(worst_edges, max(8, int(np.ceil(margin * int(edges.max())))))
    return node_budget, edge_budget


def neighbour_graph(
    spec: core.GridSpec, grid: core.Grid, radius: int, centres: jax.Array | None = None
) -> tuple[jraph.GraphsTuple, EgoStats]:
    """The whole agent graph of one environment as one flat ``GraphsTuple`` (the ``mha`` input).

    Node i is agent i (padding where dead); edge slot ``i * K + k`` joins neighbour slot k of
    agent i to i (``K = (2r+1)^2 - 1``), padding where the slot is empty. Same layout as
    ``ego_graphs`` (every node is hop 0 of its own one-node "ego-graph", in the agent-aligned slots,
    but with edges: only the ``mha`` trunk reads this layout), so the losses, the ensembling and
    the masks work unchanged; budgets are exactly ``N`` nodes and ``N * K`` edges,
    so nothing can overflow. Cost O(N x K).

    Args:
      spec: padded grid geometry (``spec.pad >= radius``).
      grid: the current grid.
      radius: graph radius r.
      centres: optional bool[N]: agents whose outputs are used (statistics only).

    Returns:
      ``(graphs, stats)`` with ``B_n = N``, ``B_e = N * K``; ``max_graph_nodes`` is 1 + the
      largest degree.
    """
    table = core.neighbour_table(spec, grid, radius)
    num_agents, slots = table.ids.shape
    agents = jnp.arange(num_agents, dtype=jnp.int32)
    receivers = jnp.where(table.mask, agents[:, None], num_agents).ravel()
    senders = jnp.where(table.mask, table.ids, 0).ravel()
    degree = jnp.sum(table.mask, axis=-1, dtype=jnp.int32)
    is_centre = grid.alive if centres is None else grid.alive & centres
    graphs = jraph.GraphsTuple(
        nodes={
            "agent": jnp.where(grid.alive, agents, num_agents),
            "graph": jnp.where(grid.alive, agents, num_agents),
            "hop": jnp.zeros(num_agents, jnp.int32),
            "copies": grid.alive.astype(jnp.int32),
            "own": grid.alive.astype(jnp.int32),
        },
        edges={"distance": jnp.broadcast_to(table.distance, (num_agents, slots)).ravel()},
        senders=senders,
        receivers=receivers,
        globals=None,
        n_node=jnp.append(jnp.ones(num_agents, jnp.int32), 0),
        n_edge=jnp.append(jnp.full(num_agents, slots, jnp.int32), 0),
    )
    zero = jnp.int32(0)
    stats = EgoStats(
        num_graphs=jnp.sum(is_centre, dtype=jnp.int32),
        num_nodes=jnp.sum(grid.alive, dtype=jnp.int32),
        singletons=zero,
        num_edges=jnp.sum(degree),
        max_graph_nodes=1 + jnp.max(jnp.where(is_centre, degree, 0)),
        truncated_nodes=zero,
        overflow_nodes=zero,
        overflow_edges=zero,
        shared_nodes=zero,
    )
    return graphs, stats
