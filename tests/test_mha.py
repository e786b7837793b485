"""The mha baseline: whole neighbour graph vs brute force, attention vs a Python loop, masking."""

import math

import jax
import jax.numpy as jnp
import numpy as np

import envs
from qmarl_jax import graph, nmp

POSITIONS = [[1, 1], [1, 2], [2, 3], [4, 4], [5, 5], [0, 7], [7, 1], [6, 2], [2, 2], [4, 5]]
MODEL = nmp.ActorCritic(width=16, num_blocks=2, d_max=math.sqrt(2), trunk="mha", heads=4)


def battle_state(positions, dead=()):
    env, _ = envs.make("battle", height=9, width=9, num_agents=len(positions))
    state = env.state_from(jnp.asarray(positions))
    if dead:
        from envs import core

        dies = jnp.zeros(len(positions), bool).at[jnp.asarray(dead)].set(True)
        state = state.replace(grid=core.remove_agents(env.spec, state.grid, dies))
    return env, state


def test_neighbour_graph_matches_brute_force():
    env, state = battle_state(POSITIONS, dead=(3,))
    graphs, stats = graph.neighbour_graph(env.spec, state.grid, radius=1)
    alive = np.asarray(state.grid.alive)
    real = np.asarray(graphs.receivers) < len(POSITIONS)
    got = sorted(
        (int(s), int(r), round(float(d), 5))
        for s, r, d in zip(graphs.senders[real], graphs.receivers[real],
                           graphs.edges["distance"][real], strict=True)
    )  # fmt: skip
    expected = sorted(
        (j, i, round(math.dist(POSITIONS[i], POSITIONS[j]), 5))
        for i in range(len(POSITIONS))
        for j in range(len(POSITIONS))
        if i != j and alive[i] and alive[j]
        and max(abs(POSITIONS[i][0] - POSITIONS[j][0]), abs(POSITIONS[i][1] - POSITIONS[j][1])) <= 1
    )  # fmt: skip
    assert got == expected
    assert np.asarray(graphs.nodes["agent"]).tolist() == [
        i if alive[i] else len(POSITIONS) for i in range(len(POSITIONS))
    ]
    degree = {i: sum(1 for _, r, _ in expected if r == i) for i in range(len(POSITIONS))}
    assert int(stats.max_graph_nodes) == 1 + max(degree.values())
    assert int(stats.num_edges) == len(expected)


def test_neighbour_attention_matches_a_python_loop():
    rng = np.random.default_rng(0)
    num_nodes, heads, dim = 5, 2, 3
    q, k, v = (rng.normal(size=(num_nodes, heads, dim)).astype(np.float32) for _ in range(3))
    senders = np.array([1, 2, 0, 3, 4, 0], np.int32)
    receivers = np.array([0, 0, 1, 1, 5, 5], np.int32)  # the last two: padding
    out = nmp.neighbour_attention(*map(jnp.asarray, (q, k, v, senders, receivers)))
    for i in range(num_nodes):
        sources = [i] + [int(s) for s, r in zip(senders, receivers, strict=True) if r == i]
        for h in range(heads):
            scores = np.array([q[i, h] @ k[j, h] / math.sqrt(dim) for j in sources])
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            expected = sum(w * v[j, h] for w, j in zip(weights, sources, strict=True))
            np.testing.assert_allclose(out[i, h], expected, rtol=1e-5, atol=1e-6)


def test_mha_ignores_padding_edges_and_dead_agents():
    env, state = battle_state(POSITIONS, dead=(3, 6))
    graphs, _ = graph.neighbour_graph(env.spec, state.grid, radius=1)
    n = len(POSITIONS)
    features = jax.random.normal(jax.random.key(1), (n, 12))
    params = MODEL.init(jax.random.key(0), features, graphs, jnp.zeros(n, jnp.int32))
    logits = MODEL.apply(params, features, graphs, method=MODEL.logits)
    padding = np.asarray(graphs.receivers) >= n
    scrambled = graphs._replace(
        senders=jnp.where(padding, jnp.arange(padding.size) % n, graphs.senders),
        edges={"distance": jnp.where(padding, 7.0, graphs.edges["distance"])},
    )
    dead_changed = features.at[jnp.array([3, 6])].set(100.0)
    other = MODEL.apply(params, dead_changed, scrambled, method=MODEL.logits)
    real = np.asarray(state.grid.alive)
    np.testing.assert_allclose(other[real], logits[real], rtol=1e-5, atol=1e-6)
    # and a live neighbour's features do matter
    moved = MODEL.apply(params, features.at[1].add(1.0), graphs, method=MODEL.logits)
    assert not np.allclose(moved[0], logits[0])


def test_mha_output_depends_on_two_hops_with_two_blocks():
    # A chain 0-1-2 (each 1 cell apart) and a far agent 3: with 2 blocks agent 0 sees agent 2.
    positions = [[1, 1], [1, 2], [1, 3], [6, 6]]
    env, state = battle_state(positions)
    graphs, _ = graph.neighbour_graph(env.spec, state.grid, radius=1)
    features = jax.random.normal(jax.random.key(2), (4, 12))
    params = MODEL.init(jax.random.key(0), features, graphs, jnp.zeros(4, jnp.int32))
    base = MODEL.apply(params, features, graphs, method=MODEL.logits)
    two_hops = MODEL.apply(params, features.at[2].add(1.0), graphs, method=MODEL.logits)
    far = MODEL.apply(params, features.at[3].add(1.0), graphs, method=MODEL.logits)
    assert not np.allclose(two_hops[0], base[0])
    np.testing.assert_allclose(far[0], base[0], rtol=1e-6)
