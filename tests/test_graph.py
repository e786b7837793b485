"""Ego-graphs against a brute-force BFS on random small grids."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import core
from qmarl_jax import graph


def brute_force_ego_graphs(positions, alive, depth, radius, max_nodes):
    """Per alive agent: ordered node list [(agent, hop)], and the set of directed agent edges."""
    n = len(positions)

    def linked(i, j):
        return (
            i != j and alive[i] and alive[j] and np.abs(positions[i] - positions[j]).max() <= radius
        )

    result = {}
    for centre in range(n):
        if not alive[centre]:
            continue
        hops = {centre: 0}
        queue = collections.deque([centre])
        while queue:
            u = queue.popleft()
            if hops[u] == depth:
                continue
            for v in range(n):
                if v not in hops and linked(u, v):
                    hops[v] = hops[u] + 1
                    queue.append(v)

        def order(v, centre=centre, hops=hops):
            d = positions[v] - positions[centre]
            return (hops[v], int(d @ d), int(d[0]), int(d[1]))

        nodes = sorted(hops, key=order)[:max_nodes]
        edges = {(u, v) for u, v in itertools.permutations(nodes, 2) if linked(u, v)}
        result[centre] = ([(v, hops[v]) for v in nodes], edges)
    return result


def random_grid(env, params, key, dead_fraction=0.2):
    @jax.jit
    def make(key):
        reset_key, dead_key = jax.random.split(key)
        _, state = env.reset(reset_key, params)
        dead = jax.random.uniform(dead_key, (env.num_agents,)) < dead_fraction
        return core.remove_agents(env.spec, state.grid, dead)

    return make(key)


def unpack(graphs, num_agents):
    """Flat GraphsTuple -> per ego-graph ordered [(agent, hop)] and edge set (agent pairs)."""
    agent = np.asarray(graphs.nodes["agent"])
    owner = np.asarray(graphs.nodes["graph"])
    hop = np.asarray(graphs.nodes["hop"])
    got = {}
    for slot in np.flatnonzero(agent < num_agents):
        got.setdefault(int(owner[slot]), ([], set()))[0].append((int(agent[slot]), int(hop[slot])))
    senders, receivers = np.asarray(graphs.senders), np.asarray(graphs.receivers)
    for e in np.flatnonzero(receivers < len(agent)):
        s, r = senders[e], receivers[e]
        assert owner[s] == owner[r], "an edge crosses ego-graphs"
        got[int(owner[s])][1].add((int(agent[s]), int(agent[r])))
    return got


@pytest.mark.parametrize("density", [0.1, 0.3, 0.6])
@pytest.mark.parametrize(
    ("depth", "radius", "max_nodes"), [(2, 1, 25), (2, 1, 5), (1, 2, 9), (3, 1, 12), (0, 1, 4)]
)
def test_ego_graphs_match_brute_force_bfs(density, depth, radius, max_nodes):
    height, width = 8, 9
    num_agents = max(2, int(height * width * density) // 2 * 2)
    env, params = envs.make(
        "battle", height=height, width=width, num_agents=num_agents, graph_radius=radius
    )
    build = jax.jit(
        lambda grid: graph.ego_graphs(
            env.spec, grid, depth, radius, max_nodes, num_agents * max_nodes, num_agents * 200
        )
    )
    for trial in range(4):
        grid = random_grid(env, params, jax.random.key(trial))
        graphs, stats = build(grid)
        positions, alive = np.asarray(grid.positions), np.asarray(grid.alive)
        expected = brute_force_ego_graphs(positions, alive, depth, radius, max_nodes)
        got = unpack(graphs, num_agents)
        assert set(got) == set(expected)
        for centre, (nodes, edges) in expected.items():
            assert got[centre][0] == nodes  # same agents, same order, same hops
            assert got[centre][1] == edges
        # Padding bookkeeping and statistics.
        n_node = np.asarray(graphs.n_node)
        assert n_node[:-1].tolist() == [
            len(expected.get(i, ([], set()))[0]) for i in range(num_agents)
        ]
        assert np.asarray(graphs.n_edge)[:-1].tolist() == [
            len(expected.get(i, ([], set()))[1]) for i in range(num_agents)
        ]
        assert int(stats.num_nodes) == sum(len(v[0]) for v in expected.values())
        assert int(stats.num_edges) == sum(len(v[1]) for v in expected.values())
        assert int(stats.overflow_nodes) == 0 and int(stats.overflow_edges) == 0
        full = brute_force_ego_graphs(positions, alive, depth, radius, 10**6)
        truncated = sum(len(full[c][0]) - len(expected[c][0]) for c in expected)
        assert int(stats.truncated_nodes) == truncated
        # Edge distances are the Euclidean lengths between the two agents; the ring slot names
        # the displacement from sender to receiver.
        senders, receivers = np.asarray(graphs.senders), np.asarray(graphs.receivers)
        agent = np.asarray(graphs.nodes["agent"])
        ring = core.ring_displacements(radius)
        for e in np.flatnonzero(receivers < len(agent)):
            d = positions[agent[senders[e]]] - positions[agent[receivers[e]]]
            assert np.isclose(graphs.edges["distance"][e], np.linalg.norm(d))
            np.testing.assert_array_equal(ring[int(graphs.edges["ring"][e])], -d)


def test_budgets_drop_nodes_and_edges_only_with_a_count():
    env, params = envs.make("battle", height=6, width=6, num_agents=16)
    n = env.num_agents
    grid = random_grid(env, params, jax.random.key(3), dead_fraction=0.0)
    full, full_stats = graph.ego_graphs(env.spec, grid, 2, 1, 25, 16 * 25, 16 * 200)
    total_nodes, total_edges = int(full_stats.num_nodes), int(full_stats.num_edges)
    singletons = int(full_stats.singletons)
    packed = total_nodes - singletons  # nodes of ego-graphs with >= 2 nodes: these use the budget
    node_budget, edge_budget = packed // 2, total_edges // 3
    graphs, stats = graph.ego_graphs(env.spec, grid, 2, 1, 25, node_budget, edge_budget)
    assert int(stats.num_nodes) == singletons + node_budget
    assert int(stats.overflow_nodes) == packed - node_budget
    assert int(stats.num_edges) == edge_budget
    assert int(stats.num_edges) + int(stats.overflow_edges) <= total_edges
    # The nodes kept are the singleton slots and the first node_budget packed slots of the
    # unconstrained layout.
    slots = n + node_budget
    np.testing.assert_array_equal(graphs.nodes["agent"], full.nodes["agent"][:slots])
    assert np.all(np.asarray(graph.node_mask(graphs))[n:])
    assert int(np.sum(graph.edge_mask(graphs))) == edge_budget
    assert int(graphs.n_node.sum()) == slots and int(graphs.n_edge.sum()) == edge_budget


def test_singleton_ego_graphs_sit_in_agent_aligned_slots():
    env, params = envs.make("battle", height=9, width=9, num_agents=12)
    n = env.num_agents
    build = jax.jit(
        lambda grid, aligned: graph.ego_graphs(
            env.spec, grid, 2, 1, 25, n * 25, n * 200, singleton_slots=aligned
        ),
        static_argnums=1,
    )
    for trial in range(4):
        grid = random_grid(env, params, jax.random.key(10 + trial))
        graphs, stats = build(grid, True)
        reference, _ = build(grid, False)
        positions, alive = np.asarray(grid.positions), np.asarray(grid.alive)
        expected = brute_force_ego_graphs(positions, alive, 2, 1, 25)
        lonely = [c for c, (nodes, _) in expected.items() if len(nodes) == 1]
        agent = np.asarray(graphs.nodes["agent"])
        assert int(stats.singletons) == len(lonely) > 0
        assert agent[:n].tolist() == [i if i in lonely else n for i in range(n)]
        assert np.all(np.asarray(graphs.nodes["hop"])[:n] == 0)
        real = np.asarray(graph.edge_mask(graphs))
        assert np.all(np.asarray(graphs.senders)[real] >= n)
        assert np.all(np.asarray(graphs.receivers)[real] >= n)
        # Both layouts hold the same ego-graphs; the reference keeps the aligned slots empty.
        assert unpack(graphs, n) == unpack(reference, n)
        assert np.all(np.asarray(reference.nodes["agent"])[:n] == n)


def test_padding_graph_and_masks():
    env, params = envs.make("jungle", "tiny")
    grid = random_grid(env, params, jax.random.key(0), dead_fraction=0.0)
    graphs, _ = graph.ego_graphs(env.spec, grid, 2, 1, 16, 64, 256)
    mask = np.asarray(graph.node_mask(graphs))
    assert mask.sum() == int(graphs.n_node[:-1].sum())
    assert np.all(np.asarray(graphs.nodes["graph"])[~mask] == env.num_agents)
    assert int(graphs.n_node[-1]) == env.num_agents + 64 - mask.sum()


def test_depth_beyond_the_grid_border_is_refused():
    env, params = envs.make("battle", sight_radius=1)
    grid = random_grid(env, params, jax.random.key(0))
    with pytest.raises(ValueError, match="invalid depth=3 with graph_radius=1"):
        graph.ego_graphs(env.spec, grid, 3, 1, 16, 100, 100)


@pytest.mark.parametrize(("height", "width", "num_agents"), [(4, 4, 16), (5, 5, 4), (12, 12, 30)])
def test_worst_case_and_calibrated_budgets_bound_the_real_totals(height, width, num_agents):
    num_agents -= num_agents % 2
    env, params = envs.make("battle", height=height, width=width, num_agents=num_agents)
    worst_nodes, worst_edges = graph.worst_case_budgets(num_agents, 2, 1, 16)
    reset = lambda key: env.reset_state(key, params)
    nodes, edges = graph.calibrate_budgets(env.spec, reset, 2, 1, 16, 2.0, jax.random.key(0))
    assert nodes <= worst_nodes and edges <= worst_edges
    build = jax.jit(lambda k: graph.ego_graphs(env.spec, reset(k).grid, 2, 1, 16, worst_nodes,
                                               worst_edges)[1])  # fmt: skip
    for seed in range(5):
        stats = build(jax.random.key(100 + seed))
        assert int(stats.overflow_nodes) == 0 and int(stats.overflow_edges) == 0
        assert int(stats.num_nodes) <= nodes and int(stats.num_edges) <= edges


@pytest.mark.parametrize("dead_fraction", [0.0, 0.6])
def test_trimmed_budget_keeps_every_real_node_and_edge(dead_fraction):
    """``budget_use`` counts the real budget nodes and edges (brute force on the arrays), and
    cutting the padding to exactly that size leaves the same ego-graphs (brute force BFS)."""
    env, params = envs.make("battle", height=9, width=9, num_agents=30)
    n = env.num_agents
    grid = random_grid(env, params, jax.random.key(5), dead_fraction=dead_fraction)
    graphs, stats = graph.ego_graphs(env.spec, grid, 2, 1, 25, n * 25, n * 200)
    nodes, edges = (int(x) for x in graph.budget_use(graphs, n))
    agent = np.asarray(graphs.nodes["agent"])
    assert nodes == int(np.sum(agent[n:] < n)) == int(stats.num_nodes - stats.singletons)
    assert edges == int(stats.num_edges) > 0
    assert nodes < n * 25 and edges < n * 200  # mostly padding: the cut is real
    trimmed = graph.trim_budget(graphs, n, nodes, edges)
    assert trimmed.nodes["agent"].shape == (n + nodes,) and trimmed.senders.shape == (edges,)
    assert int(trimmed.n_node.sum()) == n + nodes and int(trimmed.n_edge.sum()) == edges
    assert bool(np.all(np.asarray(graph.edge_mask(trimmed))))
    expected = brute_force_ego_graphs(np.asarray(grid.positions), np.asarray(grid.alive), 2, 1, 25)
    got = unpack(trimmed, n)
    assert set(got) == set(expected)
    for centre, (node_list, edge_set) in expected.items():
        assert got[centre][0] == node_list and got[centre][1] == edge_set
    # Two steps at once: the use is the larger of the two.
    both = jax.tree.map(lambda a, b: np.stack([a, b]), graphs, trimmed_to_full(trimmed, graphs))
    assert tuple(int(x) for x in graph.budget_use(both, n)) == (nodes, edges)


def trimmed_to_full(trimmed, like):
    """An all-padding step shaped like ``like`` (no real budget nodes or edges)."""
    agent = np.asarray(like.nodes["agent"]).copy()
    n = like.n_node.shape[0] - 1
    agent[n:] = n
    return like._replace(
        nodes={**like.nodes, "agent": agent},
        receivers=np.full_like(np.asarray(like.receivers), agent.shape[0]),
    )


def test_budget_ladder_halves_and_the_switch_picks_the_smallest_fitting_size():
    assert graph.budget_ladder(1000, 3001, 3) == ((250, 751), (500, 1501), (1000, 3001))
    assert graph.budget_ladder(1000, 3001, 1) == ((1000, 3001),)
    assert graph.budget_ladder(1000, 3001, 4, min_nodes=200) == (
        (250, 751), (500, 1501), (1000, 3001),
    )  # fmt: skip
    assert graph.budget_ladder(100, 300, 4, min_nodes=256) == ((100, 300),)
    ladder = graph.budget_ladder(1000, 3001, 3)
    pick = jax.jit(
        lambda nodes, edges: graph.on_budget_ladder(
            ladder, nodes, edges, lambda n, e: jnp.array([n, e])
        )
    )
    for nodes in (0, 249, 250, 251, 600, 1000):
        for edges in (0, 751, 752, 2000, 3001):
            fitting = [size for size in ladder if size[0] >= nodes and size[1] >= edges]
            np.testing.assert_array_equal(pick(nodes, edges), fitting[0])


def test_one_size_across_a_vmapped_axis_runs_one_branch_the_largest_any_member_needs():
    """Under ``vmap`` a batched switch index runs every size; inside ``one_size_across`` for the
    vmap's axis every member gets the size the fullest one needs, and one branch runs."""
    ladder = graph.budget_ladder(1000, 3001, 3)

    def pick(nodes):
        return graph.on_budget_ladder(ladder, nodes, 0, lambda n, e: jnp.array([n, e]))

    def shared(nodes):
        with graph.one_size_across("seeds"):
            return jax.vmap(pick, axis_name="seeds")(nodes)

    for nodes, size in (([10, 300, 20], ladder[1]), ([10, 20, 5], ladder[0]),
                        ([999, 0, 0], ladder[2])):  # fmt: skip
        np.testing.assert_array_equal(jax.jit(shared)(jnp.array(nodes)), [size] * 3)
        # Each member alone: its own smallest size.
        alone = jax.vmap(pick)(jnp.array(nodes))
        np.testing.assert_array_equal(alone, [pick(n) for n in nodes])
    separate = str(jax.make_jaxpr(jax.vmap(pick))(jnp.array([1, 2])))
    together = str(jax.make_jaxpr(shared)(jnp.array([1, 2])))
    assert "select_n" in separate and "cond[" not in separate
    assert "cond[" in together and "pmax" in together


@pytest.mark.parametrize("density", [0.2, 0.4])
def test_shared_ego_graphs_stand_for_exactly_the_brute_force_ones(density):
    """With ``share_components`` every live agent's ego-graph (brute-force BFS) is stored once:
    as its own graph or inside a shared one that marks it ``own`` and has the same nodes and
    edges; a shared graph's ``copies`` is its number of own centres; fewer nodes are stored."""
    env, params = envs.make("battle", height=12, width=12, num_agents=2 * int(72 * density))
    n = env.num_agents
    grid = random_grid(env, params, jax.random.key(7))
    _, plain_stats = graph.ego_graphs(env.spec, grid, 2, 1, 12, n * 25, n * 200)
    shared, stats = graph.ego_graphs(env.spec, grid, 2, 1, 12, n * 25, n * 200,
                                     share_components=True)  # fmt: skip
    expected = brute_force_ego_graphs(np.asarray(grid.positions), np.asarray(grid.alive), 2, 1, 12)
    stored = unpack(shared, n)
    agent, owner = np.asarray(shared.nodes["agent"]), np.asarray(shared.nodes["graph"])
    own, copies = np.asarray(shared.nodes["own"]) == 1, np.asarray(shared.nodes["copies"])
    covered = collections.Counter()
    for g, (node_list, edge_set) in stored.items():
        slots = (owner == g) & (agent < n)
        centres = agent[slots & own].tolist()
        assert set(copies[slots].tolist()) == {len(centres)}
        for c in centres:
            covered[c] += 1
            assert {v for v, _ in expected[c][0]} == {v for v, _ in node_list}
            assert expected[c][1] == edge_set
    assert covered == collections.Counter(expected.keys())
    assert int(stats.shared_nodes) > 0
    assert int(stats.num_nodes) + int(stats.shared_nodes) == int(plain_stats.num_nodes)
    assert (
        int(stats.overflow_nodes)
        == int(stats.truncated_nodes) - int(plain_stats.truncated_nodes)
        == 0
    )


def test_inverse_positions_against_a_python_loop():
    rng = np.random.default_rng(0)
    for entries, size in [(50, 30), (40, 100), (1, 1)]:
        position = rng.permutation(max(entries, size) + 10)[:entries]  # distinct, some >= size
        valid = rng.random(entries) < 0.6
        position = np.where(valid, position, position[np.argmax(valid)])  # invalid ones collide
        expected = np.full(size, entries)
        for i in range(entries):
            if valid[i] and position[i] < size:
                expected[position[i]] = i
        got = graph.inverse_positions(jnp.asarray(position), jnp.asarray(valid), size)
        np.testing.assert_array_equal(got, expected)
