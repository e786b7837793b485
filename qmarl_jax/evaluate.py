"""Evaluation of a trained run: batched, jitted episodes -> rates and means with 95% intervals.

``evaluate_run(run_dir, episodes=1000, opponent="scripted")`` plays whole episodes with the run's
latest parameters (optionally at another scale, with another ensemble mode, greedily, or against
another run's frozen policy) and returns a JSON-ready summary:

* every per-episode value of ``metrics.episode_values`` as ``{mean, low, high}``: Wilson score
  intervals for 0/1 outcomes (``win``, ``draw``, ``loss``), normal intervals for means;
* Jungle: ``oracle`` (the SPEC's upper bound on the score of each start state, x100) and
  ``score_vs_oracle`` (mean score / mean bound). Rewards are paid after moving, so an agent that
  arrives next to food during step ``d`` earns on steps ``d .. T`` (``T + 1 - d``, about 77.6 on
  ``tiny``); counting only the steps after arrival (``T - d``, about 74) would not bound the
  score a policy can reach.

The same seed gives the same numbers. The oracle runs on the host (one BFS from every food-adjacent
cell at once, in windows of the episode's reach, and one sparse assignment problem per episode),
up to ``ORACLE_MAX_AGENTS`` agents.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from envs.core import ADJACENT4
from envs.opponents import CONTROLLERS
from qmarl_jax import metrics as metrics_lib
from qmarl_jax.checkpoint import load_config
from qmarl_jax.config import LEARN, TrainConfig
from qmarl_jax.ensemble import MODES
from qmarl_jax.rollout import collect, reset_games

#: Values that are 0/1 per episode (Wilson intervals); the rest get normal intervals.
BINARY = ("win", "draw", "loss")
#: Largest Jungle for which the oracle bound is computed (its cost grows linearly with N: 3.6 s
#: per episode at 10,000 agents on a 2-core CPU, ``experiments.bench_oracle``).
ORACLE_MAX_AGENTS = 16384
#: ``pack``, ``strike`` and ``strike2``: Battle's rules, ``claim``: Jungle's (``envs.opponents``;
#: the run's config refuses each elsewhere).
OPPONENTS = (*CONTROLLERS, "<run directory>")
Z95 = 1.959963984540054
#: Least budget margin of evaluation and inference (``TrainConfig.budget_margin``): they cannot
#: regrow an overflowing budget as training does.
EVALUATION_BUDGET_MARGIN = 2.0


# ---- intervals ------------------------------------------------------------------------------
def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate -> ``(low, high)`` in [0, 1]."""
    if trials <= 0:
        raise ValueError(f"invalid trials={trials}: must be >= 1")
    rate = successes / trials
    denom = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denom
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Mean and its 95% normal interval ``(mean, low, high)`` (sample standard deviation)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to summarise")
    mean = float(values.mean())
    if values.size == 1:
        return mean, mean, mean
    half = z * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def paired_difference(
    values: dict[str, np.ndarray], other: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """``{name: {mean, low, high}}`` of the per-episode differences ``values - other``.

    Both are ``per_episode`` values ([episodes] each) of the same episodes played two ways
    (one evaluation seed, episode count and batch size: the same start states). Pairing takes
    the start states' share out of the variance, so a difference between two ways of playing
    shows before the two separate intervals part.

    Raises:
      ValueError: the two have different episode counts.
    """
    out = {}
    for name in sorted(values.keys() & other.keys()):
        a, b = np.asarray(values[name], np.float64), np.asarray(other[name], np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{name}: {a.size} episodes against {b.size}; pair the same episodes")
        mean, low, high = mean_interval(a - b)
        out[name] = {"mean": mean, "low": low, "high": high}
    return out


def summarise(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{name: {mean, low, high}}`` of per-episode values (see ``BINARY``)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        if name in BINARY:
            low, high = wilson_interval(round(float(v.sum())), v.size)
            out[name] = {"mean": float(v.mean()), "low": low, "high": high}
        else:
            mean, low, high = mean_interval(v)
            out[name] = {"mean": mean, "low": low, "high": high}
    return out


# ---- the Jungle oracle ----------------------------------------------------------------------
#: Food-adjacent cells (BFS windows) or agents (reach windows) handled together: bounds the
#: oracle's memory.
_ORACLE_CHUNK = 2048


def _distances_within(sources: np.ndarray, free: np.ndarray, reach: int) -> np.ndarray:
    """4-connected BFS distances over ``free bool[H, W]`` from each of ``sources int[C, 2]``, up to
    ``reach`` steps -> ``int[C, 2 R + 1, 2 R + 1]``, ``R = _window_radius(reach, H, W)``: the window
    centred on each source (entry ``[c, R + dr, R + dc]`` is the distance to ``source + (dr, dc)``,
    -1: unreachable within ``reach``). A path of at most ``reach`` steps inside the grid stays in
    the window, so the distances are exact; the sources of a chunk expand together, one array
    operation per step."""
    radius = _window_radius(reach, *free.shape)
    side = 2 * radius + 1
    padded = np.pad(free, radius, constant_values=False)
    dist = np.full((len(sources), side, side), -1, np.min_scalar_type(-reach - 1))
    for start in range(0, len(sources), _ORACLE_CHUNK):
        chunk = sources[start : start + _ORACLE_CHUNK]
        rows = chunk[:, 0, None] + np.arange(side)
        cols = chunk[:, 1, None] + np.arange(side)
        unseen = padded[rows[:, :, None], cols[:, None, :]]  # bool[c, side, side]
        unseen[:, radius, radius] = False
        frontier = np.zeros_like(unseen)
        frontier[:, radius, radius] = True
        out = dist[start : start + len(chunk)]
        out[:, radius, radius] = 0
        for step in range(1, reach + 1):
            grown = np.zeros_like(frontier)
            grown[:, 1:] |= frontier[:, :-1]
            grown[:, :-1] |= frontier[:, 1:]
            grown[:, :, 1:] |= frontier[:, :, :-1]
            grown[:, :, :-1] |= frontier[:, :, 1:]
            frontier = grown & unseen
            if not frontier.any():
                break
            unseen &= ~frontier
            out[frontier] = step
    return dist


def _window_radius(reach: int, height: int, width: int) -> int:
    """Radius of the window that holds every cell within ``reach`` steps of a cell of an
    ``height x width`` grid: ``reach``, or less where the grid is smaller."""
    return min(reach, max(height, width) - 1)


def _food_sides(food: np.ndarray, free: np.ndarray) -> np.ndarray:
    """``int[C, 2]`` the free cells 4-adjacent to any of ``food int[F, 2]``, in row-major order."""
    beside = np.zeros_like(free)
    height, width = free.shape
    for dr, dc in ADJACENT4.tolist():
        rows, cols = food[:, 0] + dr, food[:, 1] + dc
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        beside[rows[inside], cols[inside]] = True
    return np.argwhere(beside & free)


def _oracle_pairs(positions, alive, food, height: int, width: int, steps: int):
    """``(agent, cell, reward)`` int[P] each, the agent-cell pairs of ``oracle_rewards`` with a
    reward, and its shape ``(N, C)``."""
    free = np.ones((height, width), bool)
    food = np.asarray(food, np.int64).reshape(-1, 2)
    free[food[:, 0], food[:, 1]] = False
    cells = _food_sides(food, free)
    positions = np.asarray(positions, np.int64).reshape(-1, 2)
    shape = (len(positions), len(cells))
    none = np.zeros(0, np.int64)
    if not len(cells) or steps < 1:
        return (none, none, none), shape
    dist = _distances_within(cells, free, steps)
    radius = _window_radius(steps, height, width)
    cell_index = np.full((height, width), -1, np.int64)
    cell_index[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
    span = np.arange(-radius, radius + 1)
    offsets = np.stack(np.meshgrid(span, span, indexing="ij"), -1).reshape(-1, 2)
    offsets = offsets[np.abs(offsets).sum(-1) <= steps]  # cell - agent, within reach
    pieces = [(none, none, none)]
    alive_agents = np.flatnonzero(np.asarray(alive, bool))
    for start in range(0, len(alive_agents), _ORACLE_CHUNK):
        agents = alive_agents[start : start + _ORACLE_CHUNK]
        target = positions[agents, None, :] + offsets[None]  # int[A, K, 2]
        inside = np.all((target >= 0) & (target < (height, width)), axis=-1)
        agent, k = np.nonzero(inside)
        cell = cell_index[target[agent, k, 0], target[agent, k, 1]]
        agent, k, cell = agent[cell >= 0], k[cell >= 0], cell[cell >= 0]
        d = dist[cell, radius - offsets[k, 0], radius - offsets[k, 1]].astype(np.int64)
        keep = d >= 0
        pieces.append((agents[agent[keep]], cell[keep], steps + 1 - np.maximum(d[keep], 1)))
    return tuple(np.concatenate(column) for column in zip(*pieces, strict=True)), shape


def oracle_rewards(positions, alive, food, height: int, width: int, steps: int):
    """Best reward each agent could earn at each food-adjacent cell -> ``scipy.sparse`` CSR
    ``int[N, C]`` (cells in row-major order; absent entries: 0).

    An agent ``d`` moves away from a free cell 4-adjacent to food arrives during step ``d`` and,
    as the reward is paid after moving, earns +1 on steps ``max(d, 1) .. steps``: ``steps + 1 - d``
    (``steps`` when already there), 0 if it cannot arrive in time. Food blocks movement; other
    agents are ignored (a bound on agents paid at one side each; a hand-off can beat it by a
    step, README "The Jungle oracle"). Only pairs within ``steps`` moves are stored, and the BFS
    runs in windows of radius ``R = min(steps, max(H, W) - 1)``: the cost is
    ``O(C * R^2 * steps + N * R^2)``, linear in the agents and food whatever the size of the world.
    """
    from scipy import sparse

    (agent, cell, reward), shape = _oracle_pairs(positions, alive, food, height, width, steps)
    return sparse.csr_array((reward, (agent, cell)), shape=shape)


def jungle_oracle(positions, alive, food, height: int, width: int, steps: int) -> float:
    """The SPEC's oracle bound on the Jungle score x100 of one start state.

    The best assignment of agents to distinct food-adjacent cells (``oracle_rewards``), as a mean
    reward per agent per step x100. Solved as a sparse full matching in which every agent may also
    take a cell of its own worth nothing: all weights are raised by 1 (a stored 0 would be no
    edge), which adds exactly N to every full matching and so leaves the best one unchanged.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    (agent, cell, reward), (agents, cells) = _oracle_pairs(
        positions, alive, food, height, width, steps
    )
    total = 0
    if len(reward):
        own = np.arange(agents)
        weights = sparse.csr_array(
            (np.concatenate([reward + 1, np.ones(agents, np.int64)]),
             (np.concatenate([agent, own]), np.concatenate([cell, cells + own]))),
            shape=(agents, cells + agents),
        )  # fmt: skip
        rows, cols = min_weight_full_bipartite_matching(weights, maximize=True)
        total = int(weights[rows, cols].sum()) - agents
    return 100.0 * total / (agents * steps)


def jungle_oracles(states, config) -> np.ndarray | None:
    """``float[E]`` the oracle bound x100 of each of a batch of Jungle start states (``config``:
    its ``JungleConfig``), or None above ``ORACLE_MAX_AGENTS`` agents."""
    if config.num_agents > ORACLE_MAX_AGENTS:
        return None
    grid = states.grid
    return np.array([
        jungle_oracle(grid.positions[e], grid.alive[e], states.food[e], config.height,
                      config.width, config.max_steps)
        for e in range(len(states.food))
    ])  # fmt: skip


def food_cell_kind(food: np.ndarray, height: int, width: int) -> np.ndarray:
    """``"corner"``, ``"edge"`` or ``"interior"`` for each food cell of ``food int[E, 2]``."""
    on_border = (np.isin(food[:, 0], (0, height - 1)).astype(int)
                 + np.isin(food[:, 1], (0, width - 1)).astype(int))  # fmt: skip
    return np.array(["interior", "edge", "corner"])[on_border]


def oracle_breakdown(score, oracle, survival, food_kind=None) -> dict[str, dict[str, float]]:
    """Where a Jungle score falls short of the oracle -> ``{group: {"share", "score_vs_oracle"}}``
    for the episodes where every agent survives (``all_alive``), where one dies
    (``with_deaths``) and, given ``food_kind str[E]`` (one food per episode), by the food's cell
    (``food_corner``, ``food_edge``, ``food_interior``). A group's ratio is its mean score over
    its mean bound; empty groups are left out.

    Args:
      score, oracle, survival: float[E] per-episode score x100, oracle bound x100, survival.
    """
    score, oracle, survival = map(np.asarray, (score, oracle, survival))
    groups = {"all_alive": survival >= 1.0, "with_deaths": survival < 1.0}
    if food_kind is not None:
        groups |= {f"food_{kind}": np.asarray(food_kind) == kind
                   for kind in ("corner", "edge", "interior")}  # fmt: skip
    return {
        name: {"share": float(mask.mean()),
               "score_vs_oracle": float(score[mask].mean() / oracle[mask].mean())}
        for name, mask in groups.items() if mask.any() and oracle[mask].mean() > 0
    }  # fmt: skip


# ---- playing episodes -----------------------------------------------------------------------
def check_choices(
    opponent: str | None, ensemble: str | None, paired_ensemble: str | None = None
) -> None:
    """Raise a ValueError naming the field unless ``opponent`` and the ensemble modes are valid."""
    for field, mode in (("ensemble", ensemble), ("paired_ensemble", paired_ensemble)):
        if mode is not None and mode not in MODES:
            raise ValueError(f"invalid {field}={mode!r}; choose one of: {', '.join(MODES)}")
    if opponent is not None and opponent not in CONTROLLERS and not Path(opponent).is_dir():
        raise ValueError(
            f"invalid opponent={opponent!r}; choose one of: {', '.join(OPPONENTS)} (an existing "
            "run directory)"
        )


def check_team(config: TrainConfig, team: int | None) -> None:
    """Raise a ValueError naming the field unless ``team`` is None or a team the run learned."""
    if team is not None and team not in config.learning_teams:
        raise ValueError(
            f"invalid team={team!r}; choose one of the run's learned teams: "
            + ", ".join(map(str, config.learning_teams))
        )


def evaluation_config(
    config: TrainConfig,
    games: int,
    num_agents: int | None = None,
    ensemble: str | None = None,
    opponent: str | None = "scripted",
    density: float | None = None,
    team: int | None = None,
    depth: int | None = None,
    ensemble_hops: int | None = None,
) -> TrainConfig:
    """The run's config changed for evaluation (validated: errors name the field).

    ``opponent`` replaces the controller of every team the run did not learn (a run directory:
    ``learn``, with that run's parameters supplied by the caller); None keeps them. ``team``
    (one of a self-play run's learned teams) keeps only that team learned, so ``opponent`` also
    replaces the other learned teams. ``density`` (agents per cell, with ``num_agents``) sets
    the resized world's crowding. ``depth`` plays with ego-graphs of another depth (the network's
    parameters do not depend on it; 0 = every agent alone, without its neighbours' messages).
    ``ensemble_hops`` lets only the ego-graphs centred within that many hops of an agent vote
    for it (``TrainConfig.ensemble_hops``; it plays with one ego-graph per agent).
    """
    check_choices(opponent, ensemble)
    check_team(config, team)
    if depth is not None and config.algo == "vanilla_pg":
        raise ValueError(
            f"invalid config field 'depth'={depth!r}: algo='vanilla_pg' plays without "
            "ego-graphs; leave it unset"
        )
    kept = config.learning_teams if team is None else (team,)
    controllers = tuple(
        kind if t in kept or opponent is None
        else (LEARN if Path(opponent).is_dir() else opponent)
        for t, kind in enumerate(config.controllers[: config.num_teams])
    )  # fmt: skip
    # Evaluation and inference run on one device (any batch size is valid there). They cannot
    # regrow overflowing budgets as training does, so they calibrate with a wider margin (the
    # summary still counts any overflow). A kickstarting teacher labels nothing here. The run's
    # seed (here only the key of that calibration) and its init_from do not change play: reset,
    # the seeds of a seed set share one config, so one compiled evaluator (shared_evaluator).
    changes: dict[str, Any] = dict(
        games_per_batch=games, controllers=controllers, node_budget=None, edge_budget=None,
        budget_margin=max(EVALUATION_BUDGET_MARGIN, config.budget_margin), num_devices=1,
        kickstart=None, seed=0, init_from=None,
    )  # fmt: skip
    if num_agents is not None:
        changes["num_agents"] = num_agents
    if density is not None:
        changes["density"] = density
    if ensemble is not None:
        changes["ensemble"] = ensemble
    if depth is not None:
        changes["depth"] = depth
    if ensemble_hops is not None:
        changes.update(ensemble_hops=ensemble_hops, share_ego_graphs=False)
    return dataclasses.replace(config, **changes)


#: Fields that must agree between a run and an opponent run whose parameters it plays against.
NETWORK_FIELDS = ("width", "num_blocks", "n_rbf", "algo", "heads")


def check_opponent(config: TrainConfig, opponent_dir: str | Path) -> None:
    """Raise a ValueError naming every field where the run at ``opponent_dir`` cannot play
    against a run of ``config`` (reads only its config: nothing is loaded or compiled)."""
    other = load_config(Path(opponent_dir))
    differ = [
        f"{name}: run {getattr(config, name)!r}, opponent {getattr(other, name)!r}"
        for name in NETWORK_FIELDS
        if getattr(config, name) != getattr(other, name)
    ]
    if differ or other.scenario != config.scenario:
        raise ValueError(
            f"opponent run {opponent_dir} is incompatible (same scenario and network needed): "
            + "; ".join(differ or [f"scenario: {config.scenario!r} vs {other.scenario!r}"])
        )


def opponent_params(opponent_dir: str | Path, team: int):
    """The frozen parameters another run learned, to control ``team`` (``check_opponent`` has
    passed: ``evaluate_run`` calls it before loading anything)."""
    from qmarl_jax.loop import load_runner

    trainer, runner = load_runner(opponent_dir)
    teams = trainer.config.learning_teams
    return runner.teams[teams.index(team) if team in teams else 0].params


class Evaluator:
    """Plays evaluation episodes of one config: compiled once, reused for any parameters.

    Args:
      config: an ``evaluation_config`` (its ``games_per_batch`` games per jitted batch).
      greedy: argmax of the ensembled distribution instead of sampling.
    """

    def __init__(self, config: TrainConfig, greedy: bool = False):
        from qmarl_jax.train import Trainer

        self.config = config
        self.trainer = Trainer(config)
        self.greedy = greedy
        self._compiled = None
        self.compile_s = 0.0

    def _play(self, params, key):
        trainer, config = self.trainer, self.config
        games = config.games_per_batch
        start = reset_games(trainer.env, jax.random.split(key, 3)[0], games, trainer.env_params)
        traj = collect(trainer.actor, params, key, trainer.env_params, self.greedy, start)
        evaluated = config.learning_teams[0]
        values = metrics_lib.episode_values(config.scenario, traj, trainer.teams, evaluated)
        return values, metrics_lib.graph_metrics(traj), start[1]

    def _compile(self, params, key) -> None:
        """Compile the batch program once (shapes only: nothing is played)."""
        if self._compiled is None:
            start_time = time.perf_counter()
            self._compiled = jax.jit(self._play).lower(params, key).compile()
            self.compile_s = time.perf_counter() - start_time

    def _batch(self, params, key):
        self._compile(params, key)
        return jax.device_get(self._compiled(params, key))

    def __call__(self, params_by_team: tuple, episodes: int, seed: int = 0) -> dict[str, Any]:
        """Play ``episodes`` episodes -> summary (``metrics``, ``graph``, ``timing``, Jungle
        ``score_vs_oracle``, raw ``per_episode`` values).

        Args:
          params_by_team: parameters of each ``learn`` team of the config (in team order).
          episodes: episodes to play (whole batches are played; exactly ``episodes`` are used).
          seed: evaluation seed (batch ``b`` uses ``fold_in(PRNGKey(seed), b)``).
        """
        env, games = self.trainer.env, self.config.games_per_batch
        key0 = jax.random.PRNGKey(seed)
        compiles_now = self._compiled is None
        self._compile(params_by_team, key0)  # not timed as play
        start_time = time.perf_counter()
        values: dict[str, list] = {}
        graph_rows, oracle, food_kinds = [], [], []
        with_oracle = self.config.scenario == "jungle" and env.num_agents <= ORACLE_MAX_AGENTS
        for batch in range(math.ceil(episodes / games)):
            batch_values, graph_stats, states = self._batch(
                params_by_team, jax.random.fold_in(key0, batch)
            )
            for name, v in batch_values.items():
                values.setdefault(name, []).append(v)
            graph_rows.append(graph_stats)
            if with_oracle:
                cfg = env.config
                oracle.extend(jungle_oracles(states, cfg))
                if cfg.num_food == 1:
                    food_kinds.extend(food_cell_kind(np.asarray(states.food).reshape(games, 2),
                                                     cfg.height, cfg.width))  # fmt: skip
        per_episode = {k: np.concatenate(v)[:episodes] for k, v in values.items()}
        timing = {
            "compile_s": self.compile_s if compiles_now else 0.0,
            "play_s": time.perf_counter() - start_time,
        }
        summary: dict[str, Any] = {"metrics": summarise(per_episode), "timing": timing}
        if with_oracle:
            bound = np.asarray(oracle[:episodes])
            summary["metrics"]["oracle"] = summarise({"oracle": bound})["oracle"]
            summary["score_vs_oracle"] = float(per_episode["score"].mean() / bound.mean())
            summary["oracle_breakdown"] = oracle_breakdown(
                per_episode["score"],
                bound,
                per_episode["survival"],
                food_kinds[:episodes] if food_kinds else None,
            )
        summary["graph"] = {
            k: float(np.max([row[k] for row in graph_rows]))
            if k.endswith("max_nodes")
            else float(np.mean([row[k] for row in graph_rows]))
            for k in graph_rows[0]
        }
        summary["per_episode"] = per_episode
        return summary


def evaluate_params(
    config: TrainConfig,
    params_by_team: tuple,
    episodes: int,
    seed: int = 0,
    greedy: bool = False,
) -> dict[str, Any]:
    """``Evaluator(config, greedy)(params_by_team, episodes, seed)``, reusing the evaluator of
    an earlier call with the same ``config`` and ``greedy`` (``shared_evaluator``)."""
    return shared_evaluator(config, greedy)(params_by_team, episodes, seed)


@functools.lru_cache(maxsize=8)
def shared_evaluator(config: TrainConfig, greedy: bool) -> Evaluator:
    """One ``Evaluator`` per ``(config, greedy)`` in this process: evaluating several
    checkpoints, runs or seeds of one config (or the same one twice) traces and compiles its
    batch program once. Its results depend only on the parameters and the seed it is given."""
    return Evaluator(config, greedy)


def evaluate_run(
    run_dir: str | Path,
    episodes: int = 1000,
    opponent: str = "scripted",
    num_agents: int | None = None,
    ensemble: str | None = None,
    greedy: bool = False,
    seed: int = 0,
    batch_size: int = 500,
    density: float | None = None,
    team: int | None = None,
    depth: int | None = None,
    ensemble_hops: int | None = None,
) -> dict[str, Any]:
    """Evaluate the latest checkpoint of a run; see the module docstring.

    Args:
      run_dir: a training run directory.
      episodes: episodes to play (>= 1).
      opponent: ``scripted``, ``random`` or another run directory (its frozen policy) for every
        team the run did not learn.
      num_agents: play at another scale (the nearest preset's density), e.g. twice the agents.
      density: with ``num_agents``, agents per cell of the resized world instead.
      ensemble: override the run's ensemble mode (``mean_prob``, ``mean_logit``, ``none``).
      greedy: argmax actions instead of sampling.
      seed: evaluation seed.
      batch_size: episodes per jitted batch.
      team: of a self-play run (several learned teams), the one to evaluate; ``opponent`` then
        plays every other team. None evaluates the first learned team against the others.
      depth: play with ego-graphs of this depth instead of the run's (0: without neighbours).
      ensemble_hops: only the ego-graphs centred within this many hops of an agent vote for it.

    Returns:
      A JSON-ready dict: settings, ``metrics`` ``{name: {mean, low, high}}``, ``graph``
      statistics and, for Jungle, ``score_vs_oracle``. ``per_episode`` holds the raw values.
    """
    from qmarl_jax.loop import load_runner

    check_choices(opponent, ensemble)
    if episodes < 1:
        raise ValueError(f"invalid episodes={episodes}: must be >= 1")
    if batch_size < 1:
        raise ValueError(f"invalid batch_size={batch_size}: must be >= 1")
    if team is not None and opponent is None:
        choices = ", ".join(OPPONENTS)
        raise ValueError(f"team={team} needs an opponent for the other teams: {choices}")
    saved = load_config(Path(run_dir))
    check_team(saved, team)
    if opponent is not None and Path(opponent).is_dir():
        check_opponent(saved, opponent)
    trainer, runner = load_runner(run_dir)
    games = min(batch_size, episodes)
    config = evaluation_config(
        trainer.config, games, num_agents, ensemble, opponent, density, team, depth, ensemble_hops
    )
    own = trainer.config.learning_teams if team is None else (team,)
    learned = trainer.config.learning_teams
    by_team = tuple(
        runner.teams[learned.index(t)].params if t in own else opponent_params(opponent, t)
        for t in config.learning_teams
    )
    summary = evaluate_params(config, by_team, episodes, seed, greedy)
    settings = {
        "run": str(run_dir),
        "scenario": config.scenario,
        "algo": config.algo,
        "num_agents": config.env_config.num_agents,
        "density": config.density,
        "episodes": episodes,
        "opponent": opponent if config.num_teams > 1 else None,
        "team": config.learning_teams[0],
        "ensemble": config.ensemble,
        "ensemble_hops": config.ensemble_hops,
        "depth": config.graph_depth,
        "greedy": greedy,
        "seed": seed,
        "trained_batches": int(runner.batch),
    }
    return {**settings, **summary}
