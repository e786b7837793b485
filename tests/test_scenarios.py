"""One test per scenario rule of SPEC section 3, on hand-built states with known outcomes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import core

S = core.STAY


def run(env, params, state, actions, key=0):
    """One jitted step without auto-reset (so the post-step state can be inspected)."""
    step = jax.jit(env.step_no_reset)
    return step(jax.random.key(key), state, jnp.asarray(actions, jnp.int32), params)


# ---- Jungle ---------------------------------------------------------------------------------
def jungle(num_agents, **overrides):
    return envs.make("jungle", height=5, width=5, num_agents=num_agents, **overrides)


def test_jungle_food_reward_needs_4_adjacency():
    env, params = jungle(3)
    # Food at (2,2). Agent 0 beside it, agent 1 diagonal to it, agent 2 far away.
    state = env.state_from(jnp.array([[2, 1], [1, 3], [4, 4]]), jnp.array([[2, 2]]))
    _, _, reward, terminated, truncated, info = run(env, params, state, [S, S, S])
    np.testing.assert_array_equal(reward, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(info["food_contact"], [True, False, False])
    assert not bool(terminated) and not bool(truncated)


def test_jungle_harm_down_to_death_with_minus_one_on_that_step():
    env, params = jungle(2, start_hp=3)
    # Two agents 4-adjacent, the first also beside the food at (0,2).
    state = env.state_from(jnp.array([[0, 0], [0, 1]]), jnp.array([[0, 2]]))
    rewards, hps = [], []
    for t in range(3):
        obs, state, reward, terminated, _, info = run(env, params, state, [S, S], key=t)
        rewards.append(np.asarray(reward))
        hps.append(np.asarray(state.hp))
    np.testing.assert_array_equal(hps, [[2, 2], [1, 1], [0, 0]])
    # Agent 1 at (0,1) is beside the food at (0,2); agent 0 is not. Death overrides food.
    np.testing.assert_array_equal(rewards, [[0, 1], [0, 1], [-1, -1]])
    np.testing.assert_array_equal(info["deaths"], [True, True])
    assert not np.any(np.asarray(state.grid.alive))
    assert bool(terminated)  # everybody is dead
    assert not np.any(np.asarray(obs.features))  # dead agents observe zeros
    assert not np.any(np.asarray(obs.neighbour_mask))


def test_jungle_harm_counts_non_consecutive_steps_and_not_diagonals():
    env, params = jungle(2, start_hp=2)
    state = env.state_from(jnp.array([[0, 0], [0, 1]]), jnp.array([[4, 4]]))
    _, state, _, _, _, _ = run(env, params, state, [S, S])  # adjacent: hp 1, 1
    _, state, _, _, _, _ = run(env, params, state, [S, core.DOWN])  # now diagonal: no harm
    np.testing.assert_array_equal(state.hp, [1, 1])
    np.testing.assert_array_equal(state.grid.positions[1], [1, 1])
    _, state, reward, _, _, info = run(env, params, state, [core.DOWN, S])  # adjacent again
    np.testing.assert_array_equal(info["deaths"], [True, True])
    np.testing.assert_array_equal(reward, [-1, -1])


def test_jungle_dead_agent_gets_zero_reward_afterwards():
    env, params = jungle(3, start_hp=1)
    state = env.state_from(jnp.array([[0, 0], [0, 1], [4, 1]]), jnp.array([[4, 2]]))
    _, state, reward, terminated, _, _ = run(env, params, state, [S, S, S])
    np.testing.assert_array_equal(reward, [-1, -1, 1])
    assert not bool(terminated)  # agent 2 lives
    # The dead stay dead and get 0 whatever they "do"; their cells are free again.
    _, state, reward, _, _, _ = run(env, params, state, [core.DOWN, core.DOWN, S])
    np.testing.assert_array_equal(reward, [0, 0, 1])
    np.testing.assert_array_equal(state.grid.alive, [False, False, True])


def test_jungle_truncates_at_max_steps_and_auto_resets_keeping_final_observation():
    env, params = jungle(2, max_steps=3)
    state = env.state_from(jnp.array([[0, 0], [4, 4]]), jnp.array([[2, 2]]))
    step = jax.jit(env.step)
    for t in range(3):
        obs, new_state, _, terminated, truncated, info = step(
            jax.random.key(t), state, jnp.array([S, S]), params
        )
        if t < 2:
            assert not bool(truncated) and not bool(terminated)
            state = new_state
    assert bool(truncated) and not bool(terminated)
    assert int(new_state.step) == 0  # a new episode began
    expected_final = env.observe(
        jax.jit(env.step_no_reset)(
            jax.random.split(jax.random.key(2))[0], state, jnp.array([S, S]), params
        )[1]
    )
    np.testing.assert_array_equal(info["final_observation"].features, expected_final.features)
    assert not np.array_equal(info["final_observation"].features, obs.features)


# ---- Battle ---------------------------------------------------------------------------------
FAR_T0, FAR_T1 = [7, 0], [7, 7]


def battle(**overrides):
    return envs.make("battle", height=8, width=8, num_agents=8, **overrides)


def test_battle_three_enemies_kill():
    env, params = battle()
    # Team 0 = agents 0..3, team 1 = 4..7. Agent 0 at (2,2) has 3 enemies around (1,1), (1,3),
    # (3,2); agent 1 at (5,5) has one, agent 7 at (4,5).
    positions = [[2, 2], [5, 5], FAR_T0, [0, 7], [1, 1], [1, 3], [3, 2], [4, 5]]
    state = env.state_from(jnp.array(positions))
    _, state, reward, terminated, _, info = run(env, params, state, [S] * 8)
    np.testing.assert_array_equal(info["deaths"], [True] + [False] * 7)
    assert not bool(terminated)
    np.testing.assert_array_equal(reward, np.zeros(8))
    np.testing.assert_array_equal(info["survivors"], [3, 4])


def test_battle_two_enemies_do_not_kill():
    env, params = battle()
    positions = [[2, 2], FAR_T0, [0, 7], [5, 0], [1, 1], [1, 3], FAR_T1, [5, 7]]
    _, _, _, _, _, info = run(env, params, env.state_from(jnp.array(positions)), [S] * 8)
    assert not np.any(np.asarray(info["deaths"]))


def test_battle_deaths_are_simultaneous():
    env, params = battle()
    # a = agent 0 (team 0) at (1,1) under enemies (0,0),(0,1),(0,2); b = agent 5 (team 1) at (0,1)
    # under team-0 agents (1,0),(1,1),(1,2). Each of the others has only 2 enemies around.
    positions = [[1, 1], [1, 0], [1, 2], FAR_T0, [0, 0], [0, 1], [0, 2], FAR_T1]
    _, state, _, _, _, info = run(env, params, env.state_from(jnp.array(positions)), [S] * 8)
    expected = np.zeros(8, bool)
    expected[[0, 5]] = True
    np.testing.assert_array_equal(info["deaths"], expected)
    np.testing.assert_array_equal(state.grid.alive, ~expected)


def test_battle_tie_gives_zero_at_the_end():
    env, params = battle(max_steps=1)
    positions = [[0, 0], [0, 2], [0, 4], [0, 6], [7, 0], [7, 2], [7, 4], [7, 6]]
    _, _, reward, terminated, truncated, info = run(
        env, params, env.state_from(jnp.array(positions)), [S] * 8
    )
    assert bool(terminated) and not bool(truncated)
    np.testing.assert_array_equal(info["outcome"], [0, 0])
    np.testing.assert_array_equal(reward, np.zeros(8))


def test_battle_terminal_reward_only_at_the_end_and_only_to_survivors():
    env, params = battle(max_steps=3)
    positions = [[2, 2], [5, 0], [5, 2], [5, 4], [1, 1], [1, 3], [3, 2], [7, 7]]
    state = env.state_from(jnp.array(positions))
    for t in range(3):
        _, state, reward, terminated, _, info = run(env, params, state, [S] * 8, key=t)
        if t < 2:
            np.testing.assert_array_equal(reward, np.zeros(8))
            assert not bool(terminated)
    assert bool(terminated)
    np.testing.assert_array_equal(info["outcome"], [-1, 1])
    # Agent 0 died on step 1 and gets 0; its alive team-mates -1; the winners +1.
    np.testing.assert_array_equal(reward, [0, -1, -1, -1, 1, 1, 1, 1])


def test_battle_wipe_out_terminates_early():
    env, params = envs.make(
        "battle", height=5, width=5, num_agents=2, kill_threshold=1, max_steps=50
    )
    state = env.state_from(jnp.array([[2, 2], [2, 3]]))
    _, _, reward, terminated, truncated, info = run(env, params, state, [S, S])
    assert bool(terminated) and not bool(truncated)
    np.testing.assert_array_equal(info["survivors"], [0, 0])
    np.testing.assert_array_equal(reward, [0, 0])  # a tie; and both were alive at the start


def test_battle_optional_shaping():
    env, params = battle(shaping=0.5)
    positions = [[2, 2], [5, 0], [5, 2], [5, 4], [1, 1], [1, 3], [3, 2], [7, 7]]
    _, _, reward, _, _, _ = run(env, params, env.state_from(jnp.array(positions)), [S] * 8)
    # Team 0 lost one of 4: -0.5/4 to every team-0 agent alive at the step's start (the dying one
    # included: it is its last transition), +0.5/4 to team 1.
    np.testing.assert_allclose(reward, [-0.125] * 4 + [0.125] * 4)


def kill_credit_by_loop(positions, teams, deaths, weight):
    """Per-agent kill credit from a plain loop over pairs (the reference)."""
    credit = []
    for i, (ri, ci) in enumerate(positions):
        killed = sum(
            1
            for j, (rj, cj) in enumerate(positions)
            if j != i
            and teams[j] != teams[i]
            and deaths[j]
            and max(abs(ri - rj), abs(ci - cj)) <= 1
        )
        credit.append(weight * (killed - deaths[i]))
    return np.array(credit, np.float32)


def test_battle_kill_credit_pays_the_killers_and_charges_the_fallen():
    env, params = battle(kill_credit=0.5)
    # Agent 0 dies under agents 4, 5, 6 (test_battle_three_enemies_kill); agent 7 beside agent 1
    # takes no part.
    positions = [[2, 2], [5, 5], FAR_T0, [0, 7], [1, 1], [1, 3], [3, 2], [4, 5]]
    _, _, reward, _, _, _ = run(env, params, env.state_from(jnp.array(positions)), [S] * 8)
    np.testing.assert_allclose(reward, [-0.5, 0, 0, 0, 0.5, 0.5, 0.5, 0])


def test_battle_kill_credit_matches_a_loop_over_pairs():
    env, params = envs.make("battle", height=6, width=6, num_agents=16, kill_credit=0.25)
    teams = np.asarray(env.teams)
    total_deaths = 0
    for seed in range(20):
        state = env.reset(jax.random.key(seed), params)[1]
        positions = np.asarray(state.grid.positions).tolist()
        _, _, reward, _, _, info = run(env, params, state, [S] * 16, key=seed)
        deaths = np.asarray(info["deaths"]).astype(int)
        outcome = np.asarray(info["outcome"])[teams]  # nonzero only if a team was wiped out
        expected = kill_credit_by_loop(positions, teams, deaths, 0.25) + outcome
        np.testing.assert_allclose(reward, expected, atol=1e-6)
        total_deaths += deaths.sum()
    assert total_deaths >= 10  # the random starts do kill: the check is not vacuous
    with pytest.raises(ValueError, match="'kill_credit'=-1: must be >= 0"):
        battle(kill_credit=-1)


def test_battle_observe_time_counts_down_to_the_payoff():
    env, params = battle(max_steps=4, observe_time=True)
    assert env.obs_dim == 9 * core.NUM_CHANNELS + 1
    positions = [[0, 0], [0, 2], [0, 4], [0, 6], [7, 0], [7, 2], [7, 4], [7, 6]]
    state = env.state_from(jnp.array(positions), params.max_steps)
    left = [float(env.observe(state).features[0, -1])]
    for t in range(3):
        obs, state, *_ = run(env, params, state, [S] * 8, key=t)
        left.append(float(obs.features[5, -1]))
    np.testing.assert_allclose(left, [1.0, 0.75, 0.5, 0.25])
    shorter = params.replace(max_steps=jnp.int32(2))  # a traced episode length, not the config's
    obs, *_ = run(env, shorter, env.reset(jax.random.key(0), shorter)[1], [S] * 8)
    np.testing.assert_allclose(obs.features[:, -1], 0.5)
    # Off by default: the SPEC's window alone.
    assert battle()[0].obs_dim == 9 * core.NUM_CHANNELS


# ---- Deception ------------------------------------------------------------------------------
TARGET, DECOY = [2, 2], [4, 0]


def deception_outcome(home, adversary, max_steps=1):
    env, params = envs.make("deception", max_steps=max_steps)
    state = env.state_from(jnp.array([home, [0, 5], adversary]), jnp.array([TARGET, DECOY]))
    return run(env, params, state, [S, S, S])


def test_deception_covered_and_not_found():
    _, _, reward, terminated, _, info = deception_outcome(home=TARGET, adversary=[5, 5])
    assert bool(terminated)
    np.testing.assert_array_equal(info["covered"], [True])
    np.testing.assert_array_equal(info["found"], [False])
    np.testing.assert_array_equal(reward, [1, 1, -1])


def test_deception_covered_and_found():
    _, _, reward, _, _, info = deception_outcome(home=TARGET, adversary=[3, 3])
    np.testing.assert_array_equal(info["found"], [True])
    np.testing.assert_array_equal(reward, [-1, -1, 1])


def test_deception_found_but_not_covered():
    _, _, reward, _, _, info = deception_outcome(home=[5, 0], adversary=[1, 2])
    np.testing.assert_array_equal(info["covered"], [False])
    np.testing.assert_array_equal(reward, [-1, -1, 1])


def test_deception_neither():
    _, _, reward, _, _, _ = deception_outcome(home=[5, 0], adversary=[5, 5])
    np.testing.assert_array_equal(reward, [-1, -1, -1])


def test_deception_adversary_at_decoy_is_not_found():
    _, _, reward, _, _, _ = deception_outcome(home=TARGET, adversary=[4, 1])
    np.testing.assert_array_equal(reward, [1, 1, -1])


def test_deception_mean_over_several_targets():
    env, params = envs.make(
        "deception", num_home=2, num_adversaries=1, num_landmarks=2, num_targets=2, max_steps=1
    )
    # Both landmarks are targets: one covered and safe (+1), one uncovered (-1): mean 0.
    state = env.state_from(jnp.array([TARGET, [0, 5], [5, 5]]), jnp.array([TARGET, DECOY]))
    _, _, reward, _, _, _ = run(env, params, state, [S, S, S])
    np.testing.assert_array_equal(reward, [0, 0, -1])


def test_deception_rewards_only_at_the_end():
    _, _, reward, terminated, _, _ = deception_outcome(home=TARGET, adversary=[5, 5], max_steps=2)
    assert not bool(terminated)
    np.testing.assert_array_equal(reward, [0, 0, 0])


def test_deception_only_home_agents_see_the_target():
    env, _ = envs.make("deception")
    state = env.state_from(jnp.array([[2, 1], [0, 5], [2, 3]]), jnp.array([TARGET, DECOY]))
    windows = np.asarray(env.observe(state).features).reshape(3, 3, 3, core.NUM_CHANNELS)
    item, target = core.CHANNELS.index("item"), core.CHANNELS.index("target")
    # The target (2,2) is right of home agent 0 and left of the adversary (agent 2).
    assert windows[0, 1, 2, item] == 1 and windows[0, 1, 2, target] == 1
    assert windows[2, 1, 0, item] == 1 and windows[2, 1, 0, target] == 0


def test_deception_potential_shaping_pays_changes_of_the_payoff_and_telescopes():
    env, params = envs.make("deception", max_steps=4, shaping=0.5)
    # Home agent 0 one step left of the target (2,2); the adversary at (5,5), the decoy at (4,0).
    state = env.state_from(jnp.array([[2, 1], [0, 5], [5, 5]]), jnp.array([TARGET, DECOY]))
    R, U = core.RIGHT, core.UP
    # Step 1: agent 0 covers the target (payoff -1 -> +1): +0.5 * 2 to both home agents. The
    # adversary walks (4,5), (3,5), (3,4): not yet within 1 of the target; step 4 to (3,3):
    # found (payoff +1 -> -1: -0.5 * 2), and the episode ends with the terminal -1.
    plan = [[R, S, U], [S, S, U], [S, S, core.LEFT], [S, S, core.LEFT]]
    rewards = []
    for t, actions in enumerate(plan):
        _, state, reward, terminated, _, _ = run(env, params, state, actions, key=t)
        rewards.append(np.asarray(reward))
    assert bool(terminated)
    rewards = np.stack(rewards)
    np.testing.assert_allclose(rewards[:, 0], [1.0, 0.0, 0.0, -1.0 + -1.0])  # shaped, then -1 end
    np.testing.assert_allclose(rewards[:, 0], rewards[:, 1])  # the team is paid together
    np.testing.assert_allclose(rewards[:, 2], [0, 0, 0, 1])  # adversaries are never shaped
    # Telescoping: shaping * (final payoff - start payoff) on top of the terminal payoff.
    assert rewards[:, 0].sum() == pytest.approx(-1.0 + 0.5 * (-1.0 - -1.0))


def compass_by_loop(config, positions, landmarks, alive, team):
    """The landmark compass from its definition, one agent and one landmark at a time."""
    slots = np.zeros((len(positions), config.landmark_slots, 6), np.float32)
    sizes = [config.num_home, config.num_adversaries]
    for i, (row, col) in enumerate(positions):
        if not alive[i]:
            continue
        in_sight = []
        for index, (lr, lc) in enumerate(landmarks):
            dr, dc = lr - row, lc - col
            if max(abs(dr), abs(dc)) <= config.landmark_sight:
                in_sight.append((max(abs(dr), abs(dc)), dr * dr + dc * dc, dr, dc, index))
        # Nearest first: Chebyshev, then Euclidean, then row-major window order.
        for slot, (_, _, dr, dc, index) in enumerate(sorted(in_sight)[: config.landmark_slots]):
            lr, lc = landmarks[index]
            near = [
                j
                for j, (r, c) in enumerate(positions)
                if j != i and alive[j] and max(abs(r - lr), abs(c - lc)) <= 1
            ]
            teammates = sum(team[j] == team[i] for j in near) / sizes[team[i]]
            opponents = sum(team[j] != team[i] for j in near) / sizes[1 - team[i]]
            is_target = index < config.num_targets and team[i] == 0
            radius = config.landmark_sight
            slots[i, slot] = [1, dr / radius, dc / radius, is_target, teammates, opponents]
    return slots.reshape(len(positions), -1)


def test_deception_landmark_compass_against_a_python_loop():
    env, params = envs.make(
        "deception", height=8, width=9, num_home=4, num_adversaries=2, num_landmarks=5,
        num_targets=2, landmark_sight=3, landmark_slots=3,
    )  # fmt: skip
    window = 9 * core.NUM_CHANNELS
    assert env.obs_dim == window + 3 * 6
    step = jax.jit(env.step_no_reset)
    obs, state = env.reset(jax.random.key(0), params)
    for t in range(30):
        positions, landmarks = np.asarray(state.grid.positions), np.asarray(state.landmarks)
        alive, team = np.asarray(state.grid.alive), np.asarray(state.grid.team)
        expected = compass_by_loop(env.config, positions, landmarks, alive, team)
        np.testing.assert_allclose(obs.features[:, window:], expected, atol=1e-6, err_msg=f"t={t}")
        actions = jax.random.randint(jax.random.key(t + 1), (env.num_agents,), 0, 5)
        obs, state, *_ = step(jax.random.key(100 + t), state, actions, params)


def test_deception_landmark_compass_hand_built():
    env, _ = envs.make("deception", landmark_sight=2, landmark_slots=2)
    # Home agent 0 at (2,1) beside the target (2,2); home agent 1 on the decoy (4,0); the
    # adversary at (2,3). Sight 2 around agent 0 holds both landmarks: target first (nearer).
    state = env.state_from(jnp.array([[2, 1], [4, 0], [2, 3]]), jnp.array([TARGET, DECOY]))
    compass = np.asarray(env.observe(state).features)[:, 9 * core.NUM_CHANNELS :].reshape(3, 2, 6)
    # Target: no other home agent near, the adversary beside it.
    np.testing.assert_allclose(compass[0, 0], [1, 0, 0.5, 1, 0, 1])
    np.testing.assert_allclose(compass[0, 1], [1, 1, -0.5, 0, 0.5, 0])  # decoy, agent 1 on it
    np.testing.assert_allclose(compass[1, 0], [1, 0, 0, 0, 0, 0])  # its decoy: itself not counted
    np.testing.assert_allclose(compass[1, 1], [1, -1, 1, 1, 0.5, 1])  # target, agent 0 beside it
    # The adversary sees the target (one step left) but not that it is one; itself not counted.
    np.testing.assert_allclose(compass[2, 0], [1, 0, -0.5, 0, 0, 0.5])
    np.testing.assert_allclose(compass[2, 1], 0)  # the decoy is 3 columns away: out of sight


def test_deception_observe_time_counts_down_to_the_payoff():
    env, params = envs.make("deception", max_steps=4, observe_time=True)
    obs, state = env.reset(jax.random.key(0), params)
    left = [float(obs.features[0, -1])]
    for t in range(3):
        obs, state, *_ = run(env, params, state, [S, S, S], key=t)
        left.append(float(obs.features[1, -1]))
    np.testing.assert_allclose(left, [1.0, 0.75, 0.5, 0.25])
    shorter = params.replace(max_steps=jnp.int32(2))  # a traced episode length, not the config's
    obs, *_ = run(env, shorter, env.reset(jax.random.key(0), shorter)[1], [S, S, S])
    np.testing.assert_allclose(obs.features[:, -1], 0.5)
