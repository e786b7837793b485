"""Non-learning controllers: ``random``, a ``scripted`` heuristic per scenario (SPEC section 3) and
Battle's team conventions, ``pack``, ``strike`` and ``strike2``, and Jungle's ``claim``,
``informed`` and ``lookahead`` rules; and Battle's ``rollout``, a kickstarting teacher only.

A controller is ``policy(key, state, params) -> int32[N]`` giving an action to *every* agent; the
caller keeps the actions of the team(s) it controls. Everything is O(N x sight window): no agent
looks further than ``sight_radius`` except through O(N) team summaries (centroids, landmark counts);
Jungle's ``informed`` and ``lookahead`` see every food (O(N x F)), so they refuse worlds of more
than ``FOOD_SEARCH_MAX_AGENTS`` agents.

* Jungle: walk to the nearest food in sight and stay beside it; random walk when none is in sight.
  ``claim`` (``claim_actions``): each agent matches the agents and food sides it sees (the best
  assignment of the nearest few) and walks its own side's shortest way, steering clear of cells
  beside where the others plan to step (two rounds of planning): 0.958 of the oracle bound on
  ``tiny``, above every learner here, and a teacher for ``TrainConfig.kickstart``.
  ``informed``: the best greedy move toward the nearest food side, wherever the food is, avoiding
  cells beside others in a 5x5 window (0.772). ``lookahead``: the centralised rollout planner of
  ``envs.planner`` over ``informed`` (0.984): it sees the whole map and plays the env forward, so
  it is no decentralised controller but a privileged teacher for kickstarting.
* Battle: move toward the nearest enemy in sight and hold once adjacent; with none in sight, move
  toward the enemy team's centroid. ``pack``: up while the cell above is free, else left while
  the cell to the left is free, else hold (the team packs into a block). ``strike``: ``pack`` plus
  one step of foresight (``strike_actions``): +71.5 terminal reward x100 against ``scripted``.
  ``strike2``: ``strike`` planned again with every teammate standing where its ``strike`` move
  takes it (one round of coordination): +79.3, the strongest local rule here. Either is a teacher
  for ``TrainConfig.kickstart``. ``rollout`` (``battle_rollout``): each team-0 agent alone plays
  its 5 actions two steps forward on the env's own dynamics (``envs.planner.agentwise_policy``
  over ``strike``) and keeps the best: +97.4. It sees the whole map and costs O(N^2) per step,
  so it is no controller of a team but a privileged teacher of team 0 against ``scripted``
  (``TEACHERS_ONLY``), for at most ``ROLLOUT_MAX_AGENTS`` agents. ``rollout_own`` is ``rollout``
  over the learner's own joint move: it corrects the learner's moves instead of ``strike``'s.
* Deception: adversaries head for the landmark with the most home agents within distance 2 (the
  best one in sight, nearest on ties, else the best overall, ties broken by cell, never by which
  landmarks are targets) and hold within distance 1 of it; home agents walk to
  the nearest target in sight and stand on it (random walk when none is in sight).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs import core
from envs.base import GridEnv, require
from envs.battle import survivors_margin
from envs.deception import ADVERSARY, HOME
from envs.planner import JointPolicy, RolloutValue, agentwise_policy, lookahead_policy

Policy = Callable[[jax.Array, object, object], jax.Array]
#: ``strike``'s preference for ``pack``'s action over another move with as many kills.
PACK_TIE_BREAK = 0.5
#: ``strike``'s penalty on a cell where its agent would die (above any number of kills).
DEATH_PENALTY = 100.0
#: ``claim``: agents and food sides matched per agent (its nearest; every assignment is tried).
CLAIM_NEAREST = 4
#: ``claim``'s move score per other agent planned beside the cell (one hp of harm; below the 1 a
#: step nearer the side is worth, so two agents never wait on each other), and with one hp left.
CLAIM_HARM, CLAIM_LAST_HP_HARM = 0.75, 30.0
#: ``claim``'s penalty on entering a cell another agent plans to enter, its bonus for staying,
#: and the scale of its random tie-break.
CLAIM_CLASH, CLAIM_HOLD, CLAIM_NOISE = 1.0, 0.05, 0.01
#: ``claim``'s rounds of replanning with every other agent on its planned cell.
CLAIM_ROUNDS = 2
#: A pair's matching cost: its distance x ``_PAIR_SCALE`` plus a fixed pseudo-random tie-break
#: below it, from the pair's absolute cells, so agents that see the same agents and sides pick
#: the same matching; every matched pair first earns ``_PAIR_SCALE**2``.
_PAIR_SCALE = 1000
#: ``informed``'s move scores: reaching a food side, standing next to another agent (harm),
#: holding.
FOOD, HARM, HOLD = 10.0, 8.0, 0.5
#: ``informed``'s score of a move into a cell that is not free, and its random tie-break's scale.
BLOCKED_MOVE, GREEDY_NOISE = -100.0, 0.1
#: Most agents Jungle's ``informed`` and ``lookahead`` rules play (each agent looks at every food).
FOOD_SEARCH_MAX_AGENTS = 128
#: Jungle's ``lookahead`` teacher: joint actions scored per step, and the steps each is played.
LOOKAHEAD_CANDIDATES, LOOKAHEAD_HORIZON = 64, 12
#: Battle's ``rollout`` teacher: the steps each agent's try is played (the try, then ``strike``),
#: and the most agents it plans for (each try plays the whole world: O(N^2) per step).
ROLLOUT_HORIZON, ROLLOUT_MAX_AGENTS = 2, 64


def random_policy(env: GridEnv) -> Policy:
    """Uniform random actions for every agent."""

    def policy(key, state, params):
        return jax.random.randint(key, (env.num_agents,), 0, env.num_actions, dtype=jnp.int32)

    return policy


def step_toward(spec: core.GridSpec, grid: core.Grid, offset: jax.Array) -> jax.Array:
    """Greedy move along ``offset int32[N, 2]`` -> ``int32[N]`` actions.

    Moves along the longer axis; if that cell is not free, along the other axis; STAY on a zero
    offset or when both are blocked.
    """
    free = spec.gather(grid.occupancy, grid.positions, core.ADJACENT4) == core.EMPTY  # [N, 4]
    dr, dc = offset[:, 0], offset[:, 1]
    vertical = jnp.where(dr < 0, core.UP, core.DOWN)
    horizontal = jnp.where(dc < 0, core.LEFT, core.RIGHT)
    rows_first = jnp.abs(dr) >= jnp.abs(dc)
    first = jnp.where(rows_first, vertical, horizontal)
    second = jnp.where(rows_first, horizontal, vertical)
    first_ok = jnp.where(rows_first, dr != 0, dc != 0)
    second_ok = jnp.where(rows_first, dc != 0, dr != 0)

    def is_free(action):
        return jnp.take_along_axis(free, action[:, None], axis=1)[:, 0]

    return jnp.where(
        first_ok & is_free(first),
        first,
        jnp.where(second_ok & is_free(second), second, core.STAY),
    ).astype(jnp.int32)


def nearest_in_window(mask: jax.Array, displacements: np.ndarray):
    """Nearest True slot of ``mask bool[N, W]`` over a window of ``displacements int[W, 2]``.

    Nearest by Chebyshev, then Euclidean distance, then slot order.

    Returns:
      ``(found bool[N], offset int32[N, 2])``.
    """
    d = np.asarray(displacements)
    rank = np.argsort(core.nearest_first(d), kind="stable")
    best = jnp.argmin(jnp.where(mask, jnp.asarray(rank), np.iinfo(np.int32).max), axis=-1)
    return jnp.any(mask, axis=-1), jnp.asarray(d)[best]


def _team_centroids(grid: core.Grid, num_teams: int) -> jax.Array:
    """Mean position of each team's alive agents -> ``float32[num_teams, 2]``."""
    weight = grid.alive.astype(jnp.float32)
    total = jax.ops.segment_sum(grid.positions * weight[:, None], grid.team, num_teams)
    count = jax.ops.segment_sum(weight, grid.team, num_teams)
    return total / jnp.maximum(count, 1.0)[:, None]


def _random_moves(key: jax.Array, n: int) -> jax.Array:
    return jax.random.randint(key, (n,), 0, core.NUM_ACTIONS, dtype=jnp.int32)


def jungle_scripted(env: GridEnv) -> Policy:
    """Jungle's scripted controller: stay beside food, else step toward the nearest food in sight,
    else a random move -> ``policy(key, state, params) -> int[N]`` actions."""
    sight = core.window_displacements(env.config.sight_radius)

    def policy(key, state, params):
        grid = state.grid
        food = env.spec.gather(grid.terrain, grid.positions, sight) >= core.ITEM
        found, offset = nearest_in_window(food, sight)
        beside = jnp.any(
            env.spec.gather(grid.terrain, grid.positions, core.ADJACENT4) >= core.ITEM, axis=-1
        )
        toward = step_toward(env.spec, grid, offset)
        action = jnp.where(found, toward, _random_moves(key, env.num_agents))
        return jnp.where(beside, core.STAY, action)

    return policy


def _window_neighbours(window: np.ndarray) -> np.ndarray:
    """Slot of each window slot's 4 neighbours, -1 off the window -> ``int[W, 4]`` (static)."""
    slot = {tuple(d): k for k, d in enumerate(window.tolist())}
    return np.array([[slot.get((r + dr, c + dc), -1) for dr, dc in core.ADJACENT4.tolist()]
                     for r, c in window.tolist()])  # fmt: skip


def pair_tie_break(agent_cell: jax.Array, side_cell: jax.Array) -> jax.Array:
    """``claim``'s fixed tie-break of an agent-side pair from their flat cells -> in
    ``[0, _PAIR_SCALE)``: not additive over cells (an additive one sums to the same total for
    every matching of the same agents and sides), and within int32 for any grid."""
    prime = _PAIR_SCALE - 3
    return (agent_cell * 31 + side_cell) % prime * ((side_cell * 17 + agent_cell) % prime) % prime


def claim_targets(env: GridEnv, grid: core.Grid) -> tuple[jax.Array, jax.Array]:
    """The food side each agent claims: the best matching of the ``CLAIM_NEAREST`` nearest agents
    (itself first) to the ``CLAIM_NEAREST`` nearest food sides in its sight window.

    A food side is a free-of-food on-grid cell 4-adjacent to a food cell, both in the window. The
    matching takes as many pairs as it can, then the least total Manhattan distance, ties broken
    by ``pair_tie_break`` (every ``CLAIM_NEAREST!`` assignment is scored). O(N x window).

    Returns:
      ``(claims bool[N], slot int32[N])``: whether the agent got a side, and the side's slot in
      the ``sight_radius`` window (``core.window_displacements``).
    """
    spec, k = env.spec, CLAIM_NEAREST
    window = core.window_displacements(env.config.sight_radius)
    beside = _window_neighbours(window)
    rank = np.empty(len(window), np.int32)
    rank[core.nearest_first(window)] = np.arange(len(window))
    terrain = spec.gather(grid.terrain, grid.positions, window)
    food = terrain >= core.ITEM
    food_beside = jnp.any(food[:, np.maximum(beside, 0)] & (beside >= 0), axis=-1)
    side = (terrain == core.PLAIN) & food_beside
    agents = spec.gather(grid.occupancy, grid.positions, window) >= 0

    def nearest(mask):
        _, slots = jax.lax.top_k(jnp.where(mask, -rank, -len(window)), k)
        return slots, jnp.take_along_axis(mask, slots, axis=1)

    agent_slot, agent_seen = nearest(agents)
    side_slot, side_seen = nearest(side)
    disp = jnp.asarray(window)
    distance = jnp.abs(disp[agent_slot][:, :, None] - disp[side_slot][:, None]).sum(-1)
    here, offsets = spec.flat(grid.positions)[:, None], jnp.asarray(spec.offsets(window))
    tie = pair_tie_break((here + offsets[agent_slot])[:, :, None],
                         (here + offsets[side_slot])[:, None, :])  # fmt: skip
    pair = agent_seen[:, :, None] & side_seen[:, None, :]
    cost = jnp.where(pair, (distance - _PAIR_SCALE) * _PAIR_SCALE + tie, 0)  # [N, k, k]
    assignments = np.array(list(itertools.permutations(range(k))))  # [k!, k]
    best = jnp.argmin(cost[:, np.arange(k), assignments].sum(-1), axis=-1)
    own = jnp.asarray(assignments[:, 0])[best]  # the agent itself is its nearest agent
    claims = pair[jnp.arange(own.shape[0]), 0, own]
    return claims, jnp.take_along_axis(side_slot, own[:, None], axis=1)[:, 0]


def window_distances(passable: jax.Array, target: jax.Array, beside: np.ndarray, steps: int):
    """Steps from every window slot to ``target int32[N]`` through ``passable bool[N, W]`` slots
    of the window, ``steps`` at most (farther or unreachable: ``steps + 1``) -> ``int32[N, W]``.
    ``beside int[W, 4]``: each slot's neighbours (-1 off the window)."""
    far = steps + 1
    start = jnp.where(jnp.arange(passable.shape[1]) == target[:, None], 0, far)

    def relax(_, distance):
        through = jnp.where(beside >= 0, distance[:, np.maximum(beside, 0)], far).min(-1) + 1
        return jnp.where(passable, jnp.minimum(distance, through), far)

    return jax.lax.fori_loop(0, steps, relax, start)


def claim_actions(env: GridEnv, state, noise: jax.Array) -> jax.Array:
    """Jungle's ``claim`` rule -> ``int32[N]``, every agent's action.

    Each agent walks to the food side it claims (``claim_targets``) by the shortest way through
    its sight window (``window_distances``, food and the grid's edge block it; up to 4r + 2
    steps). It scores each move to a free cell (and staying) as minus the steps left from there,
    minus ``CLAIM_HARM`` (``CLAIM_LAST_HP_HARM`` on its last hp) per other agent planned 4-adjacent
    to the cell, minus ``CLAIM_CLASH`` when another plans to enter it, plus ``CLAIM_HOLD`` for
    staying and ``noise float32[N, 5]``; an agent with no side scores only the last four. The
    others are first planned on their cells, then ``CLAIM_ROUNDS`` times on the cells of their
    last plan. O(N x sight window).
    """
    spec, grid = env.spec, state.grid
    radius = env.config.sight_radius
    window = core.window_displacements(radius)
    beside = _window_neighbours(window)
    moves = jnp.asarray(core.MOVES)
    move_slot = np.array([np.flatnonzero((window == m).all(-1))[0] for m in core.MOVES])
    claims, target = claim_targets(env, grid)
    passable = spec.gather(grid.terrain, grid.positions, window) == core.PLAIN
    steps_left = window_distances(passable, target, beside, 4 * radius + 2)[:, move_slot]
    goal = jnp.where(claims[:, None], -steps_left, 0)
    harm = jnp.where(state.hp <= 1, CLAIM_LAST_HP_HARM, CLAIM_HARM)[:, None]
    free = spec.gather(grid.occupancy, grid.positions, core.MOVES) == core.EMPTY
    allowed = free | (jnp.arange(core.NUM_ACTIONS) == core.STAY)
    hold = CLAIM_HOLD * (jnp.arange(core.NUM_ACTIONS) == core.STAY)
    around = (core.MOVES[:, None, :] + core.ADJACENT4[None]).reshape(-1, 2)  # [5 x 4, 2]

    def plan(actions: jax.Array) -> jax.Array:
        """Every agent's best move with the others on the cells ``actions`` take them to."""
        planned = grid.positions + moves[actions]
        count = jnp.zeros(spec.num_cells, jnp.int32).at[spec.flat(planned)].add(grid.alive)
        own = planned - grid.positions  # this agent's own planned cell, to leave out
        beside_cell = spec.gather(count, grid.positions, around).reshape(-1, 5, 4)
        own_beside = jnp.all(jnp.asarray(around)[None] == own[:, None], -1).reshape(-1, 5, 4)
        nearby = jnp.sum(beside_cell - own_beside, axis=-1)
        own_entry = jnp.all(moves[None] == own[:, None], -1)
        clash = (spec.gather(count, grid.positions, core.MOVES) - own_entry) > 0
        clash = clash & (jnp.arange(core.NUM_ACTIONS) != core.STAY)
        score = goal - harm * nearby - CLAIM_CLASH * clash + hold + noise
        return jnp.argmax(jnp.where(allowed, score, -jnp.inf), axis=-1).astype(jnp.int32)

    actions = plan(jnp.full(grid.alive.shape, core.STAY, jnp.int32))
    for _ in range(CLAIM_ROUNDS):
        actions = plan(actions)
    return actions


def jungle_claim(env: GridEnv) -> Policy:
    """Jungle's ``claim`` rule as a controller (``claim_actions``, ties broken with ``key``)."""

    def policy(key, state, params):
        shape = (env.num_agents, core.NUM_ACTIONS)
        return claim_actions(env, state, CLAIM_NOISE * jax.random.uniform(key, shape))

    return policy


def move_scores(env, state, radius: int) -> jax.Array:
    """Greedy scores of the 5 actions from a ``(2 radius + 1)^2`` window -> ``float32[N, 5]``.

    A move scores ``FOOD`` when its cell is 4-adjacent to food in the window, ``-HARM`` when it is
    4-adjacent to another agent in the window, ``-HOLD`` for staying and ``BLOCKED_MOVE`` when its
    cell is not free. ``radius`` 1 is the learner's view; 2 sees every cell next to a move's cell.
    """
    grid = state.grid
    window = core.window_displacements(radius)
    slot = {tuple(d): k for k, d in enumerate(window.tolist())}
    occupancy = env.spec.gather(grid.occupancy, grid.positions, window)
    food = env.spec.gather(grid.terrain, grid.positions, window) >= core.ITEM
    others = (occupancy >= 0).at[:, slot[(0, 0)]].set(False)
    scores = []
    for move in map(tuple, core.MOVES.tolist()):
        held = move == (0, 0)
        free = (
            jnp.ones(grid.positions.shape[0], bool)
            if held
            else occupancy[:, slot[move]] == core.EMPTY
        )
        beside = [
            slot[c]
            for c in ((move[0] + dr, move[1] + dc) for dr, dc in core.ADJACENT4.tolist())
            if c in slot
        ]
        touches_food = jnp.any(food[:, beside], axis=-1)
        harmed = jnp.any(others[:, [k for k in beside if k != slot[(0, 0)]]], axis=-1)
        score = FOOD * touches_food - HARM * harmed - (HOLD if held else 0.0)
        scores.append(jnp.where(free, score, BLOCKED_MOVE))
    return jnp.stack(scores, axis=-1)


def food_distance(positions: jax.Array, food: jax.Array) -> jax.Array:
    """Manhattan steps from each action's cell to the nearest cell beside food -> ``int32[N, 5]``
    (0 = touching food; O(N x F), for the small presets)."""
    cells = positions[:, None, :] + jnp.asarray(core.MOVES)[None]
    return jnp.min(jnp.abs(cells[:, :, None, :] - food[None, None]).sum(-1), axis=-1) - 1


def informed_actions(env: GridEnv, state, noise: jax.Array) -> jax.Array:
    """Jungle's ``informed`` rule with tie-break ``noise float32[N, 5]`` -> ``int32[N]``: the
    best of ``move_scores`` in a 5x5 window less 2 per step from the nearest food side, which it
    knows wherever the food is (more than a learner sees)."""
    distance = food_distance(state.grid.positions, state.food)
    scores = move_scores(env, state, radius=2) - 2.0 * distance + noise
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def jungle_informed(env: GridEnv) -> Policy:
    """Jungle's ``informed`` rule as a controller (``informed_actions``, ties broken with
    ``key``); refuses worlds of more than ``FOOD_SEARCH_MAX_AGENTS`` agents."""
    require(env.num_agents <= FOOD_SEARCH_MAX_AGENTS, "num_agents", env.num_agents,
            f"Jungle's informed and lookahead rules look at every food (O(N x F)); "
            f"use at most {FOOD_SEARCH_MAX_AGENTS} agents")  # fmt: skip

    def policy(key, state, params):
        shape = (env.num_agents, core.NUM_ACTIONS)
        return informed_actions(env, state, GREEDY_NOISE * jax.random.uniform(key, shape))

    return policy


def informed_lookahead(env: GridEnv, params, candidates: int, horizon: int) -> JointPolicy:
    """The centralised planner (``envs.planner.lookahead_policy``) over ``informed``, each rollout
    scored by the team's summed reward -> ``policy(key, state) -> int32[N]``."""
    base = functools.partial(jungle_informed(env), params=params)
    team_reward = lambda final, rewards: jnp.sum(rewards)
    return lookahead_policy(env, params, base, team_reward, candidates, horizon)


def jungle_lookahead(env: GridEnv) -> Policy:
    """Jungle's ``lookahead`` teacher: ``informed_lookahead`` with ``LOOKAHEAD_CANDIDATES`` and
    ``LOOKAHEAD_HORIZON`` (0.984 of the oracle bound on ``tiny``; about 1.5 s per 32 games on 2
    CPU cores). Privileged - it sees the whole map and plays the env forward - so a teacher only:
    the student it kickstarts acts on its own ego-graphs."""
    plan = informed_lookahead(env, env.default_params(), LOOKAHEAD_CANDIDATES, LOOKAHEAD_HORIZON)
    return lambda key, state, params: plan(key, state)


def battle_scripted(env: GridEnv, hold_when_adjacent: bool = True) -> Policy:
    """Battle's scripted rule; ``hold_when_adjacent=False`` keeps stepping at the nearest enemy
    once beside it (a reference, ``experiments.battle_reference``'s ``charge``)."""
    sight = core.window_displacements(env.config.sight_radius)

    def policy(key, state, params):
        grid = state.grid
        ids = core.window_agents(env.spec, grid, sight)
        enemy = (ids >= 0) & (grid.team[jnp.maximum(ids, 0)] != grid.team[:, None])
        found, offset = nearest_in_window(enemy, sight)
        centroid = _team_centroids(grid, 2)[1 - grid.team]
        offset = jnp.where(
            found[:, None], offset, jnp.round(centroid - grid.positions).astype(jnp.int32)
        )
        engaged = found & (jnp.max(jnp.abs(offset), axis=-1) <= 1) & hold_when_adjacent
        return jnp.where(engaged, core.STAY, step_toward(env.spec, grid, offset))

    return policy


def deception_scripted(env: GridEnv) -> Policy:
    """Deception's scripted controllers -> ``policy(key, state, params) -> int[N]`` actions.

    Home agents step toward the nearest target in sight (else a random move); adversaries head for
    the landmark most crowded by home agents (in sight, else over the map) and hold within 1 of it.
    """
    sight = core.window_displacements(env.config.sight_radius)

    def policy(key, state, params):
        grid = state.grid
        # Home agents within distance 2 of each landmark (O(L x 25)), and the best overall.
        crowd = env.team_counts(grid, state.landmarks, 2)[:, HOME]
        # Ties go to the landmark on the first cell in row-major order, not the first landmark:
        # targets come first in ``state.landmarks``, and adversaries must not learn which they are.
        cell = env.spec.flat(state.landmarks)
        best_overall = state.landmarks[jnp.argmax(crowd * env.spec.num_cells - cell)]
        # Adversaries: the most crowded landmark in sight (nearest on ties), else the best overall.
        seen = env.spec.gather(state.landmark_index, grid.positions, sight)
        score = jnp.where(seen >= 0, crowd[jnp.maximum(seen, 0)], -1)
        found, offset = nearest_in_window(score == jnp.max(score, axis=-1, keepdims=True), sight)
        found &= jnp.max(score, axis=-1) >= 0
        offset = jnp.where(found[:, None], offset, best_overall - grid.positions)
        hold = jnp.max(jnp.abs(offset), axis=-1) <= 1
        adversary = jnp.where(hold, core.STAY, step_toward(env.spec, grid, offset))
        # Home agents: the nearest target in sight.
        targets = env.spec.gather(grid.terrain, grid.positions, sight) == core.TARGET
        target_found, target_offset = nearest_in_window(targets, sight)
        home = jnp.where(
            target_found,
            step_toward(env.spec, grid, target_offset),
            _random_moves(key, env.num_agents),
        )
        return jnp.where(grid.team == ADVERSARY, adversary, home)

    return policy


def pack_actions(env: GridEnv, grid: core.Grid) -> jax.Array:
    """The ``pack`` convention: up while the cell above is on the grid and free, else left while
    the cell to the left is, else stay -> ``int32[N]``."""
    free = env.spec.gather(grid.occupancy, grid.positions, core.ADJACENT4) == core.EMPTY
    row, col = grid.positions[:, 0], grid.positions[:, 1]
    up = (row > 0) & free[:, core.UP]
    left = (col > 0) & free[:, core.LEFT]
    return jnp.where(up, core.UP, jnp.where(left, core.LEFT, core.STAY)).astype(jnp.int32)


def strike_actions(
    env: GridEnv, grid: core.Grid, predicted: jax.Array, planned: jax.Array | None = None
) -> jax.Array:
    """Battle's ``strike`` rule: ``pack`` plus one step of foresight -> ``int32[N]``, every agent's.

    Every agent assumes each enemy takes its ``predicted int32[N]`` action (the caller's
    prediction, e.g. the scripted rule) and each teammate takes its ``planned int32[N]`` action
    (None: every teammate stays). It scores its moves to free cells (and staying): +1 per
    predicted enemy beside the cell that would then have ``kill_threshold`` of its team beside
    it, ``-DEATH_PENALTY`` when ``kill_threshold`` predicted enemies are beside the cell,
    ``+PACK_TIE_BREAK`` for ``pack``'s action; it takes the best. It reads predicted enemies
    within distance 2 of the agent and teammates within distance 3 (4 with ``planned``, plus
    what their planned moves read): a local rule, though the prediction may be the opponent's
    own rule. O(N x 45) gathers on the padded maps per team.
    """
    spec, threshold = env.spec, env.config.kill_threshold
    moves = jnp.asarray(core.MOVES)
    if planned is None:
        planned = jnp.full(grid.team.shape, core.STAY, jnp.int32)
    ahead = grid.positions + moves[predicted]
    standing = grid.positions + moves[planned]
    around = core.window_displacements(1)

    def cells_map(cells: jax.Array, team: int, counted: jax.Array) -> jax.Array:
        """int32[cells]: ``team``'s alive agents with ``counted``, each on its ``cells`` entry."""
        mine = grid.alive & (grid.team == team) & counted
        return jnp.zeros(spec.num_cells, jnp.int32).at[spec.flat(cells)].add(mine)

    def enemies_near(cells, counted, centres, where: np.ndarray) -> jax.Array:
        """int32[N, K]: each agent's enemies with ``counted bool[N]`` standing (on their
        ``cells int32[N, 2]``) at its ``centres int32[N, 2]`` plus each of ``where int[K, 2]``."""
        by_team = [
            spec.gather(cells_map(cells, team, counted), centres, where)
            for team in range(env.num_teams)
        ]
        own = jnp.stack(by_team)[grid.team, jnp.arange(grid.team.shape[0])]
        return sum(by_team) - own

    everyone = jnp.ones_like(grid.alive)
    # For every agent, its enemies standing (after their planned moves) beside its predicted
    # cell: seen from the enemy's side, the agents of this team that would touch it.
    touched_by = jnp.sum(enemies_near(standing, everyone, ahead, around), axis=-1)
    # Candidate a's cell plus a 3x3 offset d, for the 5 x 9 pairs (static); an enemy on such a
    # cell beside this (alive) agent's own planned cell (so in its ``touched_by``) needs
    # ``threshold`` touches in all, any other ``threshold - 1`` besides this agent.
    reach = (core.MOVES[:, None, :] + around[None, :, :]).reshape(-1, 2)
    pairs = (-1, core.NUM_ACTIONS, around.shape[0])
    beside_planned = jnp.max(jnp.abs(reach[None] - moves[planned][:, None]), axis=-1) <= 1
    touched_now = (beside_planned & grid.alive[:, None]).reshape(pairs)

    def near_enemies(counted: jax.Array) -> jax.Array:
        """int32[N, 5, 9]: each agent's counted enemies on the 9 cells around each candidate."""
        return enemies_near(ahead, counted, grid.positions, reach).reshape(pairs)

    kills = jnp.sum(
        jnp.where(touched_now, near_enemies(touched_by >= threshold),
                  near_enemies(touched_by >= threshold - 1)), axis=-1
    )  # fmt: skip
    dies = jnp.sum(near_enemies(everyone), axis=-1) >= threshold
    free = spec.gather(grid.occupancy, grid.positions, core.MOVES) == core.EMPTY
    allowed = free | (jnp.arange(core.NUM_ACTIONS) == core.STAY)
    pack = jnp.arange(core.NUM_ACTIONS) == pack_actions(env, grid)[:, None]
    score = kills - DEATH_PENALTY * dies + PACK_TIE_BREAK * pack
    return jnp.argmax(jnp.where(allowed, score, -jnp.inf), axis=-1).astype(jnp.int32)


def battle_pack(env: GridEnv) -> Policy:
    """Battle's ``pack`` convention as a controller (``pack_actions``)."""

    def policy(key, state, params):
        return pack_actions(env, state.grid)

    return policy


def battle_strike(env: GridEnv) -> Policy:
    """Battle's ``strike`` rule as a controller: ``strike_actions`` with every agent's move
    predicted by the scripted rule."""
    scripted = battle_scripted(env)

    def policy(key, state, params):
        return strike_actions(env, state.grid, scripted(key, state, params))

    return policy


def battle_strike2(env: GridEnv) -> Policy:
    """Battle's ``strike2`` rule as a controller: ``strike_actions`` with every agent's move
    predicted by the scripted rule and every teammate taking its own ``strike`` move (one round
    of coordination: a teammate stepping beside an enemy counts toward its kill)."""
    scripted = battle_scripted(env)

    def policy(key, state, params):
        predicted = scripted(key, state, params)
        planned = strike_actions(env, state.grid, predicted)
        return strike_actions(env, state.grid, predicted, planned)

    return policy


def survivors_margin_value(env: GridEnv) -> RolloutValue:
    """A Battle rollout's value for team 0: its survivors minus team 1's at the rollout's end,
    ``float32[]`` (the planners' ``value``)."""
    team0 = jnp.asarray(env.teams) == 0
    return lambda final, rewards: survivors_margin(final.grid.alive, team0).astype(jnp.float32)


def _battle_agentwise(env: GridEnv, name: str) -> JointPolicy:
    """``agentwise_policy`` for Battle's team 0 over ``strike`` (team 1 on the scripted rule),
    ``ROLLOUT_HORIZON`` steps scored by the survivors' margin: ``plan(key, state, moves=None)``.
    Refuses worlds of more than ``ROLLOUT_MAX_AGENTS`` agents, naming ``name``."""
    require(env.num_agents <= ROLLOUT_MAX_AGENTS, "num_agents", env.num_agents,
            f"Battle's {name} teacher plays the whole world once per agent and action "
            f"(O(N^2) per step); use at most {ROLLOUT_MAX_AGENTS} agents")  # fmt: skip
    scripted = battle_scripted(env)
    team0 = jnp.asarray(env.teams) == 0

    def base(key, state):
        predicted = scripted(key, state, None)
        return jnp.where(team0, strike_actions(env, state.grid, predicted), predicted)

    planned = np.flatnonzero(env.teams == 0)
    margin = survivors_margin_value(env)
    return agentwise_policy(env, env.default_params(), base, margin, ROLLOUT_HORIZON, planned)


def battle_rollout(env: GridEnv) -> Policy:
    """Battle's ``rollout`` teacher: each team-0 agent alone tries its 5 actions while its team
    plays ``strike`` and team 1 the scripted rule, plays each ``ROLLOUT_HORIZON`` steps on the
    env's own dynamics and keeps the one with the best survivors' margin
    (``envs.planner.agentwise_policy``): +97.4 terminal reward x100 against ``scripted`` on
    ``tiny``. Privileged - it sees the whole map, knows the scripted rule and plays the env
    forward - so a teacher only (team 0's, against the scripted team; team 1's entries are the
    scripted rule's); refuses worlds of more than ``ROLLOUT_MAX_AGENTS`` agents."""
    plan = _battle_agentwise(env, "rollout")
    return lambda key, state, params: plan(key, state)


def battle_rollout_own(env: GridEnv) -> Policy:
    """Battle's ``rollout_own`` teacher: ``rollout`` over the learner's own joint move.

    Its third argument is the joint move just played, ``int32[N]`` (team 0's the learner's, team
    1's the scripted rule's; the actor passes it: ``MOVE_TEACHERS``). Each team-0 agent tries its
    5 actions against the others' moves for one step, then every agent plays ``strike`` or the
    scripted rule for ``ROLLOUT_HORIZON - 1`` more, and the agent keeps its own move unless
    another scores a strictly better survivors' margin. Its label is the learner's own move
    except where that foresight finds a better one, so a kickstarting cross-entropy to it pulls
    toward those corrections alone in expectation (a move sampled from the policy itself has an
    expected score gradient of 0): it does not pull a student with its own style back to
    ``strike``, as ``rollout`` does. Without moves (None) it is ``rollout``. Privileged and
    O(N^2) like ``rollout``: a teacher only."""
    plan = _battle_agentwise(env, "rollout_own")
    return lambda key, state, moves: plan(key, state, moves)


_SCRIPTED = {"jungle": jungle_scripted, "battle": battle_scripted, "deception": deception_scripted}
#: Each scenario's own rules, beside ``random`` and ``scripted``.
_RULES = {"battle": {"pack": battle_pack, "strike": battle_strike, "strike2": battle_strike2},
          "jungle": {"claim": jungle_claim, "informed": jungle_informed,
                     "lookahead": jungle_lookahead}}  # fmt: skip
#: Teachers that plan for team 0 against the scripted team: no controller of a team.
_TEACHERS_ONLY = {"battle": {"rollout": battle_rollout, "rollout_own": battle_rollout_own}}
CONTROLLERS = ("random", "scripted", *(kind for rules in _RULES.values() for kind in rules))
#: Kickstarting teachers only (``TrainConfig.kickstart`` with team 0 learning, team 1 scripted).
TEACHERS_ONLY = tuple(kind for rules in _TEACHERS_ONLY.values() for kind in rules)
#: Teachers whose third argument is the joint move just played (``int32[N]``), not parameters.
MOVE_TEACHERS = ("rollout_own",)
#: Controllers and teachers only some scenarios have -> those scenarios.
SCENARIO_CONTROLLERS = {kind: (scenario,) for table in (_RULES, _TEACHERS_ONLY)
                        for scenario, rules in table.items() for kind in rules}  # fmt: skip


def scenario_controllers(scenario: str, kinds=CONTROLLERS) -> tuple[str, ...]:
    """The controller ``kinds`` that ``scenario`` has (``SCENARIO_CONTROLLERS``: ``pack``,
    ``strike`` and ``strike2`` are Battle's, ``claim`` Jungle's; a kind not listed there, e.g.
    ``learn``, is every scenario's)."""
    return tuple(k for k in kinds if scenario in SCENARIO_CONTROLLERS.get(k, (scenario,)))


def make_controller(kind: str, env: GridEnv) -> Policy:
    """The ``kind`` controller (``CONTROLLERS``; ``pack``, ``strike``, ``strike2``: Battle only;
    ``claim``, ``informed``, ``lookahead``: Jungle only) or teacher (``TEACHERS_ONLY``:
    Battle's ``rollout`` and ``rollout_own``) for ``env``'s scenario."""
    if kind == "random":
        return random_policy(env)
    if kind == "scripted":
        return _SCRIPTED[env.name](env)
    rules = {**_RULES.get(env.name, {}), **_TEACHERS_ONLY.get(env.name, {})}
    if kind in rules:
        return rules[kind](env)
    usable = ", ".join(scenario_controllers(env.name, CONTROLLERS + TEACHERS_ONLY))
    raise ValueError(f"unknown controller {kind!r} for {env.name}; choose one of: {usable}")
