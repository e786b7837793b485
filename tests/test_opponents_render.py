"""Scripted controllers on hand-built states, and rendering of frames and GIFs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import envs
from envs import core, opponents, render
from envs.opponents import make_controller, nearest_in_window, step_toward
from experiments import render as render_cli


def test_nearest_in_window_prefers_chebyshev_then_euclid():
    window = core.window_displacements(2)
    mask = np.zeros((1, len(window)), bool)
    for target in ([2, 2], [-1, 1], [0, -2]):
        mask[0, np.flatnonzero((window == target).all(-1))] = True
    found, offset = nearest_in_window(jnp.asarray(mask), window)
    assert bool(found[0]) and offset[0].tolist() == [-1, 1]
    found, _ = nearest_in_window(jnp.zeros((1, len(window)), bool), window)
    assert not bool(found[0])


def test_step_toward_takes_the_longer_axis_then_the_other_when_blocked():
    env, _ = envs.make("battle", height=6, width=6, num_agents=2)
    state = env.state_from(jnp.array([[2, 2], [5, 5]]))
    action = step_toward(env.spec, state.grid, jnp.array([[3, 1], [0, 0]]))
    assert action.tolist() == [core.DOWN, core.STAY]
    blocked = env.state_from(jnp.array([[2, 2], [3, 2]]))  # the cell below is taken
    action = step_toward(env.spec, blocked.grid, jnp.array([[3, 1], [0, 0]]))
    assert action.tolist() == [core.RIGHT, core.STAY]


def test_battle_pack_convention_on_a_hand_made_grid():
    from envs.core import LEFT, STAY, UP

    env, _ = envs.make("battle")
    cells = [[0, 0], [0, 1], [1, 0], [1, 1], [3, 2], [4, 2], [0, 5], [6, 7]]
    cells += [[9, c] for c in range(0, 10, 2)] + [[7, 0]]  # 14 agents, away from the rest
    state = env.state_from(jnp.asarray(cells, jnp.int32))
    actions = opponents.pack_actions(env, state.grid).tolist()
    # corner; left blocked; up blocked, left off-grid; both blocked; up free; up taken -> left;
    # top edge -> left; up free
    assert actions[:8] == [STAY, STAY, STAY, STAY, UP, LEFT, LEFT, UP]
    assert make_controller("pack", env)(None, state, None).tolist() == actions


def _strike_by_loops(env, grid, predicted, planned=None) -> list[int]:
    """``strike_actions`` of every agent, one agent, move and enemy at a time (plain Python);
    teammates stand on their cells after their ``planned`` moves (None: where they are)."""
    from envs.core import MOVES, STAY

    pos, alive, team = np.asarray(grid.positions), np.asarray(grid.alive), np.asarray(grid.team)
    ahead = pos + MOVES[np.asarray(predicted)]
    standing = pos if planned is None else pos + MOVES[np.asarray(planned)]
    pack = np.asarray(opponents.pack_actions(env, grid))
    threshold, height, width = env.config.kill_threshold, env.config.height, env.config.width
    occupied = {tuple(pos[j]) for j in range(env.num_agents) if alive[j]}
    chosen = []
    for i in range(env.num_agents):
        enemies = [e for e in range(env.num_agents) if alive[e] and team[e] != team[i]]
        best, best_action = -np.inf, STAY
        for action, move in enumerate(MOVES):
            cell = pos[i] + move
            on_grid = 0 <= cell[0] < height and 0 <= cell[1] < width
            if action != STAY and (not on_grid or tuple(cell) in occupied):
                continue
            beside = [e for e in enemies if np.max(np.abs(cell - ahead[e])) <= 1]
            kills = 0
            for e in beside:
                others = sum(
                    1
                    for j in range(env.num_agents)
                    if j != i and alive[j] and team[j] == team[i]
                    and np.max(np.abs(standing[j] - ahead[e])) <= 1
                )  # fmt: skip
                kills += others + 1 >= threshold
            score = kills - opponents.DEATH_PENALTY * (len(beside) >= threshold)
            score += opponents.PACK_TIE_BREAK * (action == pack[i])
            if score > best:
                best, best_action = score, action
        chosen.append(best_action)
    return chosen


def test_battle_strike_rule_matches_a_loop_over_agents_moves_and_enemies():
    """Both teams' agents (the rule is the same for each team, its enemies the other's)."""
    env, params = envs.make("battle")
    team0 = np.asarray(env.teams) == 0
    scripted = make_controller("scripted", env)
    strike = make_controller("strike", env)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    departed = np.zeros(2, int)
    for step in range(40):  # scripted vs scripted: the teams meet, fight and thin out
        key = jax.random.PRNGKey(step)
        predicted = scripted(key, state, None)
        got = np.asarray(opponents.strike_actions(env, state.grid, predicted))
        np.testing.assert_array_equal(got, np.asarray(strike(key, state, None)))
        if step % 2:  # also an arbitrary prediction, moves off the grid included
            predicted = jax.random.randint(key, predicted.shape, 0, 5)
            got = np.asarray(opponents.strike_actions(env, state.grid, predicted))
        assert got.tolist() == _strike_by_loops(env, state.grid, predicted)
        departs = got != np.asarray(opponents.pack_actions(env, state.grid))
        departed += [np.any(departs[team0]), np.any(departs[~team0])]
        _, state, *_ = env.step(key, state, scripted(key, state, None), params)
    assert np.all(departed >= 5)  # each team's rule departed from pack on several states


def test_battle_strike2_rule_matches_a_loop_with_teammates_on_their_planned_cells():
    """``strike_actions`` with ``planned`` moves against the loop, on arbitrary plans (moves off
    the grid and onto taken cells included) and on ``strike2``'s own (the ``strike`` moves)."""
    env, params = envs.make("battle")
    scripted = make_controller("scripted", env)
    strike, strike2 = make_controller("strike", env), make_controller("strike2", env)
    _, state = env.reset(jax.random.PRNGKey(1), params)
    coordinated = 0
    for step in range(40):
        key = jax.random.PRNGKey(100 + step)
        predicted = scripted(key, state, None)
        planned = strike(key, state, None)
        got = np.asarray(opponents.strike_actions(env, state.grid, predicted, planned))
        np.testing.assert_array_equal(got, np.asarray(strike2(key, state, None)))
        assert got.tolist() == _strike_by_loops(env, state.grid, predicted, planned)
        coordinated += int(np.any(got != np.asarray(planned)))
        arbitrary = jax.random.randint(jax.random.fold_in(key, 1), planned.shape, 0, 5)
        got = np.asarray(opponents.strike_actions(env, state.grid, predicted, arbitrary))
        assert got.tolist() == _strike_by_loops(env, state.grid, predicted, arbitrary)
        _, state, *_ = env.step(key, state, scripted(key, state, None), params)
    assert coordinated >= 3  # the second round changed some agent's move on several states


def _facing_a_holding_enemy(env, own):
    """Team 0 on ``own`` (7 cells); team 1: the enemy X at (1, 4), which holds (the scripted
    rule predicts STAY: an enemy of its is beside it), and six enemies at the bottom left, too
    far to matter after one step -> ``(state, predicted int32[14])``."""
    enemies = [[1, 4], [6, 0], [7, 0], [8, 0], [6, 1], [7, 1], [8, 1]]
    state = env.state_from(jnp.asarray(own + enemies, jnp.int32))
    predicted = make_controller("scripted", env)(None, state, None)
    assert int(predicted[7]) == core.STAY
    return state, predicted


def test_battle_strike2_counts_a_teammate_stepping_in_toward_the_kill():
    from envs.core import LEFT, STAY, UP

    env, _ = envs.make("battle")
    # Team 0: A (0, 4) above the enemy X at (1, 4), which holds; B (0, 6); C (2, 6); D in the
    # corner. ``strike`` (teammates where they stand): only A touches X, so no move makes a
    # third touch and all follow pack: A and B left (both then beside X), C up. Planning again
    # with A and B on those cells, C's left to (2, 5) is X's third touch.
    own = [[0, 4], [0, 6], [2, 6], [0, 0], [9, 7], [9, 8], [9, 9]]
    state, predicted = _facing_a_holding_enemy(env, own)
    first = opponents.strike_actions(env, state.grid, predicted)
    assert first.tolist()[:4] == [LEFT, LEFT, UP, STAY]
    second = opponents.strike_actions(env, state.grid, predicted, first).tolist()
    assert second[:4] == [LEFT, LEFT, LEFT, STAY]
    assert make_controller("strike2", env)(None, state, None).tolist() == second


def _rollout_by_loops(env, params, key, state, moves=None) -> np.ndarray:
    """Battle's ``rollout`` teacher one team-0 agent and action at a time (plain Python): the
    agent's action replaced in the base joint action (team 0 ``strike``, team 1 scripted), the
    env stepped ``ROLLOUT_HORIZON`` times (the base after the first), the survivors' margin
    compared; the base action is kept unless another scores more. Given ``moves``, they are the
    first step's joint action instead of the base's (``rollout_own``)."""
    scripted = make_controller("scripted", env)
    team0 = np.asarray(env.teams) == 0
    step = jax.jit(env.step_no_reset)

    def base(key, state):
        predicted = scripted(key, state, None)
        return np.where(team0, opponents.strike_actions(env, state.grid, predicted), predicted)

    base_key, rollout_key = jax.random.split(key)
    own = base(base_key, state) if moves is None else np.asarray(moves).copy()
    (played_key,) = jax.random.split(rollout_key, 1)
    chosen = own.copy()
    for agent in np.flatnonzero(team0):
        margins = []
        for action in range(core.NUM_ACTIONS):
            joint, now, over = own.copy(), state, False
            joint[agent] = action
            for step_key in jax.random.split(played_key, opponents.ROLLOUT_HORIZON):
                act_key, env_key = jax.random.split(step_key)
                if not over:
                    _, now, _, terminated, truncated, _ = step(env_key, now, joint, params)
                    over = bool(terminated | truncated)
                joint = base(act_key, now)
            alive = np.asarray(now.grid.alive)
            margins.append(int(alive[team0].sum()) - int(alive[~team0].sum()))
        if max(margins) > margins[own[agent]]:
            chosen[agent] = int(np.argmax(margins))
    return chosen


@pytest.mark.parametrize("kind", ["rollout", "rollout_own"])
def test_battle_rollout_teachers_match_a_loop_over_agents_and_actions(kind):
    """Against a plain loop over agents and actions. ``rollout`` corrects ``strike`` (team 1
    gets the scripted rule's moves); ``rollout_own`` corrects the joint moves it is given
    (``strike``'s with noise; team 1 keeps its given moves) and without moves is ``rollout``.
    Each keeps the move it corrects unless another scores a better margin, and somewhere one
    does."""
    env, params = envs.make("battle", "tiny")
    teacher = jax.jit(make_controller(kind, env))
    rollout = jax.jit(make_controller("rollout", env))
    strike = jax.jit(make_controller("strike", env))
    scripted = jax.jit(make_controller("scripted", env))
    team0 = np.asarray(env.teams) == 0
    _, state = env.reset(jax.random.key(4), params)
    corrections = 0
    for t in range(8):
        key = jax.random.fold_in(jax.random.key(5), t)
        corrected = np.where(team0, strike(key, state, params), scripted(key, state, params))
        moves = None
        if kind == "rollout_own":  # strike's moves, half of team 0's replaced by random ones
            noise_key, coin_key = jax.random.split(jax.random.fold_in(key, 2))
            noise = np.asarray(jax.random.randint(noise_key, (env.num_agents,), 0, 5))
            coin = team0 & np.asarray(jax.random.bernoulli(coin_key, 0.5, (env.num_agents,)))
            corrected = moves = np.where(coin, noise, corrected)
            np.testing.assert_array_equal(np.asarray(teacher(key, state, None)),
                                          np.asarray(rollout(key, state, None)))  # fmt: skip
        labels = np.asarray(teacher(key, state, None if moves is None else jnp.asarray(moves)))
        np.testing.assert_array_equal(labels, _rollout_by_loops(env, params, key, state, moves))
        np.testing.assert_array_equal(labels[~team0], np.asarray(corrected)[~team0])
        corrections += int((labels != np.asarray(corrected))[team0].sum())
        _, state, *_ = env.step_no_reset(jax.random.fold_in(key, 1), state, labels, params)
    assert corrections > 0


@pytest.mark.parametrize("kind", ["rollout", "rollout_own"])
def test_battle_rollout_teachers_refuse_large_worlds(kind):
    env, _ = envs.make("battle", "tiny", num_agents=opponents.ROLLOUT_MAX_AGENTS + 2)
    with pytest.raises(ValueError, match=rf"'num_agents'=66: Battle's {kind} teacher plays the "
                                         r"whole world once per agent and action"):  # fmt: skip
        make_controller(kind, env)


def test_battle_strike_rule_on_a_hand_made_grid():
    from envs.core import LEFT, STAY, UP

    env, _ = envs.make("battle")
    # Team 0: A (0, 3) and B (0, 5) beside the enemy X at (1, 4), which holds (an enemy is
    # beside it); C (1, 6) two cells right of X; D in the corner; three far off at the bottom
    # right. Team 1: X, and six enemies at the bottom left, too far to matter after one step.
    own = [[0, 3], [0, 5], [1, 6], [0, 0], [9, 7], [9, 8], [9, 9]]
    state, predicted = _facing_a_holding_enemy(env, own)
    pack = opponents.pack_actions(env, state.grid).tolist()
    actions = opponents.strike_actions(env, state.grid, predicted).tolist()
    # C: pack goes up (no kill); left to (1, 5) is X's third touch. A and B: no move of theirs
    # makes a third touch, so pack's left. D: pack's stay in the corner.
    assert pack[:4] == [LEFT, LEFT, UP, STAY]
    assert actions[:4] == [LEFT, LEFT, LEFT, STAY]
    # X (team 1) would die where it stands (three of team 0 beside it after their predicted
    # moves: A and B stay, C steps left), so it steps away: down is free and safe.
    assert actions[7] == core.DOWN


def test_battle_rules_are_battle_only_and_jungle_rules_jungle_only():
    env, _ = envs.make("jungle")
    allowed = "choose one of: random, scripted, claim, informed, lookahead$"
    for kind in ("strike", "rollout"):
        with pytest.raises(ValueError, match=f"'{kind}' for jungle; {allowed}"):
            make_controller(kind, env)
    env, _ = envs.make("battle")
    for kind in ("claim", "informed", "lookahead"):
        with pytest.raises(ValueError, match=f"'{kind}' for battle; choose one of: random, scr"):
            make_controller(kind, env)


def test_jungle_informed_rule_on_hand_built_states():
    env, params = envs.make("jungle", "tiny")
    informed = jax.jit(make_controller("informed", env))
    # 5x5, food at (2, 2). Agent 0 sees it diagonally; agent 1 touches it; agent 2 sits in the
    # corner with agent 3 diagonal to it, so both its moves would stand next to agent 3.
    state = env.state_from(jnp.asarray([[1, 1], [3, 2], [4, 4], [3, 3]]), jnp.asarray([[2, 2]]))
    seen = set()
    for seed in range(32):
        actions = informed(jax.random.PRNGKey(seed), state, params).tolist()
        assert actions[0] in (core.DOWN, core.RIGHT)  # onto a food side
        assert actions[1] == actions[2] == core.STAY  # beside food; both moves touch agent 3
        seen.add(actions[0])
    assert seen == {core.DOWN, core.RIGHT}  # ties are broken at random
    distance = opponents.food_distance(jnp.asarray([[0, 0]]), jnp.asarray([[2, 2]]))
    # Steps to a cell beside (2, 2) after up, down, left, right, stay (off-grid cells too).
    assert distance.tolist() == [[4, 2, 4, 2, 3]]
    large, _ = envs.make("jungle", "n1k")
    for kind in ("informed", "lookahead"):  # every agent looks at every food: O(N x F)
        with pytest.raises(ValueError, match=rf"'num_agents'={large.num_agents}: .*at most 128"):
            make_controller(kind, large)


def test_jungle_lookahead_teacher_plans_over_informed():
    env, params = envs.make("jungle", "tiny")
    teacher = jax.jit(make_controller("lookahead", env))
    planner = jax.jit(opponents.informed_lookahead(
        env, params, opponents.LOOKAHEAD_CANDIDATES, opponents.LOOKAHEAD_HORIZON))  # fmt: skip
    informed = make_controller("informed", env)
    only_base = jax.jit(opponents.informed_lookahead(env, params, 1, 4))  # one candidate: base's
    # 5x5, food at (2, 2): agents 0 and 1 would both like the side (1, 2).
    state = env.state_from(jnp.asarray([[1, 1], [0, 2], [2, 4], [4, 2]]), jnp.asarray([[2, 2]]))
    for seed in range(8):
        key = jax.random.PRNGKey(seed)
        np.testing.assert_array_equal(teacher(key, state, None), planner(key, state))
        base_key = jax.random.split(key, 4)[0]  # the key the planner hands its base
        np.testing.assert_array_equal(only_base(key, state), informed(base_key, state, params))


def _claim_by_loops(env, state, noise) -> list[int]:
    """``claim_actions`` of every alive agent (-1 for dead ones), one agent, assignment, cell and
    move at a time (plain Python: a breadth-first search for the steps)."""
    import itertools
    from collections import deque

    from envs.core import MOVES, STAY

    grid = state.grid
    pos, alive, hp = (np.asarray(a) for a in (grid.positions, grid.alive, state.hp))
    height, width, radius = env.config.height, env.config.width, env.config.sight_radius
    food = {tuple(f) for f in np.asarray(state.food).tolist()}
    live = [j for j in range(env.num_agents) if alive[j]]
    occupied = {tuple(pos[j]) for j in live}
    k, scale, steps = opponents.CLAIM_NEAREST, 1000, 4 * radius + 2

    def on_grid(c):
        return 0 <= c[0] < height and 0 <= c[1] < width

    def nearest(d):  # Chebyshev, then Euclidean distance, then row-major order
        return max(abs(d[0]), abs(d[1])) * 1000 + d[0] ** 2 + d[1] ** 2, d[0], d[1]

    def flat(c):
        return (c[0] + env.spec.pad) * env.spec.padded_width + c[1] + env.spec.pad

    def seen(i, c):
        return max(abs(c[0] - pos[i][0]), abs(c[1] - pos[i][1])) <= radius

    def claimed(i):
        """The side agent i claims, or None."""
        me = tuple(pos[i])
        agents = sorted((tuple(pos[j]) for j in live if seen(i, pos[j])),
                        key=lambda c: nearest((c[0] - me[0], c[1] - me[1])))[:k]  # fmt: skip
        sides = [(r, c) for r in range(me[0] - radius, me[0] + radius + 1)
                 for c in range(me[1] - radius, me[1] + radius + 1)
                 if on_grid((r, c)) and (r, c) not in food
                 and any((r + dr, c + dc) in food and seen(i, (r + dr, c + dc))
                         for dr, dc in core.ADJACENT4.tolist())]  # fmt: skip
        sides = sorted(sides, key=lambda c: nearest((c[0] - me[0], c[1] - me[1])))[:k]
        best, best_cost = None, None
        for order in itertools.permutations(range(k)):
            cost = sum(
                (abs(a[0] - sides[s][0]) + abs(a[1] - sides[s][1]) - scale) * scale
                + int(opponents.pair_tie_break(flat(a), flat(sides[s])))
                for a, s in zip(agents, order, strict=False) if s < len(sides)
            )  # fmt: skip
            if best_cost is None or cost < best_cost:
                best_cost, best = cost, order[0]
        return sides[best] if best < len(sides) else None

    def steps_from(i, target):
        """Steps to ``target`` from every cell of agent i's window through food-free cells."""
        distance, queue = {target: 0}, deque([target])
        while queue:
            cell = queue.popleft()
            for dr, dc in core.ADJACENT4.tolist():
                nxt = (cell[0] + dr, cell[1] + dc)
                if (seen(i, nxt) and on_grid(nxt) and nxt not in food and nxt not in distance
                        and distance[cell] < steps):  # fmt: skip
                    distance[nxt] = distance[cell] + 1
                    queue.append(nxt)
        return distance

    targets = {i: claimed(i) for i in live}
    walks = {i: steps_from(i, targets[i]) for i in live if targets[i] is not None}
    actions = {i: STAY for i in live}
    for _ in range(1 + opponents.CLAIM_ROUNDS):
        planned = {j: tuple(pos[j] + MOVES[actions[j]]) for j in live}
        chosen = {}
        for i in live:
            harm = opponents.CLAIM_LAST_HP_HARM if hp[i] <= 1 else opponents.CLAIM_HARM
            best, best_action = -np.inf, STAY
            for action, move in enumerate(MOVES.tolist()):
                cell = (pos[i][0] + move[0], pos[i][1] + move[1])
                if action != STAY and (not on_grid(cell) or cell in food or cell in occupied):
                    continue
                others = [planned[j] for j in live if j != i]
                score = -walks[i].get(cell, steps + 1) if i in walks else 0.0
                score -= harm * sum(abs(o[0] - cell[0]) + abs(o[1] - cell[1]) == 1 for o in others)
                score -= opponents.CLAIM_CLASH * (action != STAY and cell in others)
                score += opponents.CLAIM_HOLD * (action == STAY) + float(noise[i, action])
                if score > best:
                    best, best_action = score, action
            chosen[i] = best_action
        actions = chosen
    return [actions.get(i, -1) for i in range(env.num_agents)]


@pytest.mark.parametrize(
    ("overrides", "steps"),
    [(dict(), 12), (dict(height=7, width=7, num_agents=8, num_food=2), 12),
     (dict(height=12, width=12, num_agents=24, num_food=6, sight_radius=3), 6)],
)  # fmt: skip
def test_jungle_claim_rule_matches_a_loop_over_agents_assignments_and_moves(overrides, steps):
    """On games the rule plays itself (tiny; Table 1's 8 agents; a crowd where agents see more
    than ``CLAIM_NEAREST`` agents and sides): the same actions as the loop, agents dying on the
    way included."""
    env, params = envs.make("jungle", **overrides)
    claim = jax.jit(make_controller("claim", env))
    claim_actions = jax.jit(functools.partial(opponents.claim_actions, env))
    step_env = jax.jit(env.step_no_reset)
    deaths = 0
    for game in range(3):
        _, state = env.reset(jax.random.PRNGKey(game), params)
        for step in range(steps):
            key = jax.random.PRNGKey(100 * game + step)
            noise = opponents.CLAIM_NOISE * jax.random.uniform(key, (env.num_agents, 5))
            got = np.asarray(claim_actions(state, noise))
            np.testing.assert_array_equal(got, np.asarray(claim(key, state, None)))
            expected = _claim_by_loops(env, state, np.asarray(noise, np.float64))
            alive = np.asarray(state.grid.alive)
            assert got[alive].tolist() == [a for a in expected if a >= 0]
            _, state, _, _, _, _ = step_env(key, state, got, params)
        deaths += int(np.sum(~np.asarray(state.grid.alive)))
    if env.num_agents > 8:
        assert deaths > 0  # the crowd exercised dead agents


def test_jungle_claim_rule_on_hand_made_states():
    """Food at (2, 2) on the 5x5 world. A holds on the north side, B at (0, 3), C at (4, 0), D
    at (4, 4): the best matching gives B the east side (2 steps, by (1, 3), beside A), C the
    west, D the south. With 3 hp B takes the step beside A (0.75 of harm against a step); on
    its last hp it waits. E on the east side, F at (1, 4): F gets the north side (2 steps; the
    east one would cost E 2 steps for F's 1) and steps left, beside E."""
    env, _ = envs.make("jungle")
    food = jnp.array([[2, 2]])
    state = env.state_from(jnp.array([[1, 2], [0, 3], [4, 0], [4, 4]]), food)
    quiet = jnp.zeros((4, 5))
    claim_actions = jax.jit(functools.partial(opponents.claim_actions, env))
    claims, slot = opponents.claim_targets(env, state.grid)
    window = core.window_displacements(env.config.sight_radius)
    sides = np.asarray(state.grid.positions) + window[np.asarray(slot)]
    assert np.all(np.asarray(claims)) and sides.tolist() == [[1, 2], [2, 3], [2, 1], [3, 2]]
    actions = claim_actions(state, quiet).tolist()
    assert actions[0] == core.STAY and actions[1] == core.DOWN
    last_hp = state.replace(hp=jnp.array([3, 1, 3, 3]))
    assert claim_actions(last_hp, quiet).tolist()[1] == core.STAY
    state = env.state_from(jnp.array([[2, 3], [1, 4], [0, 0], [4, 0]]), food)
    actions = claim_actions(state, quiet).tolist()
    assert actions[0] == core.STAY and actions[1] == core.LEFT


def test_battle_scripted_moves_toward_the_nearest_enemy_and_holds_when_adjacent():
    env, params = envs.make("battle", height=10, width=10, num_agents=4)
    # Team 0 = agents 0, 1; team 1 = agents 2, 3.
    state = env.state_from(jnp.array([[0, 0], [5, 5], [0, 3], [5, 6]]))
    actions = make_controller("scripted", env)(jax.random.key(0), state, params)
    assert actions[0] == core.RIGHT  # enemy 2 is three cells to the right
    assert actions[1] == core.STAY and actions[3] == core.STAY  # adjacent: engaged


def test_jungle_scripted_walks_to_food_and_stays_beside_it():
    env, params = envs.make("jungle", height=7, width=7, num_agents=2)
    state = env.state_from(jnp.array([[6, 3], [3, 2]]), jnp.array([[3, 3]]))
    actions = make_controller("scripted", env)(jax.random.key(0), state, params)
    assert actions.tolist() == [core.UP, core.STAY]


def test_deception_adversary_heads_for_the_landmark_home_agents_crowd():
    env, params = envs.make(
        "deception", height=9, width=9, num_home=2, num_adversaries=1, num_landmarks=2
    )
    # Home agents gather at the decoy (0,8); the adversary at (4,4) sees both landmarks.
    state = env.state_from(jnp.array([[0, 7], [1, 8], [4, 4]]), jnp.array([[8, 0], [0, 8]]))
    actions = make_controller("scripted", env)(jax.random.key(0), state, params)
    assert actions[2] in (core.UP, core.RIGHT)


def test_deception_adversary_out_of_sight_does_not_follow_the_target_on_ties():
    """With no landmark in sight and no home agent near any, the adversary's choice must not
    depend on which landmark is the target (targets come first in ``state.landmarks``)."""
    env, params = envs.make(
        "deception", height=9, width=9, num_home=2, num_adversaries=1, num_landmarks=2,
        sight_radius=1,
    )  # fmt: skip
    positions = jnp.array([[8, 0], [8, 1], [4, 4]])
    controller = make_controller("scripted", env)
    chosen = []
    for landmarks in ([[0, 0], [8, 8]], [[8, 8], [0, 0]]):  # the target first: either one
        state = env.state_from(positions, jnp.array(landmarks))
        chosen.append(int(controller(jax.random.key(0), state, params)[2]))
    assert chosen[0] == chosen[1] and chosen[0] in (core.UP, core.LEFT)


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        (scenario, kind)
        for scenario in envs.SCENARIOS
        for kind in opponents.scenario_controllers(scenario)
    ],
)
def test_controllers_give_valid_actions_under_jit(scenario, kind):
    env, params = envs.make(scenario, "n100")
    _, state = jax.jit(env.reset)(jax.random.key(0), params)
    actions = jax.jit(make_controller(kind, env))(jax.random.key(1), state, params)
    assert actions.shape == (env.num_agents,) and actions.dtype == jnp.int32
    assert np.all((np.asarray(actions) >= 0) & (np.asarray(actions) < env.num_actions))


def test_unknown_controller_is_refused():
    env, _ = envs.make("battle")
    allowed = "random, scripted, pack, strike, strike2, rollout, rollout_own$"
    with pytest.raises(
        ValueError, match=f"unknown controller 'smart' for battle; choose one of: {allowed}"
    ):
        make_controller("smart", env)


def test_frame_draws_teams_items_and_targets_where_they_are():
    env, _ = envs.make("deception", height=4, width=5)
    state = env.state_from(jnp.array([[0, 0], [0, 1], [3, 4]]), jnp.array([[2, 2], [1, 3]]))
    image = render.frame(env, state, cell_px=10)
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8

    def centre(row, col):
        return tuple(image[row * 10 + 5, col * 10 + 5])

    assert centre(0, 0) == render.TEAM_COLOURS[0] and centre(0, 1) == render.TEAM_COLOURS[0]
    assert centre(3, 4) == render.TEAM_COLOURS[1]
    assert centre(2, 2) == render.TARGET_COLOUR and centre(1, 3) == render.ITEM_COLOUR
    assert centre(3, 0) == render.BACKGROUND


def test_render_command_writes_a_gif_of_the_whole_episode(tmp_path):
    out = render_cli.main(render_cli.Args(scenario="jungle", out=str(tmp_path / "j.gif")))
    gif = Image.open(out)
    assert gif.n_frames >= 2 and gif.size == (480, 480)
