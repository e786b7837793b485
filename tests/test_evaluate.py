"""Evaluation: the Jungle oracle on hand-solved states, intervals, per-episode metrics, the CLI."""

import collections
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from experiments import evaluate as evaluate_cli
from qmarl_jax import loop
from qmarl_jax import metrics as metrics_lib
from qmarl_jax.checkpoint import save_config
from qmarl_jax.config import make_config
from qmarl_jax.evaluate import (
    evaluate_run,
    evaluation_config,
    jungle_oracle,
    mean_interval,
    oracle_rewards,
    wilson_interval,
)
from qmarl_jax.rollout import Trajectory

T = 30


@pytest.mark.parametrize(
    ("food", "positions", "expected_total"),
    [
        # Corner food: two free sides for four agents. (0,1) is there (30); (2,0) moves up to
        # (1,0) in step 1 and is paid that step too (30); the others find no free side.
        ([[0, 0]], [[0, 1], [2, 0], [4, 4], [3, 3]], 60),
        # Edge food: three sides. (0,0)->(0,1) and (0,4)->(0,3) take 1 step (30 each); (4,2)
        # reaches (1,2) in 3 steps (28); (4,0) is left over.
        ([[0, 2]], [[0, 0], [0, 4], [4, 2], [4, 0]], 88),
        # Centre food: each corner reaches its own side in 3 steps (28 each).
        ([[2, 2]], [[0, 0], [0, 4], [4, 4], [4, 0]], 112),
    ],
)
def test_jungle_oracle_on_hand_solved_start_states(food, positions, expected_total):
    bound = jungle_oracle(np.array(positions), np.ones(4, bool), np.array(food), 5, 5, T)
    assert bound == pytest.approx(100 * expected_total / (4 * T))


def test_oracle_walks_around_food():
    # From (2,0) to the right side of the centre food the straight path is blocked: 5 steps.
    rewards = oracle_rewards(np.array([[2, 0]]), np.ones(1, bool), np.array([[2, 2]]), 5, 5, T)
    assert sorted(rewards.toarray()[0].tolist()) == [T + 1 - 5, T + 1 - 3, T + 1 - 3, T]


def _brute_force_oracle(positions, food, side, steps):
    free = np.ones((side, side), bool)
    for r, c in food:
        free[r, c] = False
    sides = [(r + dr, c + dc) for r, c in food for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    cells = sorted({(r, c) for r, c in sides if 0 <= r < side and 0 <= c < side and free[r, c]})
    # All-pairs shortest paths by Floyd-Warshall over free cells.
    index = {cell: k for k, cell in enumerate(zip(*np.nonzero(free), strict=True))}
    dist = np.full((len(index), len(index)), np.inf)
    np.fill_diagonal(dist, 0)
    for (r, c), k in index.items():
        for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if nb in index:
                dist[k, index[nb]] = 1
    for m in range(len(index)):
        dist = np.minimum(dist, dist[:, m : m + 1] + dist[m : m + 1, :])
    best = 0
    slots = cells + [None] * len(positions)
    for assignment in itertools.permutations(range(len(slots)), len(positions)):
        total = 0
        for agent, slot in enumerate(assignment):
            if slots[slot] is not None:
                d = dist[index[tuple(positions[agent])], index[slots[slot]]]
                total += max(0, steps + 1 - max(d, 1)) if np.isfinite(d) else 0
        best = max(best, total)
    return 100 * best / (len(positions) * steps)


@pytest.mark.parametrize("seed", range(4))
def test_jungle_oracle_matches_brute_force_assignment(seed):
    rng = np.random.default_rng(seed)
    cells = rng.permutation(36)[:6]
    positions = np.stack([cells[:4] // 6, cells[:4] % 6], -1)
    food = np.stack([cells[4:] // 6, cells[4:] % 6], -1)
    steps = int(rng.integers(3, 12))
    got = jungle_oracle(positions, np.ones(4, bool), food, 6, 6, steps)
    assert got == pytest.approx(_brute_force_oracle(positions.tolist(), food.tolist(), 6, steps))


def test_oracle_is_reached_by_the_optimal_plan():
    env, params = envs.make("jungle", max_steps=T)
    positions = [[0, 1], [2, 0], [4, 4], [3, 3]]
    state = env.state_from(jnp.asarray(positions), jnp.asarray([[0, 0]]))
    total = 0.0
    for step in range(T):
        actions = jnp.array([4, 0 if step == 0 else 4, 4, 4])  # agent 1 steps up once
        _, state, reward, *_ = env.step_no_reset(jax.random.key(step), state, actions, params)
        total += float(reward.sum())
    bound = jungle_oracle(np.array(positions), np.ones(4, bool), np.array([[0, 0]]), 5, 5, T)
    assert 100 * total / (4 * T) == pytest.approx(bound) == pytest.approx(50.0)


def test_a_hand_off_beats_the_oracle_by_a_step():
    """The bound pays each agent from its arrival at one side. An agent that passes another
    food side on its way is paid there too: A steps onto the north side of the edge food, on
    to its east side, and B takes the north side after A: 29 + 28 against the bound's 56."""
    env, params = envs.make("jungle", num_agents=2, max_steps=T)
    positions, food = [[2, 3], [0, 3]], [[4, 3]]
    state = env.state_from(jnp.asarray(positions), jnp.asarray(food))
    down, right, stay = 1, 3, 4
    plan = [(down, down), (right, down), (down, down)]  # then both stay
    total = 0.0
    for step in range(T):
        actions = jnp.array(plan[step] if step < len(plan) else (stay, stay))
        _, state, reward, *_ = env.step_no_reset(jax.random.key(step), state, actions, params)
        total += float(reward.sum())
    bound = jungle_oracle(np.array(positions), np.ones(2, bool), np.array(food), 5, 5, T)
    assert bound == pytest.approx(100 * 56 / (2 * T)) and total == 57


def _oracle_rewards_by_python_bfs(positions, alive, food, height, width, steps):
    # One plain queue BFS over the whole grid per food-adjacent cell (no window, no reach cap).
    free = np.ones((height, width), bool)
    free[food[:, 0], food[:, 1]] = False
    moves = ((1, 0), (-1, 0), (0, 1), (0, -1))
    sides = {(r + dr, c + dc) for r, c in food.tolist() for dr, dc in moves}
    cells = sorted((r, c) for r, c in sides if 0 <= r < height and 0 <= c < width and free[r, c])
    rewards = np.zeros((len(positions), len(cells)), np.int64)
    for j, cell in enumerate(cells):
        dist = {cell: 0}
        queue = collections.deque([cell])
        while queue:
            r, c = queue.popleft()
            for dr, dc in moves:
                nb = (r + dr, c + dc)
                inside = 0 <= nb[0] < height and 0 <= nb[1] < width
                if inside and free[nb] and nb not in dist:
                    dist[nb] = dist[(r, c)] + 1
                    queue.append(nb)
        for i, position in enumerate(positions.tolist()):
            d = dist.get(tuple(position))
            if alive[i] and d is not None:
                rewards[i, j] = max(0, steps + 1 - max(d, 1))
    return rewards


@pytest.mark.parametrize(
    ("seed", "sides", "max_steps"),
    # Worlds far wider than the reach window; small worlds with long episodes, whose shortest
    # paths around dense food are longer than the world is wide.
    [(0, (20, 41), 26), (1, (20, 41), 26), (2, (20, 41), 26), (3, (20, 41), 26),
     (4, (6, 11), 80), (5, (6, 11), 80)],
)  # fmt: skip
def test_oracle_rewards_match_a_whole_grid_python_bfs_in_crowded_worlds(seed, sides, max_steps):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(*sides)), int(rng.integers(*sides))
    num_agents = min(60, height * width // 4)
    num_food = int(rng.integers(1, height * width // 3))
    cells = rng.permutation(height * width)[: num_food + num_agents]
    grid = np.stack([cells // width, cells % width], -1)
    positions, food = grid[:num_agents], grid[num_agents:]
    alive = rng.random(num_agents) < 0.8
    steps = int(rng.integers(1, max_steps))
    got = oracle_rewards(positions, alive, food, height, width, steps).toarray()
    want = _oracle_rewards_by_python_bfs(positions, alive, food, height, width, steps)
    np.testing.assert_array_equal(got, want)
    assert (want > 0).any() and (want == 0).any()


@pytest.mark.parametrize(("seed", "num_food"), [(0, 3), (1, 10), (2, 40), (3, 120)])
def test_jungle_oracle_matches_a_dense_assignment_of_python_bfs_rewards(seed, num_food):
    # More agents than food-adjacent cells (3, 10 food) and fewer (40, 120), dead agents included.
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    side, num_agents, steps = 24, 80, int(rng.integers(4, 31))
    cells = rng.permutation(side * side)[: num_food + num_agents]
    grid = np.stack([cells // side, cells % side], -1)
    positions, food = grid[:num_agents], grid[num_agents:]
    alive = rng.random(num_agents) < 0.9
    rewards = _oracle_rewards_by_python_bfs(positions, alive, food, side, side, steps)
    rows, cols = linear_sum_assignment(rewards, maximize=True)
    want = 100 * rewards[rows, cols].sum() / (num_agents * steps)
    assert want > 0
    assert jungle_oracle(positions, alive, food, side, side, steps) == pytest.approx(want)


def _wilson_by_search(successes, trials, z=1.959963984540054):
    # Every p with |p_hat - p| <= z sqrt(p (1 - p) / n), found on a fine grid.
    p = np.linspace(0, 1, 2_000_001)
    inside = np.abs(successes / trials - p) <= z * np.sqrt(p * (1 - p) / trials)
    return p[inside].min(), p[inside].max()


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (5, 10), (9, 10), (37, 1000)])
def test_wilson_interval_matches_its_definition(successes, trials):
    low, high = wilson_interval(successes, trials)
    ref_low, ref_high = _wilson_by_search(successes, trials)
    assert low == pytest.approx(ref_low, abs=2e-6) and high == pytest.approx(ref_high, abs=2e-6)


def test_mean_interval():
    mean, low, high = mean_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 1.959963984540054 * math.sqrt(5 / 3) / 2
    assert (mean, low, high) == pytest.approx((2.5, 2.5 - half, 2.5 + half))
    with pytest.raises(ValueError, match="trials=0"):
        wilson_interval(0, 0)


def test_paired_difference_is_the_interval_of_per_episode_differences():
    from qmarl_jax.evaluate import paired_difference

    rng = np.random.default_rng(0)
    start = rng.normal(0.0, 10.0, 200)  # the start states' share, common to both
    values = {"reward": start + 1.0 + rng.normal(0, 0.1, 200), "win": np.ones(200)}
    other = {"reward": start, "win": np.zeros(200), "only_here": np.ones(200)}
    paired = paired_difference(values, other)
    assert set(paired) == {"reward", "win"}  # values only one side has are left out
    mean, low, high = mean_interval(values["reward"] - other["reward"])
    assert paired["reward"] == {"mean": mean, "low": low, "high": high}
    assert low > 0.9 and high < 1.1  # the separate intervals overlap: each is +-1.4 wide
    separate = [mean_interval(v["reward"]) for v in (values, other)]
    assert separate[0][1] < separate[1][2]
    assert paired["win"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    with pytest.raises(ValueError, match="reward: 200 episodes against 199"):
        paired_difference(values, {"reward": start[:199]})


def _trajectory(reward, live, alive, info):
    steps, num_envs, num_agents = reward.shape
    zeros = jnp.zeros((steps + 1, num_envs, num_agents), jnp.int32)
    return Trajectory(
        features=jnp.zeros((steps + 1, num_envs, num_agents, 1)), alive=jnp.asarray(alive),
        live=jnp.asarray(live), actions=zeros, reward=jnp.asarray(reward, jnp.float32),
        terminated=jnp.zeros((steps, num_envs), bool), truncated=jnp.zeros((steps, num_envs), bool),
        teams=(), info={k: jnp.asarray(v) for k, v in info.items()},
    )  # fmt: skip


def test_battle_episode_values_from_hand_made_outcomes():
    # Three 2-agent games of up to 3 steps: team 0 wins at step 3, loses at step 1, draws.
    outcome = np.zeros((3, 3, 2), np.int32)
    outcome[2, 0] = [1, -1]
    outcome[0, 1] = [-1, 1]
    live = np.array([[1, 1, 1], [1, 0, 1], [1, 0, 1], [0, 0, 0]], bool)
    alive = np.ones((4, 3, 2), bool)
    traj = _trajectory(np.zeros((3, 3, 2)), live, alive, {"outcome": outcome})
    values = metrics_lib.episode_values("battle", traj, np.array([0, 1]), evaluated_team=0)
    assert values["win"].tolist() == [1, 0, 0]
    assert values["loss"].tolist() == [0, 1, 0]
    assert values["draw"].tolist() == [0, 0, 1]
    assert values["terminal_reward"].tolist() == [100, -100, 0]
    assert values["episode_length"].tolist() == [3, 1, 3]


def test_jungle_episode_values_from_hand_made_rewards():
    reward = np.zeros((2, 2, 2))
    reward[:, 0, 0] = 1  # game 0: agent 0 fed twice
    reward[1, 1, 1] = -1  # game 1: agent 1 dies in step 2
    alive = np.ones((3, 2, 2), bool)
    alive[2, 1, 1] = False
    info = {"food_contact": reward > 0}
    traj = _trajectory(reward, np.ones((3, 2), bool), alive, info)
    values = metrics_lib.episode_values("jungle", traj, np.array([0, 0]), evaluated_team=0)
    np.testing.assert_allclose(values["score"], [100 * 2 / 4, -100 / 4])
    np.testing.assert_allclose(values["survival"], [1.0, 0.5])
    np.testing.assert_allclose(values["food_contact"], [0.5, 0.0])


SMALL = dict(num_batches=2, games_per_batch=4, width=16, num_blocks=1, batches_per_chunk=2)


@pytest.fixture(scope="session")  # built once per worker (see test_experiments.seeds_run)
def jungle_run(tmp_path_factory):
    config = make_config("jungle", **SMALL)
    return loop.train(config, run_dir=tmp_path_factory.mktemp("j") / "run", progress=False,
                      finish=False)  # fmt: skip


def test_evaluate_run_is_reproducible_and_reports_the_oracle(jungle_run):
    a = evaluate_run(jungle_run, episodes=50, seed=3, batch_size=20)
    b = evaluate_run(jungle_run, episodes=50, seed=3, batch_size=20)
    assert a["metrics"] == b["metrics"]
    assert len(a["per_episode"]["score"]) == 50
    m = a["metrics"]
    assert m["score"]["low"] <= m["score"]["mean"] <= m["score"]["high"]
    assert np.all(a["per_episode"]["score"] <= 100)
    assert a["score_vs_oracle"] == pytest.approx(m["score"]["mean"] / m["oracle"]["mean"])
    assert 60 < m["oracle"]["mean"] < 90
    bigger = evaluate_run(jungle_run, episodes=10, num_agents=8, ensemble="none", greedy=True)
    assert bigger["num_agents"] == 8 and bigger["ensemble"] == "none" and bigger["greedy"]


def test_evaluations_of_one_config_share_one_compiled_evaluator(jungle_run):
    """A second evaluation of the same config, with other parameters and another seed, reuses
    the compiled batch program (no compile time) and plays exactly what a fresh ``Evaluator``
    plays; greedy play is another evaluator."""
    from qmarl_jax.evaluate import Evaluator, evaluate_params, shared_evaluator

    trainer, runner = loop.load_runner(jungle_run)
    config = evaluation_config(trainer.config, 10)
    params = (runner.teams[0].params,)
    other = (jax.tree.map(lambda x: 3.0 * x, params[0]),)
    shared_evaluator.cache_clear()
    first = evaluate_params(config, params, 10, seed=1)
    second = evaluate_params(config, other, 10, seed=2)
    assert first["timing"]["compile_s"] > 0 and second["timing"]["compile_s"] == 0.0
    assert (shared_evaluator.cache_info().misses, shared_evaluator.cache_info().hits) == (1, 1)
    fresh = Evaluator(config)
    for summary, (p, seed) in ((first, (params, 1)), (second, (other, 2))):
        expected = fresh(p, 10, seed)
        assert summary["metrics"] == expected["metrics"]
        for name, values in expected["per_episode"].items():
            np.testing.assert_array_equal(summary["per_episode"][name], values)
    assert first["metrics"] != fresh(other, 10, 1)["metrics"]  # the parameters are played
    evaluate_params(config, params, 10, seed=1, greedy=True)
    assert shared_evaluator.cache_info().misses == 2


def test_ensemble_disagreement_cli_measures_a_crowd(jungle_run, tmp_path, capsys):
    """The script's wiring (``qmarl_jax.ensemble.disagreement`` itself is tested against a loop
    in test_nmp_ensemble): in a crowd of 16 agents some agent-steps sit in several ego-graphs."""
    from experiments import ensemble_disagreement

    out = tmp_path / "disagreement.json"
    argv = ["--run", str(jungle_run), "--games", "3", "--num-agents", "16", "--density", "0.25"]
    assert ensemble_disagreement.main([*argv, "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["num_agents"] == 16 and got["games"] == 3
    assert 0 < got["agent_steps"] <= 3 * 31 * 16  # games x (max_steps + 1) x agents
    assert 0 < got["multi_graph_share"] <= 1 and got["mean_votes"] > 1
    assert 0 <= got["tv_mean"] <= got["tv_p99"] <= got["tv_max"] <= 1
    assert 0 <= got["argmax_differs"] <= 1
    assert ensemble_disagreement.main(["--run", str(jungle_run), "--games", "0"]) == 2
    assert "invalid games=0" in capsys.readouterr().err


def test_evaluate_at_another_density_resizes_the_world_to_it(jungle_run, tmp_path, capsys):
    """``density`` with ``num_agents`` sets the resized world's side (sqrt(N / density), the
    registry's rule); without ``num_agents`` it is refused, naming the field, before any play."""
    crowded = evaluate_run(jungle_run, episodes=4, num_agents=16, density=0.25)
    assert (crowded["num_agents"], crowded["density"]) == (16, 0.25)
    assert crowded["graph"] == evaluate_run(jungle_run, episodes=4, num_agents=16,
                                            density=0.25)["graph"]  # fmt: skip
    config = evaluation_config(make_config("jungle", **SMALL), 4, 16, density=0.25)
    assert (config.env_config.height, config.env_config.width) == (8, 8)
    sparse = evaluation_config(make_config("jungle", **SMALL), 4, 16, density=0.04)
    assert (sparse.env_config.height, sparse.env_config.width) == (20, 20)
    code = evaluate_cli.main(["--run", str(jungle_run), "--density", "0.2", "--episodes", "2"])
    assert code == 2 and "'density'=0.2: needs num_agents" in capsys.readouterr().err
    code = evaluate_cli.main(["--run", str(jungle_run), "--num-agents", "16", "--density", "1.5",
                              "--episodes", "2"])  # fmt: skip
    assert code == 2 and "invalid density=1.5: must be in (0, 1]" in capsys.readouterr().err
    code = evaluate_cli.main(["--run", str(jungle_run), "--num-agents", "16", "--density", "0.25",
                              "--episodes", "2"])  # fmt: skip
    assert code == 0 and "16 agents (0.25 per cell)" in capsys.readouterr().out


def test_evaluate_at_depth_0_plays_every_agent_alone(jungle_run, capsys):
    """``depth=0``: every ego-graph is the agent alone, so ensembling has nothing to average
    (``mean_prob`` and ``none`` play the same episodes from the same seed), while at the run's
    own depth the same crowd's ego-graphs hold several agents."""
    crowd = dict(episodes=6, num_agents=16, density=0.25, seed=1)
    alone = {
        m: evaluate_run(jungle_run, ensemble=m, depth=0, **crowd) for m in ("mean_prob", "none")
    }
    assert alone["none"]["depth"] == 0
    assert alone["none"]["graph"]["graph_max_nodes"] == 1
    assert alone["none"]["graph"]["graph_nodes"] == pytest.approx(1.0)
    np.testing.assert_array_equal(alone["mean_prob"]["per_episode"]["score"],
                                  alone["none"]["per_episode"]["score"])  # fmt: skip
    own = evaluate_run(jungle_run, ensemble="none", **crowd)
    assert own["depth"] == 2 and own["graph"]["graph_max_nodes"] > 1
    with pytest.raises(ValueError, match="'depth'=1: algo='vanilla_pg' plays without ego-graphs"):
        evaluation_config(make_config("jungle", algo="vanilla_pg", **SMALL), 4, depth=1)
    code = evaluate_cli.main(["--run", str(jungle_run), "--depth", "-1", "--episodes", "2"])
    assert code == 2 and "'depth'=-1: must be >= 0" in capsys.readouterr().err
    code = evaluate_cli.main(["--run", str(jungle_run), "--depth", "0", "--episodes", "2"])
    assert code == 0 and "depth 0" in capsys.readouterr().out


def test_evaluate_cli_writes_json_and_rejects_bad_input(jungle_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = evaluate_cli.main(["--run", str(jungle_run), "--episodes", "20", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 20 and "score_vs_oracle" in summary
    shares = {k: v["share"] for k, v in summary["oracle_breakdown"].items()}
    assert sum(shares.get(k, 0) for k in ("all_alive", "with_deaths")) == pytest.approx(1.0)
    food = sum(v for k, v in shares.items() if k.startswith("food_"))
    assert food == pytest.approx(1.0)  # tiny Jungle has one food per episode
    printed = capsys.readouterr().out
    assert "score_vs_oracle" in printed and "by episode" in printed
    assert evaluate_cli.main(["--run", str(jungle_run), "--opponent", "nobody"]) == 2
    allowed = (
        "choose one of: random, scripted, pack, strike, strike2, claim, informed, lookahead, "
        "<run directory>"
    )
    assert f"invalid opponent='nobody'; {allowed}" in capsys.readouterr().err
    assert evaluate_cli.main(["--run", str(jungle_run), "--opponent", "rollout"]) == 2  # a teacher
    assert f"invalid opponent='rollout'; {allowed}" in capsys.readouterr().err
    assert evaluate_cli.main(["--run", str(jungle_run), "--ensemble", "max"]) == 2
    assert evaluate_cli.main(["--run", str(tmp_path), "--episodes", "5"]) == 2


def test_evaluate_cli_pairs_the_ensemble_modes_on_the_same_episodes(
    jungle_run, tmp_path, capsys, monkeypatch
):
    """``--paired-ensemble``: the run's evaluation as without it, plus the paired differences
    against a second evaluation that differs only in the ensemble mode (same episodes, seed and
    batches: the same start states)."""
    from qmarl_jax import evaluate as evaluate_lib

    out = tmp_path / "paired.json"
    args = ["--run", str(jungle_run), "--episodes", "12", "--batch-size", "6", "--seed", "4"]
    assert evaluate_cli.main([*args, "--paired-ensemble", "none", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    own = evaluate_run(jungle_run, episodes=12, batch_size=6, seed=4)
    none = evaluate_run(jungle_run, episodes=12, batch_size=6, seed=4, ensemble="none")
    assert summary["ensemble"] == "mean_prob" and summary["paired"]["ensemble"] == "none"
    assert summary["metrics"] == own["metrics"]
    paired = evaluate_lib.paired_difference(own["per_episode"], none["per_episode"])
    assert summary["paired"]["difference"] == paired  # (zeros: this tiny policy plays alike)
    assert "paired on the same episodes: ensemble mean_prob minus none" in capsys.readouterr().out
    # The two calls differ only in the mode, and the difference is the run's mode minus it.
    calls = []

    def fake_run(run, ensemble=None, **settings):
        calls.append((ensemble, settings))
        score = np.array([3.0, 5.0]) if ensemble is None else np.array([1.0, 4.0])
        return {**own, "ensemble": ensemble or "mean_prob", "per_episode": {"score": score}}

    monkeypatch.setattr(evaluate_lib, "evaluate_run", fake_run)
    assert evaluate_cli.main([*args, "--paired-ensemble", "mean_logit", "--json", str(out)]) == 0
    (first, settings), (second, settings_again) = calls
    assert (first, second) == (None, "mean_logit") and settings == settings_again
    assert (settings["episodes"], settings["batch_size"], settings["seed"]) == (12, 6, 4)
    difference = json.loads(out.read_text())["paired"]["difference"]["score"]
    assert difference["mean"] == 1.5 and difference["low"] < 1.5 < difference["high"]
    assert evaluate_cli.main([*args, "--paired-ensemble", "max"]) == 2
    allowed = "choose one of: mean_prob, mean_logit, none"
    assert f"invalid paired_ensemble='max'; {allowed}" in capsys.readouterr().err
    assert len(calls) == 2  # refused before playing


def test_evaluate_cli_pairs_the_run_with_another_run_on_the_same_episodes(
    jungle_run, tmp_path, capsys
):
    """``--paired-run OTHER``: the run's evaluation as without it, plus the paired differences
    against OTHER's parameters played on the same episodes with the same keys (a copy of the
    run's own parameters plays every game the same way: a difference of exactly 0)."""
    from experiments import export_policy
    from qmarl_jax import evaluate as evaluate_lib
    from qmarl_jax.checkpoint import save_policy
    from qmarl_jax.train import Trainer

    config = make_config("jungle", **SMALL)
    other = tmp_path / "other"
    save_policy(other, config, (Trainer(config).init(jax.random.PRNGKey(7)).teams[0].params,), 0)
    twin = tmp_path / "twin"
    export_policy.main(export_policy.Args(run=str(jungle_run), out=str(twin)))
    out = tmp_path / "paired.json"
    args = ["--run", str(jungle_run), "--episodes", "12", "--batch-size", "6", "--seed", "4"]
    assert evaluate_cli.main([*args, "--paired-run", str(other), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    own = evaluate_run(jungle_run, episodes=12, batch_size=6, seed=4)
    theirs = evaluate_run(other, episodes=12, batch_size=6, seed=4)
    assert summary["metrics"] == own["metrics"] and summary["paired"]["run"] == str(other)
    paired = evaluate_lib.paired_difference(own["per_episode"], theirs["per_episode"])
    assert summary["paired"]["difference"] == paired
    assert own["per_episode"]["score"].tolist() != theirs["per_episode"]["score"].tolist()
    assert f"paired on the same episodes: this run minus {other}" in capsys.readouterr().out
    assert evaluate_cli.main([*args, "--paired-run", str(twin), "--json", str(out)]) == 0
    difference = json.loads(out.read_text())["paired"]["difference"]
    assert difference["score"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    # Refused before any game is played.
    assert evaluate_cli.main([*args, "--paired-run", str(twin), "--paired-ensemble", "none"]) == 2
    assert "give it or --paired-ensemble, not both" in capsys.readouterr().err
    battle = tmp_path / "battle"
    battle.mkdir()
    save_config(battle, make_config("battle", **SMALL))
    assert evaluate_cli.main([*args, "--paired-run", str(battle)]) == 2
    assert "is a battle run" in capsys.readouterr().err
    seed_set = tmp_path / "set"
    seed_set.mkdir()
    (seed_set / loop.SEED_SET_FILE).write_text(json.dumps({"seeds": [0, 1]}))
    assert evaluate_cli.main([*args, "--paired-run", str(seed_set)]) == 2
    assert "is a seed set (seeds [0, 1])" in capsys.readouterr().err


def test_evaluate_with_ensemble_hops_plays_one_ego_graph_per_agent(jungle_run, tmp_path, capsys):
    """``--ensemble-hops 0`` lets only each agent's own ego-graph vote: the same episodes as
    ``--ensemble none`` from the same seed, in a crowd where ego-graphs hold several agents; the
    setting is passed to the config (with one graph per agent) and reported."""
    crowd = dict(episodes=6, num_agents=16, density=0.25, seed=1)
    own = evaluate_run(jungle_run, ensemble="mean_prob", ensemble_hops=0, **crowd)
    none = evaluate_run(jungle_run, ensemble="none", **crowd)
    assert own["ensemble_hops"] == 0 and own["graph"]["graph_max_nodes"] > 1
    np.testing.assert_array_equal(own["per_episode"]["score"], none["per_episode"]["score"])
    config = evaluation_config(make_config("jungle", **SMALL), 4, ensemble_hops=1)
    assert config.ensemble_hops == 1 and not config.share_ego_graphs
    out = tmp_path / "hops.json"
    args = ["--run", str(jungle_run), "--episodes", "2", "--ensemble-hops", "1"]
    assert evaluate_cli.main([*args, "--paired-ensemble", "none", "--json", str(out)]) == 0
    assert "ensemble mean_prob (ego-graphs within 1 hops)" in capsys.readouterr().out
    assert json.loads(out.read_text())["ensemble_hops"] == 1
    assert evaluate_cli.main([*args[:-1], "-1"]) == 2
    assert "'ensemble_hops'=-1: must be >= 0" in capsys.readouterr().err


def test_evaluate_cli_above_the_oracle_cap_reports_without_the_bound(
    jungle_run, tmp_path, capsys, monkeypatch
):
    """Jungle with more agents than the oracle's assignment can afford: no bound, no ratio, and
    the report and the JSON are still written (they once failed on the missing bound)."""
    from qmarl_jax import evaluate as evaluate_lib

    monkeypatch.setattr(evaluate_lib, "ORACLE_MAX_AGENTS", 3)  # tiny has 4 agents
    out = tmp_path / "eval.json"
    code = evaluate_cli.main(["--run", str(jungle_run), "--episodes", "8", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert "oracle" not in summary["metrics"] and "score_vs_oracle" not in summary
    assert "score" in summary["metrics"]
    printed = capsys.readouterr().out
    assert "score " in printed and "oracle" not in printed


def test_battle_against_another_runs_frozen_policy_and_one_team_of_a_self_play_run(
    tmp_path, capsys
):
    """A run against another run's frozen policy, a self-play run against itself, and one
    learned team of it (``team``) against a chosen opponent: each the same numbers as playing
    the parameters by hand in the config that has those controllers."""
    import dataclasses

    from qmarl_jax.evaluate import evaluate_params

    config = make_config("battle", max_steps=8, **SMALL)
    run = loop.train(config, run_dir=tmp_path / "a", progress=False, finish=False)
    both_learn = dataclasses.replace(config, controllers=("learn", "learn"))
    selfplay = loop.train(both_learn, run_dir=tmp_path / "selfplay", progress=False, finish=False)
    (_, runner), (_, pair) = loop.load_runner(run), loop.load_runner(selfplay)

    def by_hand(controllers, params):
        changed = dataclasses.replace(config, controllers=controllers)
        return evaluate_params(evaluation_config(changed, 12, opponent=None), params, 12, seed=2)

    # The run's team 0 against the self-play run's team 1.
    summary = evaluate_run(run, episodes=12, opponent=str(selfplay), seed=2)
    expected = by_hand(("learn", "learn"), (runner.teams[0].params, pair.teams[1].params))
    assert summary["metrics"] == expected["metrics"] and summary["opponent"] == str(selfplay)
    m = summary["metrics"]
    assert m["win"]["mean"] + m["draw"]["mean"] + m["loss"]["mean"] == pytest.approx(1.0)
    # Without ``team`` the self-play run plays itself (the opponent stands in for no one).
    itself = evaluate_run(selfplay, episodes=12, opponent="random", seed=2)
    pair_params = tuple(t.params for t in pair.teams)
    assert itself["metrics"] == by_hand(("learn", "learn"), pair_params)["metrics"]
    assert itself["team"] == 0
    # ``team=1``: that team alone against the opponent.
    alone = evaluate_run(selfplay, episodes=12, opponent="random", team=1, seed=2)
    assert alone["metrics"] == by_hand(("random", "learn"), pair_params[1:])["metrics"]
    assert alone["team"] == 1 and alone["opponent"] == "random"
    # Battle's strike rule as the opponent.
    struck = evaluate_run(run, episodes=12, opponent="strike", seed=2)
    assert struck["metrics"] == by_hand(("learn", "strike"), (runner.teams[0].params,))["metrics"]
    assert struck["metrics"] != evaluate_run(run, episodes=12, seed=2)["metrics"]
    # Refused before anything is loaded or compiled: a team the run did not learn, a team with
    # nobody to play the others, a network mismatch (read from the opponent's saved config).
    assert evaluate_cli.main(["--run", str(run), "--team", "1", "--episodes", "4"]) == 2
    assert "invalid team=1; choose one of the run's learned teams: 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="team=1 needs an opponent"):
        evaluate_run(selfplay, episodes=4, opponent=None, team=1)
    wide = make_config("battle", max_steps=8, **{**SMALL, "width": 32})
    (tmp_path / "c").mkdir()
    save_config(tmp_path / "c", wide)
    with pytest.raises(ValueError, match="width: run 16, opponent 32"):
        evaluate_run(run, episodes=4, opponent=str(tmp_path / "c"))


def test_oracle_breakdown_on_hand_made_episodes():
    from qmarl_jax.evaluate import food_cell_kind, oracle_breakdown

    kinds = food_cell_kind(np.array([[0, 0], [0, 2], [2, 2], [4, 4], [4, 1]]), 5, 5)
    assert kinds.tolist() == ["corner", "edge", "interior", "corner", "edge"]
    score = np.array([40.0, 60.0, 90.0, 10.0, 50.0])
    oracle = np.array([50.0, 70.0, 100.0, 40.0, 60.0])
    survival = np.array([1.0, 1.0, 1.0, 0.75, 0.5])
    rows = oracle_breakdown(score, oracle, survival, kinds)
    assert rows["all_alive"] == {"share": 0.6, "score_vs_oracle": pytest.approx(190 / 220)}
    assert rows["with_deaths"] == {"share": 0.4, "score_vs_oracle": pytest.approx(60 / 100)}
    assert rows["food_corner"]["score_vs_oracle"] == pytest.approx(50 / 90)
    assert rows["food_edge"]["score_vs_oracle"] == pytest.approx(110 / 130)
    assert rows["food_interior"] == {"share": 0.2, "score_vs_oracle": pytest.approx(0.9)}
    assert set(oracle_breakdown(score[:3], oracle[:3], survival[:3])) == {"all_alive"}
