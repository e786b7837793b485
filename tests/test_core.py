"""Grid mechanics against plain-Python references on small hand-built and random states."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import core


def battle_env(height=6, width=6, num_agents=4, **overrides):
    return envs.make("battle", height=height, width=width, num_agents=num_agents, **overrides)


def inner_occupancy(env, grid):
    occ = np.asarray(grid.occupancy).reshape(env.spec.padded_height, env.spec.padded_width)
    pad = env.spec.pad
    return occ[pad : pad + env.config.height, pad : pad + env.config.width]


def test_two_agents_targeting_one_cell_one_wins_uniformly():
    env, _ = battle_env(num_agents=2)
    # Agent 0 at (2,1) moves right, agent 1 at (2,3) moves left: both target (2,2).
    state = env.state_from(jnp.array([[2, 1], [2, 3]]))
    actions = jnp.array([core.RIGHT, core.LEFT])
    move = jax.jit(lambda k: core.resolve_moves(k, env.spec, state.grid, actions))
    winners = []
    for seed in range(200):
        result = move(jax.random.key(seed))
        assert int(result.moved.sum()) == 1
        winner = int(np.argmax(np.asarray(result.moved)))
        assert tuple(np.asarray(result.grid.positions[winner])) == (2, 2)
        loser = 1 - winner
        assert tuple(np.asarray(result.grid.positions[loser])) == ((2, 1), (2, 3))[loser]
        assert inner_occupancy(env, result.grid)[2, 2] == winner
        winners.append(winner)
    share = np.mean(winners)
    assert 0.35 < share < 0.65, share  # uniform draw (binomial sd is 0.035)
    # Deterministic for a given key.
    a, b = move(jax.random.key(7)), move(jax.random.key(7))
    np.testing.assert_array_equal(a.grid.positions, b.grid.positions)


def test_moving_into_a_cell_occupied_at_step_start_fails_even_if_it_empties():
    env, _ = battle_env(num_agents=2)
    # Agent 0 at (1,1) moves right into agent 1 at (1,2), which itself moves right.
    state = env.state_from(jnp.array([[1, 1], [1, 2]]))
    result = core.resolve_moves(
        jax.random.key(0), env.spec, state.grid, jnp.array([core.RIGHT, core.RIGHT])
    )
    np.testing.assert_array_equal(result.grid.positions, [[1, 1], [1, 3]])
    np.testing.assert_array_equal(result.moved, [False, True])


def test_no_swaps():
    env, _ = battle_env(num_agents=2)
    state = env.state_from(jnp.array([[1, 1], [1, 2]]))
    result = core.resolve_moves(
        jax.random.key(0), env.spec, state.grid, jnp.array([core.RIGHT, core.LEFT])
    )
    np.testing.assert_array_equal(result.grid.positions, [[1, 1], [1, 2]])


@pytest.mark.parametrize(
    ("position", "action"),
    [((0, 2), core.UP), ((5, 2), core.DOWN), ((3, 0), core.LEFT), ((3, 5), core.RIGHT)],
)
def test_map_edge_blocks(position, action):
    env, _ = battle_env(num_agents=2)
    state = env.state_from(jnp.array([position, [4, 4] if position != (4, 4) else [1, 1]]))
    result = core.resolve_moves(
        jax.random.key(0), env.spec, state.grid, jnp.array([action, core.STAY])
    )
    assert tuple(np.asarray(result.grid.positions[0])) == position
    assert not bool(result.moved[0])


def test_food_blocks_movement_but_landmarks_do_not():
    jungle, _ = envs.make("jungle", height=5, width=5, num_agents=1, num_food=1)
    state = jungle.state_from(jnp.array([[2, 1]]), jnp.array([[2, 2]]))
    result = core.resolve_moves(jax.random.key(0), jungle.spec, state.grid, jnp.array([core.RIGHT]))
    np.testing.assert_array_equal(result.grid.positions, [[2, 1]])

    deception, _ = envs.make("deception", num_home=1, num_adversaries=1, num_landmarks=1)
    state = deception.state_from(jnp.array([[2, 1], [5, 5]]), jnp.array([[2, 2]]))
    result = core.resolve_moves(
        jax.random.key(0), deception.spec, state.grid, jnp.array([core.RIGHT, core.STAY])
    )
    np.testing.assert_array_equal(result.grid.positions[0], [2, 2])


def test_out_of_range_actions_stay_and_are_counted():
    env, params = battle_env(num_agents=4)
    state = env.state_from(jnp.array([[0, 0], [2, 2], [4, 4], [5, 0]]))
    actions = jnp.array([core.DOWN, 5, -1, 99])
    _, new_state, _, _, _, info = jax.jit(env.step)(jax.random.key(0), state, actions, params)
    np.testing.assert_array_equal(new_state.grid.positions, [[1, 0], [2, 2], [4, 4], [5, 0]])
    assert int(info["invalid_actions"]) == 3


def test_dead_agents_neither_move_nor_count_as_invalid():
    env, _ = battle_env(num_agents=2)
    state = env.state_from(jnp.array([[1, 1], [3, 3]]))
    grid = core.remove_agents(env.spec, state.grid, jnp.array([True, False]))
    result = core.resolve_moves(jax.random.key(0), env.spec, grid, jnp.array([9, core.UP]))
    assert int(result.invalid_actions) == 0
    np.testing.assert_array_equal(result.grid.positions, [[1, 1], [2, 3]])
    assert inner_occupancy(env, result.grid)[1, 1] == core.EMPTY


@pytest.mark.parametrize("density", [0.1, 0.3, 0.6, 0.9])
def test_occupancy_stays_consistent_over_random_steps(density):
    side = 9
    num_agents = max(2, int(side * side * density) // 2 * 2)
    env, params = envs.make("battle", height=side, width=side, num_agents=num_agents, max_steps=500)
    _, state = jax.jit(env.reset)(jax.random.key(1), params)
    step = jax.jit(env.step)
    key = jax.random.key(2)
    for _ in range(15):
        key, action_key, step_key = jax.random.split(key, 3)
        actions = jax.random.randint(action_key, (num_agents,), 0, 5)
        _, state, _, _, _, _ = step(step_key, state, actions, params)
        occ = inner_occupancy(env, state.grid)
        expected = np.full_like(occ, core.EMPTY)
        for i, ((r, c), alive) in enumerate(
            zip(np.asarray(state.grid.positions), np.asarray(state.grid.alive), strict=True)
        ):
            if alive:
                assert expected[r, c] == core.EMPTY, "two agents on one cell"
                expected[r, c] = i
        np.testing.assert_array_equal(occ, expected)


def brute_force_neighbours(positions, alive, radius):
    n = len(positions)
    result = [set() for _ in range(n)]
    for i, j in itertools.permutations(range(n), 2):
        if alive[i] and alive[j] and np.max(np.abs(positions[i] - positions[j])) <= radius:
            result[i].add(j)
    return result


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("radius", [1, 2])
def test_neighbour_table_matches_brute_force(density, radius):
    height, width = 7, 11
    num_agents = max(2, int(height * width * density) // 2 * 2)
    env, params = envs.make(
        "battle", height=height, width=width, num_agents=num_agents, graph_radius=radius
    )

    @jax.jit
    def random_table(key):
        reset_key, dead_key = jax.random.split(key)
        _, state = env.reset(reset_key, params)
        dead = jax.random.uniform(dead_key, (num_agents,)) < 0.2
        grid = core.remove_agents(env.spec, state.grid, dead)
        return grid, core.neighbour_table(env.spec, grid, radius)

    for trial in range(6):
        grid, table = random_table(jax.random.key(trial))
        positions, alive = np.asarray(grid.positions), np.asarray(grid.alive)
        expected = brute_force_neighbours(positions, alive, radius)
        ids, mask = np.asarray(table.ids), np.asarray(table.mask)
        for i in range(num_agents):
            got = ids[i][mask[i]]
            assert len(set(got)) == len(got)
            assert set(got) == expected[i]
            assert np.all(ids[i][~mask[i]] == core.EMPTY)
            for slot in np.flatnonzero(mask[i]):  # slot displacement and distance are right
                offset = positions[ids[i, slot]] - positions[i]
                np.testing.assert_array_equal(offset, table.displacement[slot])
                assert np.isclose(table.distance[slot], np.linalg.norm(offset))


def python_window(env, state, agent):
    """The observation window of one agent by plain loops over the grid."""
    cfg = env.config
    r = cfg.view_radius
    grid = state.grid
    side = 2 * r + 1
    out = np.zeros((side, side, core.NUM_CHANNELS), np.float32)
    if not bool(grid.alive[agent]):
        return out
    terrain = np.asarray(grid.terrain).reshape(env.spec.padded_height, env.spec.padded_width)
    pos = np.asarray(grid.positions)
    alive = np.asarray(grid.alive)
    team = np.asarray(grid.team)
    my_r, my_c = pos[agent]
    for dr in range(-r, r + 1):
        for dc in range(-r, r + 1):
            rr, cc = my_r + dr, my_c + dc
            cell = out[dr + r, dc + r]
            if not (0 <= rr < cfg.height and 0 <= cc < cfg.width):
                cell[0] = 1
                continue
            kind = terrain[rr + env.spec.pad, cc + env.spec.pad]
            for j in range(len(pos)):
                if alive[j] and j != agent and tuple(pos[j]) == (rr, cc):
                    cell[1 if team[j] == team[agent] else 2] = 1
            cell[3] = kind >= core.ITEM
            cell[4] = kind == core.TARGET and env.reveal_target[team[agent]]
    return out


@pytest.mark.parametrize("scenario", ["jungle", "battle", "deception"])
@pytest.mark.parametrize("view_radius", [1, 2])
def test_observation_windows_match_python_loops(scenario, view_radius):
    env, params = envs.make(scenario, "tiny", view_radius=view_radius)
    _, state = jax.jit(env.reset)(jax.random.key(3), params)
    grid = core.remove_agents(
        env.spec, state.grid, jnp.arange(env.num_agents) == env.num_agents - 1
    )
    state = state.replace(grid=grid)
    obs = env.observe(state)
    side = 2 * view_radius + 1
    windows = np.asarray(obs.features[:, : side * side * core.NUM_CHANNELS]).reshape(
        env.num_agents, side, side, core.NUM_CHANNELS
    )
    for agent in range(env.num_agents):
        np.testing.assert_array_equal(windows[agent], python_window(env, state, agent))
    assert not np.any(np.asarray(obs.features[-1]))  # the dead agent sees nothing


@pytest.mark.parametrize(("height", "width", "count"), [(5, 5, 5), (4, 4, 16), (30, 40, 100)])
def test_sample_cells_distinct_and_uniform(height, width, count):
    sample = jax.jit(lambda k: core.sample_cells(k, height, width, count))
    hits = np.zeros((height, width))
    for seed in range(300):
        cells = np.asarray(sample(jax.random.key(seed)))
        assert cells.shape == (count, 2)
        assert np.all((cells >= 0) & (cells < [height, width]))
        assert len({tuple(c) for c in cells}) == count
        np.add.at(hits, (cells[:, 0], cells[:, 1]), 1)
    expected = 300 * count / (height * width)
    # Every cell is hit about equally often (loose 6-sigma band around the binomial mean).
    p = count / (height * width)
    sd = np.sqrt(300 * p * (1 - p)) if p < 1 else 0
    assert np.all(np.abs(hits - expected) <= 6 * sd + 1e-9)
