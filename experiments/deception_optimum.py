"""The best any home team can score against the scripted adversary on a small Deception world,
solved exactly.

    python -m experiments.deception_optimum --layouts 200 --json out.json

The scripted adversary is a deterministic function of the positions (``envs.opponents``: it heads
for the landmark with the most home agents within distance 2 and holds beside it), and the only
chance in a Deception step is who wins when agents claim the same free cell (uniform random
priority, ``envs.core.resolve_moves``). So with full information - every position, which
landmark is the target, the adversary's rule - the home team faces a finite Markov decision
process whose state is the cells of all agents: C^N states for C cells and N agents (46,656 on
the tiny 6x6 world with 2 home agents and 1 adversary). Backward induction over the episode's
``max_steps`` moves gives the home team's best expected terminal payoff from every start state:
``V_T = payoff``, ``V_t(s) = max over the home team's joint action of the mean over the N!
priority orders of V_{t+1}(next state)``.

Averaged over the reset's start states (agents on distinct cells off the landmarks, every
arrangement equally likely) and over landmark layouts (``--layouts K`` random ones, or 0 for
every layout), this is an **upper bound** on what any home policy - decentralised, partially
observed or not - can score against this adversary on this world, and the bound is attained by
a centrally planned policy that sees everything. The adversary's actions come from the env's own
scripted controller and the payoff from the env's own ``target_status`` / ``home_payoff``; the
move rules are re-implemented here over whole arrays of states (``next_states``, tested against
``Deception.transition``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from envs.core import MOVES, NUM_ACTIONS, STAY
from envs.deception import HOME
from envs.opponents import make_controller
from experiments.common import machine, write_json
from qmarl_jax.evaluate import summarise

#: Largest transition table (states x home joint actions x priority orders) the solver builds.
MAX_TABLE = 10**8


@dataclasses.dataclass
class Args:
    """Settings of the exact Deception optimum (the tiny preset: the paper's sizes)."""

    preset: str = "tiny"
    height: int | None = None
    """Override the preset's grid height."""
    width: int | None = None
    """Override the preset's grid width."""
    max_steps: int | None = None
    """Override the episode length."""
    layouts: int = 200
    """Random landmark layouts to solve (distinct, drawn with ``seed``); 0 = every layout."""
    rollouts: int = 0
    """Games of the optimal plan to play per layout (random starts) and summarise."""
    seed: int = 0
    json: str | None = None


@dataclasses.dataclass(frozen=True)
class World:
    """The joint-state space of a Deception world: state ``s`` puts agent ``i`` on cell
    ``cells[s, i]`` (row-major cell ids, agent 0 the most significant digit)."""

    env: object
    cells: np.ndarray  # int32[S, N]
    distinct: np.ndarray  # bool[S]: no two agents on one cell
    scripted_and_payoff: object  # the env's scripted actions and home payoff of many states

    @property
    def num_cells(self) -> int:
        return self.env.config.height * self.env.config.width

    @property
    def num_home(self) -> int:
        return int(np.sum(self.env.teams == HOME))

    @functools.cached_property
    def rows_cols(self) -> np.ndarray:
        """int32[S, N, 2] the (row, col) of every agent in every state (computed once)."""
        return np.stack(np.divmod(self.cells, self.env.config.width), axis=-1)

    def index(self, cells: np.ndarray) -> np.ndarray:
        """The state ids of ``cells int[..., N]``."""
        digits = self.num_cells ** np.arange(cells.shape[-1] - 1, -1, -1)
        return np.sum(cells * digits, axis=-1)


def make_world(env) -> World:
    """Every joint state of ``env``'s agents; raises if the transition table would be too large."""
    cfg = env.config
    num_cells, n = cfg.height * cfg.width, env.num_agents
    home = int(np.sum(env.teams == HOME))
    table = num_cells**n * NUM_ACTIONS**home * math.factorial(n)
    if table > MAX_TABLE:
        raise ValueError(
            f"a {cfg.height}x{cfg.width} world with num_agents={n} (num_home={home}) needs a "
            f"{table:.2e}-entry transition table (> {MAX_TABLE:.0e}): use a smaller world"
        )
    cells = np.stack(np.meshgrid(*[np.arange(num_cells)] * n, indexing="ij"), axis=-1).reshape(
        -1, n
    )
    distinct = np.array([len(set(row)) == n for row in cells.tolist()])
    return World(env, cells.astype(np.int32), distinct, _scripted_and_payoff(env))


def _scripted_and_payoff(env):
    """A jitted ``(positions int32[S, N, 2], landmarks int32[L, 2]) -> (the scripted actions
    int32[S, N], the home payoff float32[S])`` of ``env``: compiled once per state count."""
    params, scripted = env.default_params(), make_controller("scripted", env)

    def one(positions, landmarks):
        state = env.state_from(positions, landmarks)
        actions = scripted(jax.random.PRNGKey(0), state, params)
        return actions, env.home_payoff(*env.target_status(state.grid, state.landmarks))

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def state_arrays(world: World, landmarks: np.ndarray):
    """``(adversary actions int32[S, N], home payoff float32[S])`` of every state, from the env's
    scripted controller and payoff (states with two agents on one cell are evaluated at a valid
    state instead: their entries are never used)."""
    spare = np.flatnonzero(world.distinct)[0]
    positions = world.rows_cols[np.where(world.distinct, np.arange(len(world.cells)), spare)]
    actions, payoff = world.scripted_and_payoff(
        jnp.asarray(positions, jnp.int32), jnp.asarray(landmarks, jnp.int32)
    )
    return np.asarray(actions), np.asarray(payoff)


def next_states(world: World, adversary_actions: np.ndarray) -> np.ndarray:
    """The next state of every state under every home joint action and priority order ->
    ``int[S, 5**H, N!]`` (SPEC section 2's moves: an agent moves iff its target cell is on the
    grid and empty at the start of the step; among agents claiming one cell the first in the
    priority order wins; the others stay).

    Args:
      adversary_actions: int32[S, N]; the entries of non-home agents are used.
    """
    cfg, n, home = world.env.config, world.env.num_agents, world.num_home
    joint = np.stack(np.meshgrid(*[np.arange(NUM_ACTIONS)] * home, indexing="ij"), axis=-1).reshape(
        -1, home
    )  # [5**H, H]
    shape = (len(world.cells), len(joint), n)
    actions = np.broadcast_to(adversary_actions[:, None, :].astype(np.int64), shape).copy()
    actions[..., np.flatnonzero(world.env.teams == HOME)] = joint[None]
    target = world.rows_cols[:, None] + MOVES[actions]  # [S, A, N, 2]
    on_grid = np.all((target >= 0) & (target < (cfg.height, cfg.width)), axis=-1)
    target_cell = target[..., 0] * cfg.width + target[..., 1]
    occupied = np.any(target_cell[..., None] == world.cells[:, None, None, :], axis=-1)
    wants = (actions != STAY) & on_grid & ~occupied
    same_cell = target_cell[..., :, None] == target_cell[..., None, :]  # [S, A, N, N]
    contested = wants[..., :, None] & wants[..., None, :] & same_cell
    orders = list(itertools.permutations(range(n)))
    out = np.empty((len(world.cells), len(joint), len(orders)), np.int64)
    for k, order in enumerate(orders):
        rank = np.argsort(order)  # rank[i]: agent i's place in this priority order
        beaten = np.any(contested & (rank[None, :] < rank[:, None]), axis=-1)
        moved = np.where(wants & ~beaten, target_cell, world.cells[:, None, :])
        out[..., k] = world.index(moved)
    return out


@dataclasses.dataclass(frozen=True)
class Solution:
    """The solved decision process of one landmark layout."""

    table: np.ndarray  # int[S, 5**H, N!]: ``next_states``
    values: np.ndarray  # float64[T + 1, S]: best expected payoff with t moves made
    payoff: np.ndarray  # float32[S]: the home payoff if the episode ended in each state


def solve(world: World, landmarks: np.ndarray) -> Solution:
    """Backward induction over an episode of ``max_steps`` moves with these ``landmarks int[L,
    2]`` (targets first)."""
    adversary, payoff = state_arrays(world, landmarks)
    table = next_states(world, adversary)
    values = [payoff.astype(np.float64)]
    for _ in range(world.env.config.max_steps):
        values.append(values[-1][table].mean(axis=-1).max(axis=-1))
    return Solution(table, np.stack(values[::-1]), payoff)


def start_states(world: World, landmarks: np.ndarray) -> np.ndarray:
    """bool[S]: the states the reset can draw (agents on distinct cells off the landmarks)."""
    landmark_cells = landmarks[:, 0] * world.env.config.width + landmarks[:, 1]
    return world.distinct & ~np.isin(world.cells, landmark_cells).any(axis=-1)


def start_value(world: World, landmarks: np.ndarray) -> float:
    """The optimum averaged over the reset's start states of one layout (x100)."""
    return 100.0 * float(solve(world, landmarks).values[0][start_states(world, landmarks)].mean())


def play_optimal(solution: Solution, state: int, rng: np.random.Generator) -> np.ndarray:
    """One game of the optimal plan from ``state``, chance drawn from ``rng`` -> the state ids
    ``int[T + 1]``."""
    trajectory = [int(state)]
    for t in range(len(solution.values) - 1):
        options = solution.table[trajectory[-1]]  # [5**H, N!]
        joint = int(np.argmax(solution.values[t + 1][options].mean(axis=-1)))
        trajectory.append(int(options[joint, rng.integers(options.shape[-1])]))
    return np.array(trajectory)


def plan_statistics(world: World, games: list, landmarks: list, payoffs: list) -> dict:
    """How the optimal plan plays, as means over games (state-id trajectories, each with its
    ``landmarks int[L, 2]`` and final payoff): the first step a home agent stands on a target
    (games that never cover one left out), the steps it does, whether an adversary is beside a
    target halfway, the share of steps with a home agent beside an adversary, the win rate."""
    cfg, home = world.env.config, world.env.teams == HOME
    rows = []
    for trajectory, layout in zip(games, landmarks, strict=True):
        cells = world.rows_cols[trajectory]  # [T + 1, N, 2]
        targets = layout[: cfg.num_targets]
        gap = np.abs(cells[:, :, None] - targets).max(axis=-1).min(axis=-1)  # [T + 1, N]
        covered = np.flatnonzero(np.any(gap[:, home] == 0, axis=-1))
        beside = np.abs(cells[:, home][:, :, None] - cells[:, ~home][:, None]).max(axis=-1)
        rows.append({
            "first_cover_step": float(covered[0]) if len(covered) else np.nan,
            "steps_covered": float(len(covered)),
            "adversary_beside_target_halfway": float(np.any(gap[cfg.max_steps // 2, ~home] <= 1)),
            "home_beside_adversary": float(np.mean(np.any(beside <= 1, axis=(1, 2)))),
        })  # fmt: skip
    out = {k: float(np.nanmean([row[k] for row in rows])) for k in rows[0]}
    return out | {"win_rate": float(np.mean(np.asarray(payoffs) > 0)), "games": len(games)}


def layouts(world: World, count: int, seed: int) -> np.ndarray:
    """``count`` distinct random landmark layouts (every one when ``count`` is 0) ->
    ``int[K, L, 2]``."""
    cfg = world.env.config
    every = np.array(list(itertools.permutations(range(world.num_cells), cfg.num_landmarks)))
    if count:
        if count > len(every):
            raise ValueError(f"invalid layouts={count}: this world has {len(every)}")
        every = every[np.random.default_rng(seed).choice(len(every), count, replace=False)]
    return np.stack(np.divmod(every, cfg.width), axis=-1)


def main(args: Args) -> dict:
    if args.layouts < 0:
        raise ValueError(f"invalid layouts={args.layouts}: must be >= 0 (0 = every layout)")
    if args.rollouts < 0:
        raise ValueError(f"invalid rollouts={args.rollouts}: must be >= 0")
    overrides = {k: getattr(args, k) for k in ("height", "width", "max_steps")}
    env, _ = envs.make("deception", args.preset,
                       **{k: v for k, v in overrides.items() if v is not None})  # fmt: skip
    world = make_world(env)
    chosen = layouts(world, args.layouts, args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    values, games, game_layouts, payoffs = [], [], [], []
    for landmarks in chosen:
        solution, starts = solve(world, landmarks), start_states(world, landmarks)
        values.append(100.0 * float(solution.values[0][starts].mean()))
        for state in rng.choice(np.flatnonzero(starts), args.rollouts):
            games.append(play_optimal(solution, state, rng))
            payoffs.append(float(solution.payoff[games[-1][-1]]))
            game_layouts.append(landmarks)
    values = np.array(values)
    row = summarise({"home_reward": values})["home_reward"]
    seconds = time.perf_counter() - start
    exact = "" if args.layouts else ", every layout: exact"
    print(f"optimal home team vs scripted adversary over {len(chosen)} layouts: home reward x100 "
          f"{row['mean']:.1f} [{row['low']:.1f}, {row['high']:.1f}] (worst layout "
          f"{values.min():.1f}, best {values.max():.1f}{exact}); {seconds:.0f} s")  # fmt: skip
    result = {
        "preset": args.preset, "config": dataclasses.asdict(env.config),
        "layouts": len(chosen), "seed": args.seed, "seconds": seconds,
        "optimal_home_reward": row,
        "per_layout": {"landmarks": chosen.tolist(), "home_reward": values.tolist()},
        **machine(),
    }  # fmt: skip
    if games:
        result["optimal_plan"] = plan_statistics(world, games, game_layouts, payoffs)
        print(
            "optimal plan: " + ", ".join(f"{k} {v:.2f}" for k, v in result["optimal_plan"].items())
        )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
