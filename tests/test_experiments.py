"""Smoke runs of the experiment commands on a tiny budget (real programs, tiny sizes)."""

import dataclasses
import json
import math
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.opponents import make_controller
from experiments import (
    bench_compile,
    bench_env,
    bench_oracle,
    bench_scaling,
    flop_floor,
    profile_train,
    reproduce,
    rollout,
    train_seeds,
)
from qmarl_jax import loop
from qmarl_jax.config import make_config


def test_reproduce_curves_table1_and_tables(tmp_path):
    args = reproduce.Args(stage="curves", scenarios=("jungle",), algos=("qmarl_ac",), seeds=2,
                          batches=1, games=2, episodes=4, out=str(tmp_path),
                          media=str(tmp_path / "media"))  # fmt: skip
    reproduce.main(args)
    curves = json.loads((tmp_path / "curves.json").read_text())["results"]
    assert len(curves["jungle/qmarl_ac"]["curves"]["score"]) == 2  # two seeds
    reproduce.main(reproduce.Args(**{**vars(args), "stage": "table1"}))
    table1 = json.loads((tmp_path / "table1.json").read_text())["results"]
    assert set(table1) == {f"jungle/qmarl_ac/{size}/{mode}" for size in ("train", "test")
                           for mode in ("mean_prob", "none")}  # fmt: skip
    assert len(table1["jungle/qmarl_ac/test/none"]["score_vs_oracle"]["seeds"]) == 2
    tables = (tmp_path / "tables.md").read_text()
    assert "| jungle | qmarl_ac |" in tables and "Ensemble ablation" in tables
    assert (tmp_path / "media" / "fig6-jungle.png").exists()  # not the repository's docs/media


@pytest.fixture(scope="session")
def seeds_run(tmp_path_factory):
    """One tiny ``train_seeds`` run (two seeds from ``--seed 5``, evaluated at two sizes) that
    the tests below read (one compile instead of one per test). Session scope: a module-scoped
    fixture is rebuilt whenever its worker ran another module's test in between."""
    out = tmp_path_factory.mktemp("seeds") / "ab.json"
    assert train_seeds.main(["--seeds", "2", "--seed", "5", "--json", str(out), "--algo",
                             "qmarl_ac", "--num-batches", "3", "--games-per-batch", "2",
                             "--max-steps", "4", "--width", "16", "--num-blocks", "1",
                             "--q-head", "dueling", "--eval-episodes", "6",
                             "--eval-num-agents", "8"]) == 0  # fmt: skip
    return json.loads(out.read_text())


def test_train_seeds_summarises_each_seeds_curve(seeds_run):
    result = seeds_run
    assert result["config"]["q_head"] == "dueling" and result["headline"] == "score"
    scores = result["curves"]["score"]
    assert len(scores) == 2 and all(len(seed) == 3 for seed in scores)
    assert result["last50_score_per_seed"] == pytest.approx([sum(s) / 3 for s in scores], 1e-3)
    assert scores[0] != scores[1]  # distinct seeds
    dropped = sum(map(sum, result["curves"]["graph_overflow_nodes"]))
    assert result["dropped_by_budget"]["nodes"] == pytest.approx(dropped)


def test_train_seeds_evaluates_each_seed_at_both_sizes(seeds_run):
    evaluation = seeds_run["evaluation"]
    assert set(evaluation) == {"train", "num_agents_8"}
    for size in evaluation.values():
        assert len(size["score"]["seeds"]) == 2 and len(size["score_vs_oracle"]["seeds"]) == 2
        assert size["score"]["mean"] == pytest.approx(np.mean(size["score"]["seeds"]))


def test_train_seeds_reads_seed_and_seeds_apart(seeds_run):
    assert seeds_run["config"]["seed"] == 5 and seeds_run["seeds"] == 2


def test_train_seeds_evaluation_is_the_evaluator_with_seed_1000_plus_index():
    from qmarl_jax.evaluate import Evaluator
    from qmarl_jax.train import Trainer

    # seeds_run's config and episodes: its evaluation program, compiled once.
    config = make_config("jungle", algo="qmarl_ac", q_head="dueling", seed=5, games_per_batch=2,
                         max_steps=4, width=16, num_blocks=1)  # fmt: skip
    trainer = Trainer(config)
    params = [tuple(t.params for t in trainer.init(jax.random.PRNGKey(s)).teams) for s in (0, 1)]
    configs = train_seeds.evaluation_configs(config, 6, None)
    evaluated = train_seeds.evaluate_final(configs, params, 6)["train"]
    direct = Evaluator(configs["train"])
    for index, seed_params in enumerate(params):
        expected = direct(seed_params, 6, seed=1000 + index)["metrics"]["score"]["mean"]
        assert evaluated["score"]["seeds"][index] == pytest.approx(expected)


def test_train_seeds_trains_each_seed_as_alone_and_keeps_the_budget_switches():
    """Seed ``s`` of the vmapped program is ``Trainer.train`` of its key alone (up to batched
    float rounding), and every budget-ladder switch of one run stays a switch (a ``cond``, not a
    select that runs every size) in the program of the seeds."""
    import re

    from qmarl_jax.train import Trainer

    config = make_config("battle", num_batches=2, seed=3, games_per_batch=4, max_steps=8,
                         width=16, num_blocks=1)  # fmt: skip
    trainer = Trainer(config)
    assert len(trainer.actor.ladder) > 1
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    conds = lambda fn, arg: len(re.findall(r"\bcond\[", str(jax.make_jaxpr(fn)(arg))))
    assert conds(reproduce.vmapped_train(trainer), keys) == conds(trainer.train, keys[0]) > 0
    params, curves, _ = reproduce.train_seeds(config, 2)
    alone = jax.jit(trainer.train)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for seed, key in enumerate(keys):
        runner, metrics = alone(key)
        for name, values in metrics.items():
            close(curves[name][seed], values)
        jax.tree.map(close, params[seed], tuple(team.params for team in runner.teams))
    assert curves["terminal_reward"][0] != curves["terminal_reward"][1]


def test_train_seeds_rejects_bad_evaluation_flags_before_training():
    with pytest.raises(ValueError, match="--eval-episodes=-1"):
        train_seeds.main(["--eval-episodes", "-1"])
    with pytest.raises(ValueError, match="num_agents=0"):
        train_seeds.main(["--eval-episodes", "2", "--eval-num-agents", "0"])


def test_rollout_runs_a_trained_policy_at_another_scale(tmp_path):
    config = make_config("battle", num_batches=1, games_per_batch=2, max_steps=4, width=16,
                         num_blocks=1)  # fmt: skip
    run = loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False)
    out = tmp_path / "big.gif"
    assert rollout.main(["--run", str(run), "--num-agents", "60", "--out", str(out),
                         "--json", str(tmp_path / "r.json")]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["num_agents"] == 60 and out.exists()
    assert rollout.main(["--run", str(run), "--ensemble", "max"]) == 2


def test_reproduce_depth_stage(tmp_path):
    # Depth 2 is the default: the curves test's training and evaluation programs, compiled once.
    args = reproduce.Args(stage="depth", scenarios=("jungle",), depths=(2,), seeds=2, batches=1,
                          games=2, episodes=4, out=str(tmp_path))  # fmt: skip
    reproduce.main(args)
    depth = json.loads((tmp_path / "depth.json").read_text())["results"]
    row = depth["jungle/depth2"]
    assert row["seconds_per_batch"] > 0 and len(row["evaluation"]["score"]["seeds"]) == 2
    assert "Depth sensitivity" in (tmp_path / "tables.md").read_text()


def test_bench_env_takes_env_overrides():
    assert bench_env.parse_overrides(("landmark_sight=4", "observe_time=True", "name=x")) == {
        "landmark_sight": 4, "observe_time": True, "name": "x",
    }  # fmt: skip
    with pytest.raises(ValueError, match="invalid --env entry 'landmark_sight': write FIELD=VALUE"):
        bench_env.parse_overrides(("landmark_sight",))
    row = bench_env.measure("deception", 10, 2, 2, 1, 0, ("landmark_sight=2",))
    assert row["env_overrides"] == ["landmark_sight=2"] and row["agent_steps_per_s"] > 0
    with pytest.raises(ValueError, match="'landmark_sight'=-1: must be >= 0"):
        bench_env.measure("deception", 10, 2, 2, 1, 0, ("landmark_sight=-1",))


def test_bench_compile_measures_a_variant_in_its_own_process(tmp_path):
    """One variant, one repeat: a child process with that variant's flags times each stage; the
    medians are taken per timing; bad settings are refused before any process starts."""
    args = bench_compile.Args(scenarios=("jungle",), algos=("qmarl_ac",), variants=("O0",),
                              repeats=1, calls=1, json=str(tmp_path / "compile.json"))  # fmt: skip
    rows = bench_compile.main(args)
    assert [(r["variant"], r["xla_flags"], r["scenario"]) for r in rows] == [
        ("O0", "--xla_backend_optimization_level=0", "jungle")]  # fmt: skip
    assert all(rows[0][key] > 0 for key in ("trace_s", "lower_s", "compile_s", "run_s"))
    assert json.loads((tmp_path / "compile.json").read_text()) == rows
    samples = [{"compile_s": 3.0, "run_s": 0.1}, {"compile_s": 1.0, "run_s": 0.3},
               {"compile_s": 2.0, "run_s": 0.2}]  # fmt: skip
    assert bench_compile.summarise(samples) == {"compile_s": 2.0, "run_s": 0.2}
    with pytest.raises(ValueError, match=r"'variants' has \['O3'\]; choose from: default, O0, "):
        bench_compile.main(dataclasses.replace(args, variants=("O3",)))
    with pytest.raises(ValueError, match="'repeats'=0: must be at least 1"):
        bench_compile.main(dataclasses.replace(args, repeats=0))


def test_bench_seed_set_times_the_set_against_its_runs_and_checks_they_agree(tmp_path):
    from experiments import bench_seed_set

    args = bench_seed_set.Args(scenario="jungle", preset="default", seeds=2, batches=1,
                               repeats=1, games_per_batch=2, width=16, max_steps=4,
                               json=str(tmp_path / "set.json"))  # fmt: skip
    result = bench_seed_set.main(args)
    rows = result["variants"]
    assert set(rows) == {"one_run", "seed_set", "seed_set_one_size"}
    assert all(row["seconds_per_batch"] > 0 for row in rows.values())
    assert result["speedup"] == pytest.approx(
        2 * rows["one_run"]["seconds"] / rows["seed_set"]["seconds"]
    )
    # The set's seed 0 plays and learns what its run alone does, up to float rounding.
    assert result["seed0_metric_max_abs_diff"] < 1e-3
    assert json.loads((tmp_path / "set.json").read_text()) == result
    with pytest.raises(ValueError, match="'seeds'=0: must be >= 1"):
        bench_seed_set.main(dataclasses.replace(args, seeds=0))


def test_bench_oracle_times_the_bound_of_reset_states(tmp_path):
    rows = bench_oracle.main(bench_oracle.Args(num_agents=(4, 40), episodes=2, repeats=1,
                                               json=str(tmp_path / "oracle.json")))  # fmt: skip
    assert [(row["num_agents"], row["num_food"]) for row in rows] == [(4, 1), (40, 10)]
    # Every agent next to food from its first step is the most a start state can be worth.
    assert all(0 < row["oracle_mean"] <= 100 and row["seconds_per_episode"] > 0 for row in rows)
    saved = json.loads((tmp_path / "oracle.json").read_text())
    assert saved["rows"] == rows and saved["backend"] == "cpu"
    with pytest.raises(ValueError, match="episodes=0"):
        bench_oracle.measure(4, 0, 1, 0)


@pytest.mark.slow
def test_reproduce_fig9_and_bench_scaling(tmp_path):
    reproduce.main(reproduce.Args(stage="fig9", sizes=(10,), out=str(tmp_path)))
    rows = json.loads((tmp_path / "fig9.json").read_text())["results"]["rows"]
    assert {r["algo"] for r in rows} == {"qmarl_ac", "mha"}
    results = bench_scaling.main(bench_scaling.Args(
        sizes=(10,), algos=("mha",), densities=(0.1,), density_agents=20, repeats=1,
        json=str(tmp_path / "bench.json"), plot=str(tmp_path / "scaling.png"),
    ))  # fmt: skip
    assert results["env"] and results["train"] and results["density"]
    assert (tmp_path / "scaling.png").exists() and not results["failed"]


def test_battle_reference_policies(tmp_path):
    import jax.numpy as jnp

    from experiments import battle_reference

    out = tmp_path / "ref.json"
    # rollout plays the first 100 games only: it costs about 5x all the others together.
    args = battle_reference.Args(episodes=300, json=str(out), lookahead_episodes=20,
                                 lookahead_candidates=4, lookahead_horizon=2,
                                 rollout_episodes=100)  # fmt: skip
    result = battle_reference.main(args)
    rows = json.loads(out.read_text())["references"]
    assert set(rows) == {*battle_reference.REFERENCES, "lookahead"} == set(result["references"])
    assert rows["lookahead"]["episodes"] == 20 and rows["pack"]["episodes"] == 300
    assert rows["rollout"]["episodes"] == 100
    for r in rows.values():
        assert r["win"]["mean"] + r["draw"]["mean"] + r["loss"]["mean"] == pytest.approx(1.0)
    mirror = rows["scripted"]["terminal_reward"]
    assert mirror["low"] <= 0 <= mirror["high"]  # the mirror match is symmetric
    assert rows["random"]["terminal_reward"]["mean"] < rows["stay"]["terminal_reward"]["mean"]
    # Packing into a corner beats holding scattered (-21.9 vs -49.4 over 2,000 episodes), and a
    # block beats a line along the edge (pack -3.6 vs corner -21.9).
    assert rows["corner"]["terminal_reward"]["low"] > rows["stay"]["terminal_reward"]["high"]
    assert rows["pack"]["terminal_reward"]["mean"] > rows["corner"]["terminal_reward"]["mean"]
    # One step of foresight over pack wins most games (+71.5 vs -3.6 over 2,000 episodes).
    assert rows["strike"]["terminal_reward"]["low"] > rows["pack"]["terminal_reward"]["high"]
    # Predicting the enemies' step is most of it (without: +32.7 over 2,000 episodes).
    strike_static = rows["strike_static"]["terminal_reward"]
    assert rows["strike"]["terminal_reward"]["low"] > strike_static["high"]
    # Each agent's own 2-step rollouts over strike beat the best local rule (+97.4 vs +79.3
    # over 2,000 episodes).
    assert rows["rollout"]["terminal_reward"]["low"] > rows["strike2"]["terminal_reward"]["high"]
    actions = battle_reference.corner_actions(jnp.asarray([[3, 4], [0, 4], [0, 0], [9, 0]]))
    assert actions.tolist() == [0, 2, 4, 0]  # up, left, stay, up


def test_battle_lookahead_plays_its_base_with_one_candidate_and_beats_it_with_more():
    import jax
    import numpy as np

    import envs
    from experiments import battle_reference as ref

    env, params = envs.make("battle")
    keys = jax.random.split(jax.random.PRNGKey(5), 100)
    base = ref.outcomes(env, params, ref.reference_policy(env, "pack"), keys)
    alone = ref.outcomes(env, params, ref.planner(env, params, 1, 3), keys)
    assert alone.tolist() == base.tolist()  # the base is candidate 0: same games
    planned = ref.outcomes(env, params, ref.planner(env, params, 8, 3), keys)
    planned_reward = ref.summarise_outcomes("lookahead", np.asarray(planned))["terminal_reward"]
    base_reward = ref.summarise_outcomes("pack", np.asarray(base))["terminal_reward"]
    assert planned_reward["low"] > base_reward["high"]  # +84.8 vs -3.6 over 500 / 2,000 games


def test_battle_reference_refuses_a_bad_planner_setting_before_playing():
    from experiments import battle_reference as ref

    with pytest.raises(ValueError, match="lookahead_horizon"):
        ref.main(ref.Args(episodes=10, lookahead_horizon=0))
    with pytest.raises(ValueError, match="lookahead_episodes"):
        ref.main(ref.Args(episodes=10, lookahead_episodes=20))
    for games in (0, 11):
        refused = rf"'rollout_episodes'={games}: must be in 1\.\.episodes"
        with pytest.raises(ValueError, match=refused):
            ref.main(ref.Args(episodes=10, lookahead_episodes=0, rollout_episodes=games))
    assert ref.reference_episodes(ref.Args(episodes=10, rollout_episodes=3), "rollout") == 3
    assert ref.reference_episodes(ref.Args(episodes=10, rollout_episodes=3), "strike") == 10
    assert ref.reference_episodes(ref.Args(episodes=10), "rollout") == 10


def test_deception_reference_rewards_follow_the_rules_on_the_final_states():
    import jax

    import envs
    from experiments import deception_reference

    env, params = envs.make("deception")
    keys = jax.random.split(jax.random.PRNGKey(3), 200)
    reward, final = jax.device_get(deception_reference.home_rewards(env, params, "scripted", keys))
    teams = np.asarray(env.teams)
    num_targets = env.config.num_targets
    for e in range(len(keys)):
        # The end-of-episode rule by hand: per target, +1 if a home agent stands on it and no
        # adversary is within Chebyshev distance 1 of it, else -1; the mean over targets.
        positions, alive = final.grid.positions[e], final.grid.alive[e]
        per_target = []
        for target in final.landmarks[e][:num_targets]:
            gap = np.abs(positions - target).max(axis=-1)
            covered = np.any(alive & (teams == 0) & (gap == 0))
            found = np.any(alive & (teams == 1) & (gap <= 1))
            per_target.append(1.0 if covered and not found else -1.0)
        assert reward[e] == pytest.approx(100.0 * np.mean(per_target)), e
    rows = deception_reference.main(deception_reference.Args(episodes=300))["references"]
    stay, random, scripted = (rows[name]["home_reward"] for name in ("stay", "random", "scripted"))
    assert stay["mean"] == -100.0  # agents start off the landmarks: holding never covers one
    assert scripted["low"] > random["high"]  # walking onto a seen target: -54 vs -97
    # Knowing every landmark: holding both (-14 on 2,000 games) beats the 3x3 rule, and luring
    # the adversary to the decoy first (+16) beats holding both.
    spread, decoy_first = (rows[name]["home_reward"] for name in ("spread", "decoy_first"))
    assert spread["low"] > scripted["high"] and decoy_first["low"] > spread["high"]


def test_full_information_plans_on_a_hand_built_state():
    import jax.numpy as jnp

    import envs
    from envs.core import DOWN, LEFT, RIGHT, STAY
    from experiments.deception_reference import DECOY_LEAD, full_information_moves

    env, _ = envs.make("deception", max_steps=25)
    # Home agents at (0,0) and (5,1), the adversary at (5,5); target (0,2), decoy (5,0).
    state = env.state_from(jnp.array([[0, 0], [5, 1], [5, 5]]), jnp.array([[0, 2], [5, 0]]))

    def moves(s, plan):  # the home agents' moves
        return np.asarray(full_information_moves(env, s, plan))[:2]

    np.testing.assert_array_equal(moves(state, "spread"), [RIGHT, LEFT])
    np.testing.assert_array_equal(moves(state, "decoy_first"), [DOWN, LEFT])
    # Agent 0 is 2 steps from the target: it leaves the decoy plan with 2 + DECOY_LEAD steps left.
    late = state.replace(step=jnp.int32(25 - 2 - DECOY_LEAD))
    np.testing.assert_array_equal(moves(late, "decoy_first"), [RIGHT, LEFT])
    np.testing.assert_array_equal(moves(late.replace(step=late.step - 1), "decoy_first")[0], DOWN)
    on_goals = env.state_from(jnp.array([[0, 2], [5, 0], [5, 5]]), jnp.array([[0, 2], [5, 0]]))
    np.testing.assert_array_equal(moves(on_goals, "spread"), [STAY, STAY])


def test_deception_optimum_moves_agree_with_the_env():
    import envs
    from experiments import deception_optimum

    env, params = envs.make("deception", height=4, width=4)
    world = deception_optimum.make_world(env)
    landmarks = np.array([[1, 1], [2, 3]])
    adversary, payoff = deception_optimum.state_arrays(world, landmarks)
    table = deception_optimum.next_states(world, adversary)
    step = jax.jit(lambda key, state, actions: env.transition(key, state, actions, params)[0])
    rng = np.random.default_rng(0)
    contested = 0
    for s in rng.choice(np.flatnonzero(world.distinct), 60, replace=False):
        state = env.state_from(jnp.asarray(world.rows_cols[s]), jnp.asarray(landmarks))
        scripted = np.asarray(make_controller("scripted", env)(jax.random.PRNGKey(0), state,
                                                               params))  # fmt: skip
        assert adversary[s, 2] == scripted[2]
        assert payoff[s] == env.home_payoff(*env.target_status(state.grid, state.landmarks))
        joint = int(rng.integers(25))
        actions = jnp.array([joint // 5, joint % 5, scripted[2]], jnp.int32)
        outcomes = set(table[s, joint].tolist())
        contested += len(outcomes) > 1
        reached = set()
        for k in range(16):  # the env's random priorities reach only modelled outcomes
            cells = np.asarray(step(jax.random.PRNGKey(k), state, actions).grid.positions)
            reached.add(int(world.index(cells[:, 0] * 4 + cells[:, 1])))
        assert reached <= outcomes, s
        if len(outcomes) == 1:
            assert reached == outcomes
    assert contested  # the sample holds cells claimed by two agents


def _brute_force_optimum(env, landmarks):
    """The home team's best expected payoff x100 by plain recursion over every start state."""
    import functools
    import itertools

    cfg, teams = env.config, np.asarray(env.teams)
    params, scripted = env.default_params(), make_controller("scripted", env)
    target = tuple(landmarks[0])
    moves = [(-1, 0), (1, 0), (0, -1), (0, 1), (0, 0)]  # up, down, left, right, stay

    @functools.cache
    def adversary_moves(cells):
        state = env.state_from(jnp.array(cells), jnp.asarray(landmarks))
        return tuple(int(a) for a in scripted(jax.random.PRNGKey(0), state, params))

    def payoff(cells):
        covered = any(c == target for c, t in zip(cells, teams, strict=True) if t == 0)
        found = any(max(abs(c[0] - target[0]), abs(c[1] - target[1])) <= 1
                    for c, t in zip(cells, teams, strict=True) if t == 1)  # fmt: skip
        return 1.0 if covered and not found else -1.0

    def outcomes(cells, actions):
        for order in itertools.permutations(range(len(cells))):
            claimed, after = set(), list(cells)
            for i in order:
                r, c = cells[i][0] + moves[actions[i]][0], cells[i][1] + moves[actions[i]][1]
                free = 0 <= r < cfg.height and 0 <= c < cfg.width and (r, c) not in cells
                if actions[i] != 4 and free and (r, c) not in claimed:
                    claimed.add((r, c))
                    after[i] = (r, c)
            yield tuple(after)

    @functools.cache
    def value(cells, step):
        if step == cfg.max_steps:
            return payoff(cells)
        scripted_actions = adversary_moves(cells)
        best = -math.inf
        for home_actions in itertools.product(range(5), repeat=int(np.sum(teams == 0))):
            actions = list(home_actions) + list(scripted_actions[len(home_actions) :])
            nexts = list(outcomes(cells, actions))
            best = max(best, sum(value(n, step + 1) for n in nexts) / len(nexts))
        return best

    free = [(r, c) for r in range(cfg.height) for c in range(cfg.width)
            if (r, c) not in {tuple(x) for x in landmarks}]  # fmt: skip
    starts = list(itertools.permutations(free, env.num_agents))
    return 100.0 * sum(value(start, 0) for start in starts) / len(starts)


def test_deception_optimum_matches_brute_force_on_a_tiny_world():
    import envs
    from experiments import deception_optimum

    env, _ = envs.make("deception", height=3, width=3, max_steps=3)
    world = deception_optimum.make_world(env)
    landmarks = np.array([[0, 2], [2, 0]])  # target in a corner, decoy in the opposite one
    expected = _brute_force_optimum(env, landmarks)
    assert deception_optimum.start_value(world, landmarks) == pytest.approx(expected, abs=1e-9)
    assert -100.0 < expected < 100.0  # neither a sure win nor a sure loss: the check has teeth


def test_optimal_plan_games_reach_its_value():
    import envs
    from experiments import deception_optimum

    env, _ = envs.make("deception", height=3, width=3, max_steps=3)
    world = deception_optimum.make_world(env)
    landmarks = np.array([[0, 2], [2, 0]])
    solution = deception_optimum.solve(world, landmarks)
    starts = np.flatnonzero(deception_optimum.start_states(world, landmarks))
    rng = np.random.default_rng(0)
    # A start whose value needs luck (a contested cell) as well as the plan.
    start = next(s for s in starts if abs(solution.values[0][s]) < 0.99)
    games = [deception_optimum.play_optimal(solution, start, rng) for _ in range(1500)]
    for game in games[:50]:  # every move is one of the modelled outcomes of some joint action
        for t in range(3):
            assert game[t + 1] in solution.table[game[t]]
    payoff = np.mean([solution.payoff[game[-1]] for game in games])
    assert payoff == pytest.approx(solution.values[0][start], abs=0.08)


def test_deception_optimum_command_and_size_guard(tmp_path):
    import envs
    from experiments import deception_optimum

    out = tmp_path / "opt.json"
    result = deception_optimum.main(deception_optimum.Args(height=3, width=3, max_steps=2,
                                                           layouts=0, rollouts=2,
                                                           json=str(out)))  # fmt: skip
    assert result["optimal_plan"]["games"] == 2 * 72
    assert (
        result["layouts"] == 9 * 8
        and len(json.loads(out.read_text())["per_layout"]["home_reward"]) == 72
    )
    with pytest.raises(ValueError, match=r"num_agents=3 .*use a smaller world"):
        deception_optimum.make_world(envs.make("deception", height=20, width=20)[0])
    with pytest.raises(ValueError, match="invalid layouts=-1"):
        deception_optimum.main(deception_optimum.Args(layouts=-1))


def test_jungle_reference_local_rule_on_hand_built_states():
    import jax
    import jax.numpy as jnp

    import envs
    from envs.core import DOWN, RIGHT, STAY
    from experiments import jungle_reference

    env, _ = envs.make("jungle", "tiny")
    # 5x5, food at (2, 2). Agent 0 sees it diagonally; agent 1 touches it; agent 2 sits in the
    # corner with agent 3 diagonal to it, so both its moves would stand next to agent 3.
    state = env.state_from(jnp.asarray([[1, 1], [3, 2], [4, 4], [3, 3]]), jnp.asarray([[2, 2]]))
    seen = set()
    for seed in range(32):
        key = jax.random.PRNGKey(seed)
        local = jungle_reference.reference_actions("local", env, key, state).tolist()
        assert local[0] in (DOWN, RIGHT)  # onto a food side
        assert local[1] == local[2] == STAY  # beside food; both moves touch agent 3
        seen.add(local[0])
    assert seen == {DOWN, RIGHT}  # ties are broken at random


def test_jungle_reference_stays_under_the_oracle_bound(tmp_path):
    from experiments import jungle_reference

    args = jungle_reference.Args(episodes=48, seed=3, json=str(tmp_path / "ref.json"),
                                 lookahead_episodes=48, lookahead_candidates=8,
                                 lookahead_horizon=4)  # fmt: skip
    scores = jungle_reference.score_references(args)
    for reference, (score, bound) in scores.items():
        assert score.mean() < bound.mean()
        if reference != "claim":  # the bound holds episode by episode for the rest; claim's
            assert (score <= bound + 1e-4).all()  # hand-offs can beat it by a step a game
    means = {reference: score.mean() for reference, (score, _) in scores.items()}
    # The planner improves on its base (1,000 games, 64 candidates x 12 steps: 0.984 of the
    # bound against informed's 0.772); claim, which matches agents to food sides, beats both
    # greedy rules (0.958).
    assert means["random"] < means["local"] < means["informed"] < means["lookahead"]
    assert means["informed"] < means["claim"]
    jungle_reference.main(args, scores)
    rows = json.loads((tmp_path / "ref.json").read_text())["references"]
    assert set(rows) == {*jungle_reference.REFERENCES, "informed", "claim", "lookahead"}
    ratio = rows["informed"]["score_vs_oracle"]
    assert ratio == pytest.approx(means["informed"] / scores["informed"][1].mean())


def test_jungle_reference_plays_at_twice_the_size(tmp_path):
    from experiments import jungle_reference

    args = jungle_reference.Args(episodes=16, num_agents=8, lookahead_episodes=0,
                                 json=str(tmp_path / "ref.json"))  # fmt: skip
    scores = jungle_reference.score_references(args)
    for reference, (score, bound) in scores.items():
        assert score.mean() < bound.mean()
        assert reference == "claim" or (score <= bound + 1e-4).all()
    result = jungle_reference.main(args, scores)
    assert result["num_agents"] == 8 and "lookahead" not in result["references"]
    env, _ = jungle_reference.reference_env(args)
    assert (env.num_agents, env.config.height, env.config.num_food) == (8, 7, 2)


def test_jungle_reference_refuses_a_bad_planner_setting_before_playing():
    from experiments import jungle_reference as ref

    with pytest.raises(ValueError, match="lookahead_candidates"):
        ref.score_references(ref.Args(episodes=10, lookahead_episodes=10, lookahead_candidates=0))
    with pytest.raises(ValueError, match="lookahead_episodes"):
        ref.score_references(ref.Args(episodes=10))  # the default plans 1,000 games


def test_planner_rollouts_stop_at_the_end_of_the_episode():
    import jax
    import jax.numpy as jnp

    import envs
    from envs.core import STAY
    from envs.planner import rollout_value

    env, params = envs.make("jungle", "tiny")
    # 5x5, food at (2, 2): agents 0 and 1 beside it, 2 and 3 apart from everyone; all hold.
    state = env.state_from(jnp.asarray([[1, 2], [2, 1], [4, 4], [0, 4]]), jnp.asarray([[2, 2]]))
    hold = lambda key, state: jnp.full(env.num_agents, STAY, jnp.int32)
    rewards = lambda final, rewards: rewards
    key, first = jax.random.PRNGKey(0), hold(None, state)
    played = rollout_value(env, params, hold, rewards, horizon=5)
    assert played(key, state, first).tolist() == [5, 5, 0, 0]
    near_end = state.replace(step=jnp.int32(env.config.max_steps - 2))
    assert played(key, near_end, first).tolist() == [2, 2, 0, 0]  # 2 steps were left


def test_profile_train_names_kernels_by_source_scope(tmp_path):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="head")(jnp.tanh(x))

    x = jnp.ones((2, 4))
    params = Tiny().init(jax.random.key(0), x)
    text = jax.jit(Tiny().apply).lower(params, x).compile().as_text()
    names = profile_train.op_names(text).values()
    assert any(name.endswith("head/dot_general") for name in names)
    assert profile_train.scope("jit(f)/while/body/eval_jaxpr/Tiny/head/dot_general", 8) == (
        "Tiny/head"
    )
    assert profile_train.scope("copy.12", 8) == "hlo:copy"
    result = profile_train.main(profile_train.Args(
        num_agents=10, games=2, batches=1, repeats=1, json=str(tmp_path / "profile.json"),
    ))  # fmt: skip
    assert result["device_ms_per_batch"] > 0 and result["kernels_per_batch"] > 0
    scopes = dict(profile_train.by_scope(result["ms_per_op_name"], 1))
    assert any(name.startswith("transpose(jvp(ActorCritic") for name in scopes)  # the update
    assert json.loads((tmp_path / "profile.json").read_text())["ms_per_op_name"]


def test_flop_floor_counts_products_and_the_batch(tmp_path):
    import jax.numpy as jnp

    x, w = jnp.ones((6, 4)), jnp.ones((4, 3))
    assert flop_floor.cost_flops(lambda x, w: x @ w, x, w) == 2 * 6 * 4 * 3
    row = flop_floor.main(flop_floor.Args(
        num_agents=10, games=2, repeats=1, matmul_rows=64, matmul_chain=2,
        json=str(tmp_path / "floor.json"),
    ))  # fmt: skip
    # The update runs both trunks forward and backward; acting runs the actor forward only.
    assert row["update_gflop_per_batch"] > 2 * row["acting_gflop_per_batch"] > 0
    assert row["matmul_gflop_per_s"] > 0 and row["floor_s_per_100_episodes"] > 0
    assert json.loads((tmp_path / "floor.json").read_text())["update_chunks"] == 30


def test_battle_imitation_labels_states_with_the_planner_and_grows_the_data(tmp_path):
    """A tiny DAgger run grows the data set by ``games x max_steps`` states per iteration and
    every row carries rates that sum to 1; in planner-played games the labels are the planner's
    actions on the recorded state and they are what moved team 0 (replayed through the env with
    the same keys)."""
    from experiments import battle_imitation as imitation
    from experiments.battle_reference import planner

    args = imitation.Args(iterations=2, games=3, epochs=1, minibatch=16, eval_episodes=6,
                          candidates=2, horizon=2, json=str(tmp_path / "im.json"),
                          run_dir=str(tmp_path / "student"), teacher_games=3)  # fmt: skip
    result = imitation.main(args)
    # The saved student is a run at batch 0 (what `train --resume` restores): its config loads
    # and its checkpoint restores into that config's state with the student's parameters.
    from qmarl_jax.checkpoint import Checkpointer, load_config

    saved = load_config(tmp_path / "student")
    student = imitation.Trainer(saved)
    runner = Checkpointer(tmp_path / "student").restore(student.init(jax.random.PRNGKey(0)))
    assert int(runner.batch) == 0 and saved.view_radius == 1
    fresh = student.init(jax.random.PRNGKey(saved.seed)).teams[0].params
    assert any(
        not np.allclose(a, b)
        for a, b in zip(
            jax.tree.leaves(runner.teams[0].params), jax.tree.leaves(fresh), strict=True
        )
    )
    rows = json.loads((tmp_path / "im.json").read_text())["iterations_run"]
    assert [r["states"] for r in rows] == [90, 180]
    assert [r["states"] for r in result["iterations_run"]] == [90, 180]
    for r in rows:
        assert 0 <= r["agreement"] <= 1
        assert r["win"]["mean"] + r["draw"]["mean"] + r["loss"]["mean"] == pytest.approx(1.0)
        for measured in ("fitted_agreement", "teacher_games_agreement"):
            assert 0 <= r[measured]["all"] <= 1 and 0 <= r[measured]["departures"] <= 1

    # main's planner-played games (same config, planner and game count): one compile for both.
    trainer = imitation.Trainer(saved)
    env, env_params, games = trainer.env, trainer.env_params, args.games
    teacher = planner(env, env_params, args.candidates, args.horizon)
    play = imitation.labelled_games(trainer, teacher, games, True)
    data = play(runner.teams[0].params, jax.random.PRNGKey(3))
    team0 = np.asarray(env.teams) == 0
    assert data.weight.shape == (30 * games, 14) and not np.asarray(data.weight)[:, ~team0].any()
    assert np.asarray(data.weight)[:games][:, team0].all()  # everyone alive at the start
    reset_key, steps_key = jax.random.split(jax.random.PRNGKey(3))
    _, states = env.batch_reset(jax.random.split(reset_key, games), env_params)
    label_key, _, other_key, step_key = jax.random.split(jax.random.split(steps_key, 30)[0], 4)
    labels = jax.vmap(teacher)(jax.random.split(label_key, games), states)
    np.testing.assert_array_equal(data.labels[:games], labels)
    np.testing.assert_array_equal(data.grids.positions[:games], states.grid.positions)
    scripted = make_controller("scripted", env)
    other = jax.vmap(scripted, in_axes=(0, 0, None))(jax.random.split(other_key, games), states,
                                                     None)  # fmt: skip
    moved = jnp.where(jnp.asarray(team0), labels, other)
    step = jax.vmap(env.step_no_reset, in_axes=(0, 0, 0, None))
    _, after, *_ = step(jax.random.split(step_key, games), states, moved, env_params)
    np.testing.assert_array_equal(data.grids.positions[games : 2 * games], after.grid.positions)
    # The teacher's unseen games are played on their own key stream, and the last row measures
    # the saved (final) student on them.
    stream_key = jax.random.split(jax.random.PRNGKey(args.seed))[1]
    unseen = play(None, jax.random.fold_in(stream_key, imitation.TEACHER_GAMES_STREAM))
    expected = imitation.label_agreement(trainer, runner.teams[0].params, unseen, args.minibatch)
    assert rows[-1]["teacher_games_agreement"] == pytest.approx(expected, rel=1e-6)
    first_fitted = play(None, jax.random.split(jax.random.fold_in(stream_key, 0), 3)[0])
    assert not np.array_equal(unseen.grids.positions[:games], first_fitted.grids.positions[:games])


def test_battle_imitation_strike_teacher_labels_with_the_strike_rule():
    import envs
    from experiments import battle_imitation as imitation
    from experiments import battle_reference as ref

    env, params = envs.make("battle")
    teacher = imitation.make_teacher(env, params, imitation.Args(teacher="strike"))
    _, state = env.reset(jax.random.PRNGKey(4), params)
    for _ in range(12):  # into the fight
        _, state, *_ = env.step(jax.random.PRNGKey(0), state, teacher(None, state), params)
    predicted = make_controller("scripted", env)(None, state, None)
    expected = ref.strike_actions(env, state.grid, predicted)
    np.testing.assert_array_equal(teacher(jax.random.PRNGKey(1), state), expected)
    with pytest.raises(ValueError, match="teacher"):
        imitation.check(imitation.Args(teacher="oracle"))


@pytest.mark.parametrize("teacher", ["strike2", "rollout"])
def test_battle_imitation_labels_with_the_named_rule_and_builds_the_named_network(teacher):
    """``--teacher strike2 | rollout`` labels with that controller's team-0 moves; the student's
    graph radius and width are the ones asked for (``--graph-radius 2 --view-radius 3``: the
    ``kickstart`` preset's network)."""
    import envs
    from experiments import battle_imitation as imitation

    env, params = envs.make("battle")
    args = imitation.Args(teacher=teacher)
    labels_of = imitation.make_teacher(env, params, args)
    rule, strike = make_controller(teacher, env), make_controller("strike", env)
    _, state = env.reset(jax.random.PRNGKey(4), params)
    team0 = np.asarray(env.teams) == 0
    departures_from_strike = 0
    for step in range(12):  # into the fight, labelled at every step
        key = jax.random.PRNGKey(step)
        expected = np.asarray(rule(key, state, None))
        labels = np.asarray(labels_of(key, state))
        np.testing.assert_array_equal(labels[team0], expected[team0])
        departures_from_strike += int(
            np.sum(labels[team0] != np.asarray(strike(key, state, None))[team0])
        )
        _, state, *_ = env.step(key, state, jnp.asarray(labels), params)
    assert departures_from_strike > 0  # these steps tell the named teacher from strike
    config = imitation.student_config(imitation.Args(view_radius=3, graph_radius=2, width=32))
    assert (config.view_radius, config.graph_radius, config.width) == (3, 2, 32)
    assert config.kickstart is None  # the student is fitted, not kickstarted
    assert imitation.student_config(imitation.Args()).graph_radius is None  # the env's default


def test_battle_imitation_fit_copies_a_constant_teacher():
    """Fitting labels that are all UP makes the student's argmax UP on every labelled node."""
    from envs.core import LEFT, UP
    from experiments import battle_imitation as imitation

    trainer = imitation.Trainer(make_config("battle", width=16, num_blocks=1))
    obs, states = trainer.env.batch_reset(jax.random.split(jax.random.PRNGKey(0), 32),
                                          trainer.env_params)  # fmt: skip
    team0 = jnp.asarray(trainer.env.teams) == 0
    data = imitation.Labelled(
        obs.features, states.grid, jnp.full(obs.alive.shape, UP, jnp.int32), obs.alive & team0
    )
    params = trainer.init(jax.random.PRNGKey(1)).teams[0].params
    args = imitation.Args(epochs=30, minibatch=8, lr=3e-3)
    tx = imitation.optax.adam(args.lr)
    agreement_of = jax.jit(lambda params: imitation.imitation_loss(trainer, params, data)[1])
    before = agreement_of(params)
    params, _, agreement = imitation.fit(trainer, tx, params, tx.init(params), data, args,
                                         jax.random.PRNGKey(2))  # fmt: skip
    after = agreement_of(params)
    assert float(before) < 0.6 and float(after) == 1.0 and agreement == 1.0
    # Held-out agreement of this always-UP student, against labels with known answers.
    held_out = lambda labels: imitation.label_agreement(
        trainer, params, data.replace(labels=labels), minibatch=12
    )
    pack = jax.vmap(lambda grid: imitation.pack_actions(trainer.env, grid))(states.grid)
    same = held_out(pack)  # the planner never departing from pack
    assert same["departure_share"] == 0.0 and same["departures"] == 0.0
    all_up = held_out(data.labels)
    assert all_up["all"] == 1.0 and all_up["departures"] == 1.0
    assert 0.0 < all_up["departure_share"] < 1.0  # pack moves up wherever the cell above is free
    all_left = held_out(jnp.full_like(pack, LEFT))
    assert all_left["all"] == 0.0 and all_left["departures"] == 0.0
    # departure_weight counts the nodes whose label (UP) is not pack's action w times.
    logits, labels, weight, agent = imitation.node_outputs(trainer, params, data)
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    log_prob = np.take_along_axis(log_probs, np.asarray(labels)[..., None], -1)[..., 0]
    pack_or_padding = np.pad(np.asarray(pack), ((0, 0), (0, 1)), constant_values=UP)
    departs = pack_or_padding[np.arange(agent.shape[0])[:, None], np.asarray(agent)] != UP
    for w in (1.0, 5.0):
        node_weight = np.asarray(weight) * np.where(departs, w, 1.0)
        expected = -np.sum(node_weight * log_prob) / np.sum(node_weight)
        loss, _ = imitation.imitation_loss(trainer, params, data, departure_weight=w)
        assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert 0 < np.sum(np.asarray(weight) * departs) < np.sum(np.asarray(weight))


def test_battle_imitation_refuses_bad_settings_before_playing():
    from experiments import battle_imitation as imitation

    with pytest.raises(ValueError, match="'games'=0"):
        imitation.main(imitation.Args(games=0))
    with pytest.raises(ValueError, match=r"'lr'=0\.0"):
        imitation.main(imitation.Args(lr=0.0))
    with pytest.raises(ValueError, match="'departure_weight'=0"):
        imitation.main(imitation.Args(departure_weight=0))
    with pytest.raises(ValueError, match=r"'teacher'='oracle'.*strike2, rollout"):
        imitation.main(imitation.Args(teacher="oracle"))
    with pytest.raises(ValueError, match="'width'=0"):
        imitation.main(imitation.Args(width=0))


def test_teacher_agreement_measures_a_battle_run_on_its_own_games(tmp_path):
    """The agreement of a trained run with ``strike`` on games its policy plays: the same seed
    gives the same numbers and JSON; with ``rollout`` the same games, a few of their labels
    changed, and the agreement over them; a run of another scenario, or of a team other than 0, and
    zero games are refused, naming the field."""
    from experiments import teacher_agreement
    from qmarl_jax.checkpoint import save_config

    config = make_config("battle", num_batches=1, games_per_batch=2, max_steps=4, width=16,
                         num_blocks=1)  # fmt: skip
    run = str(loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False))
    args = teacher_agreement.Args(run=run, games=4, minibatch=3, json=str(tmp_path / "a.json"))
    out = teacher_agreement.main(args)
    agreement = out["agreement"]
    assert 0.0 <= agreement["all"] <= 1.0 and 0.0 <= agreement["departures"] <= 1.0
    assert 0.0 < agreement["departure_share"] < 1.0 and out["trained_batches"] == 1
    assert out["teacher"] == "strike"  # the run has no kickstart teacher
    # By default a run is measured against its own kickstart teacher when that is a rule here.
    teacher_of = lambda **fields: teacher_agreement.run_teacher(make_config("battle", **fields))
    assert (teacher_of(), teacher_of(kickstart="pack")) == ("strike", "strike")
    assert teacher_of(kickstart="strike") == "strike"
    assert teacher_of(kickstart="strike2") == "strike2"
    assert teacher_agreement.run_teacher(make_config("battle", "kickstart")) == "rollout"
    by_rollout = teacher_agreement.main(dataclasses.replace(args, teacher="rollout", json=None))
    assert by_rollout["teacher"] == "rollout"
    # The teacher labels the student's games without steering them: labelled by strike and by
    # rollout they are the same games, and rollout (strike plus local corrections) relabels a
    # few of their agent-steps, which is what sets its agreement apart.
    from experiments.battle_imitation import label_agreement, labelled_games
    from experiments.battle_reference import reference_policy
    from qmarl_jax.loop import load_runner

    trainer, runner = load_runner(run)
    params = runner.teams[0].params
    key = jax.random.PRNGKey(args.seed)
    by_strike_data, by_rollout_data = (
        labelled_games(trainer, reference_policy(trainer.env, teacher), args.games, False)(
            params, key
        )
        for teacher in ("strike", "rollout")
    )
    np.testing.assert_array_equal(by_rollout_data.features, by_strike_data.features)
    np.testing.assert_array_equal(by_rollout_data.weight, by_strike_data.weight)
    labelled = np.asarray(by_strike_data.weight)
    relabelled = labelled & (
        np.asarray(by_rollout_data.labels) != np.asarray(by_strike_data.labels)
    )
    assert 0 < relabelled.sum() <= 0.25 * labelled.sum()
    assert by_rollout["agreement"] == label_agreement(
        trainer, params, by_rollout_data, args.minibatch
    )
    assert agreement == label_agreement(trainer, params, by_strike_data, args.minibatch)
    assert by_rollout["agreement"] != agreement
    assert json.loads((tmp_path / "a.json").read_text())["agreement"] == agreement
    assert teacher_agreement.main(dataclasses.replace(args, json=None))["agreement"] == agreement
    with pytest.raises(ValueError, match="'games'=0"):
        teacher_agreement.main(dataclasses.replace(args, games=0))
    allowed = "choose one of: strike, strike2, rollout"
    with pytest.raises(ValueError, match=f"'teacher'='pack': {allowed}"):
        teacher_agreement.main(dataclasses.replace(args, teacher="pack"))
    selfplay = make_config("battle", controllers=("learn", "learn"))
    refusals = ((make_config("jungle"), "jungle run; choose a Battle run"),
                (selfplay, r"learns teams \(0, 1\); choose .* team 0 alone"))  # fmt: skip
    for other, message in refusals:
        (tmp_path / other.scenario).mkdir(exist_ok=True)
        save_config(tmp_path / other.scenario, other)  # refused from the config alone
        with pytest.raises(ValueError, match=rf"'run'=.*{message}"):
            teacher_agreement.main(dataclasses.replace(args, run=str(tmp_path / other.scenario)))


def test_jungle_reference_above_the_oracle_cap_reports_the_score_alone(tmp_path, monkeypatch):
    """Too many agents for the oracle's assignment: the same scores, no bound and no ratio."""
    from experiments import jungle_reference

    args = jungle_reference.Args(episodes=8, seed=3, json=str(tmp_path / "ref.json"),
                                 lookahead_episodes=0)  # fmt: skip
    with_bound = jungle_reference.score_references(args)
    monkeypatch.setattr("qmarl_jax.evaluate.ORACLE_MAX_AGENTS", 3)  # tiny has 4 agents
    without = jungle_reference.score_references(args)
    for reference, (score, bound) in without.items():
        np.testing.assert_array_equal(score, with_bound[reference][0])
        assert np.isnan(bound).all()
    jungle_reference.main(args, without)
    rows = json.loads((tmp_path / "ref.json").read_text())["references"]
    assert all("score_vs_oracle" not in row and "oracle" not in row for row in rows.values())
    assert rows["local"]["score"]["mean"] == pytest.approx(without["local"][0].mean(), rel=1e-5)


def test_compare_runs_bins_hand_made_histories(tmp_path, capsys):
    """Bins of a hand-made metrics.jsonl and a hand-made train_seeds JSON: means against a plain
    loop, a shorter last bin, seeds averaged, a JSON and a PNG; bad input answered before any
    work."""
    from experiments import compare_runs

    runs = []
    for name, scenario, offset in (("a", "jungle", 0.0), ("b", "battle", 10.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"scenario": scenario}))
        metric = "score" if scenario == "jungle" else "terminal_reward"
        rows = [{"batch": b, metric: offset + b * b, "entropy": 1.0 / b, "note": "x"}
                for b in range(1, 8)]  # fmt: skip
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        runs.append(str(run))
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    code = compare_runs.main([*runs, "--labels", "A", "B", "--bin", "3", "--json", str(out),
                              "--plot", str(png)])  # fmt: skip
    assert code == 0 and png.stat().st_size > 0
    saved = json.loads(out.read_text())["runs"]
    a = saved["A"]["curves"]
    assert a["first_batch"] == [1, 4, 7] and a["last_batch"] == [3, 6, 7]
    expected = [np.mean([b * b for b in range(lo, hi + 1)]) for lo, hi in ((1, 3), (4, 6), (7, 7))]
    np.testing.assert_allclose(a["score"], expected)
    np.testing.assert_allclose(saved["B"]["curves"]["terminal_reward"], np.add(expected, 10.0))
    np.testing.assert_allclose(a["entropy"][0], np.mean([1, 1 / 2, 1 / 3]))
    assert "note" not in a and saved["B"]["batches"] == 7
    assert "A (7 batches), score per 3:" in capsys.readouterr().out
    seeds = tmp_path / "seeds.json"  # the --json of train_seeds: 2 seeds x 5 batches
    score = [[1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 4.0, 5.0, 6.0, 7.0]]
    seeds.write_text(json.dumps({
        "config": {"scenario": "jungle"}, "seeds": 2,
        "curves": {"score": score, "entropy": [[1.0] * 5, [0.5] * 5], "lr": [[0.1] * 5] * 2},
        "evaluation": {"train": {"score": {"mean": 40.0}, "score_vs_oracle": {"mean": 0.5}}},
    }))  # fmt: skip
    code = compare_runs.main([runs[0], str(seeds), "--bin", "2", "--json", str(out), "--plot",
                              str(png)])  # fmt: skip
    assert code == 0
    loaded = json.loads(out.read_text())["runs"]["seeds.json"]
    assert loaded["batches"] == 5 and loaded["seeds"] == 2
    assert loaded["curves"]["first_batch"] == [1, 3, 5]
    assert loaded["curves"]["last_batch"] == [2, 4, 5]
    per_seed = [[np.mean(row[i : i + 2]) for i in (0, 2, 4)] for row in score]
    np.testing.assert_allclose(loaded["curves_per_seed"]["score"], per_seed)
    np.testing.assert_allclose(loaded["curves"]["score"], np.mean(per_seed, axis=0))
    np.testing.assert_allclose(loaded["curves"]["entropy"], [0.75] * 3)
    assert loaded["evaluation"]["train"]["score_vs_oracle"]["mean"] == 0.5
    assert "evaluated score 40.000; evaluated score_vs_oracle 0.500" in capsys.readouterr().out
    # The same two seeds as a seed set (experiments.train --seeds): the same curves.
    seed_set = tmp_path / "set"
    for seed, curve in enumerate(score):
        run = loop.seed_dir(seed_set, seed)
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"scenario": "jungle"}))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"batch": b + 1, "score": v, "entropy": [1.0, 0.5][seed]}) + "\n"
            for b, v in enumerate(curve)))  # fmt: skip
    (seed_set / loop.SEED_SET_FILE).write_text(json.dumps({"seeds": [0, 1]}))
    assert compare_runs.main([str(seed_set), "--bin", "2", "--json", str(out)]) == 0
    from_set = json.loads(out.read_text())["runs"]["set"]
    assert from_set["batches"] == 5 and from_set["seeds"] == 2
    for key in ("curves", "curves_per_seed"):
        assert from_set[key] == {k: v for k, v in loaded[key].items() if k != "lr"}
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    assert compare_runs.main([str(tmp_path / "other.json")]) == 2
    assert "is not the --json of experiments.train_seeds" in capsys.readouterr().err
    assert compare_runs.main([*runs, "--labels", "A"]) == 2
    assert "1 --labels for 2 runs" in capsys.readouterr().err
    assert compare_runs.main([runs[0], "--bin", "0"]) == 2
    assert compare_runs.main([str(tmp_path / "missing")]) == 2


def variant_table(script_name: str, start: str) -> tuple[str, list[str], list[str]]:
    """The ``flags`` function of an ``experiments/*_variants.sh`` script (from the line that
    starts with ``start``), its variant names and the script's default list."""
    import re
    from pathlib import Path

    script = (Path(__file__).parents[1] / "experiments" / script_name).read_text()
    function = re.search(rf"^{start}.*?^}}\n", script, re.M | re.S).group(0)
    names = re.findall(r"^    (\w+)\) echo", function, re.M)
    defaults = re.search(r"VARIANTS:-([\w ]+)\}", script).group(1).split()
    return function, names, defaults


def variant_flags(function: str, name: str) -> list[str]:
    """The flags ``flags NAME`` of a variant table prints (raises when it fails)."""
    return subprocess.run(["bash", "-c", f"{function}flags {name}"], capture_output=True,
                          text=True, check=True).stdout.split()  # fmt: skip


def refused_variant(function: str) -> subprocess.CompletedProcess:
    """``flags nope``: an unknown variant."""
    return subprocess.run(["bash", "-c", f"{function}flags nope"], capture_output=True, text=True)


def test_ac_variants_script_names_valid_configs():
    """Every variant of experiments/ac_variants.sh (run on a lent GPU, where a typo costs device
    time) expands to flags that make a valid qmarl_ac config of the wide_view preset; the
    default list names only known variants; an unknown one is refused."""
    import tyro

    function, names, defaults = variant_table("ac_variants.sh", "TWO_TIMESCALE=")
    assert len(names) >= 10 and set(defaults) <= set(names)
    base = make_config("jungle", "wide_view", algo="qmarl_ac", entropy_coef=0.1)
    for name in names:
        config = tyro.cli(type(base), default=base, args=variant_flags(function, name))
        assert config.algo == "qmarl_ac" and config.view_radius in (1, 2), name
    best = tyro.cli(type(base), default=base, args=variant_flags(function, "ts_all_steps4_ent07"))
    assert best == make_config("jungle", "wide_view_ac")  # the preset is that variant
    refused = refused_variant(function)
    assert refused.returncode == 2 and "unknown variant 'nope'" in refused.stderr


def test_battle_variants_script_names_valid_configs():
    """Every variant of experiments/battle_variants.sh expands to flags that make a valid
    kickstarted config of the Battle kickstart preset, each changing the preset; ``ks`` is the
    preset itself; the default list names only known variants; an unknown one is refused."""
    import tyro

    function, names, defaults = variant_table("battle_variants.sh", "flags")
    function = f"BATCHES=600\n{function}"  # the script's budget, which some variants scale
    assert len(names) >= 5 and set(defaults) <= set(names)
    base = make_config("battle", "kickstart")
    for name in names:
        config = tyro.cli(type(base), default=base, args=variant_flags(function, name))
        assert config.kickstart == "rollout" and (config == base) == (name == "ks"), name
    longer = tyro.cli(type(base), default=base, args=variant_flags(function, "ks_long"))
    assert longer.num_batches == 1200
    refused = refused_variant(function)
    assert refused.returncode == 2 and "unknown variant 'nope'" in refused.stderr


@pytest.mark.slow
def test_battle_recipe_script_trains_three_seed_set_stages_evaluates_the_last_and_goes_on(tmp_path):
    """experiments/battle_recipe.sh on a tiny budget: past its deadline it starts nothing; then
    three seed-set stages, each seed started from its own seed of the stage before, and the
    last stage's four evaluations (the mean over the seeds); a rerun skips what is done."""
    import os
    import sys
    from pathlib import Path

    from qmarl_jax.checkpoint import load_config

    out = tmp_path / "recipe"
    env = {**os.environ, "OUT": str(out), "SEEDS": "2", "BATCHES": "1", "EPISODES": "4",
           "FLAGS": "--games-per-batch 2 --max-steps 4 --width 16",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    script = ["bash", "experiments/battle_recipe.sh"]
    late = subprocess.run(script, env={**env, "DEADLINE": "1"}, capture_output=True, text=True)
    assert late.returncode == 1 and "deadline: not starting" in late.stdout
    assert not (out / "stage1").exists()
    done = subprocess.run(script, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"recipe in {out}: finished" in done.stdout
    for stage, source in (("stage2", "stage1"), ("stage3", "stage2")):
        for seed in (0, 1):
            config = load_config(loop.seed_dir(out / stage, seed))
            assert config.init_from == str(loop.seed_dir(out / source, seed))
            assert config.kickstart is None and config.num_batches == 1
    assert load_config(loop.seed_dir(out / "stage1", 0)).kickstart == "rollout"
    for name in ("sampled", "greedy", "sampled_28", "greedy_28"):
        summary = json.loads((out / f"stage3_{name}.json").read_text())
        assert summary["seeds"] == [0, 1] and "terminal_reward" in summary["mean"]
        first = summary["per_seed"]["0"]
        assert (first["num_agents"], first["greedy"]) == (
            28 if name.endswith("28") else 14, name.startswith("greedy"))  # fmt: skip
    assert not (out / "stage1_sampled.json").exists()  # only EVAL's stages
    again = subprocess.run(script, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "run directory" not in again.stdout


def test_battle_student_imitates_then_fine_tunes_then_evaluates_and_resumes(tmp_path, monkeypatch):
    """The pipeline on a tiny budget: the student is a DAgger run, the fine-tune starts from its
    parameters with the recipe's settings, the evaluation repeats what ``evaluate_run`` gives
    for the same run; a second call keeps the student and resumes the fine-tune; other settings
    are refused, naming the field, before any stage starts."""
    from experiments import battle_student
    from qmarl_jax.checkpoint import Checkpointer, load_config
    from qmarl_jax.evaluate import evaluate_run
    from qmarl_jax.train import Trainer

    out = tmp_path / "pipeline"
    args = battle_student.Args(out=str(out), iterations=1, games=2, num_batches=2,
                               games_per_batch=4, critic_warmup=1, episodes=4)  # fmt: skip
    with pytest.raises(ValueError, match="'games'=0"):
        battle_student.main(dataclasses.replace(args, games=0))
    with pytest.raises(ValueError, match="'critic_warmup'=-1"):
        battle_student.main(dataclasses.replace(args, critic_warmup=-1))
    with pytest.raises(ValueError, match="'games_per_batch'=0"):
        battle_student.main(dataclasses.replace(args, games_per_batch=0))
    assert not out.exists()  # refused before anything was written

    summary = battle_student.main(args)
    student, fine_tune = out / "student", out / "fine_tune"
    assert len(json.loads((out / "imitation.json").read_text())["iterations_run"]) == 1
    config = load_config(fine_tune)
    assert (config.init_from, config.lr, config.critic_warmup, config.kill_credit,
            config.games_per_batch) == (str(student), 1e-4, 1, 1.0, 4)  # fmt: skip
    assert config.view_radius == load_config(student).view_radius == 2
    _, start = loop.load_runner(student)
    restored = Checkpointer(fine_tune).restore(
        Trainer(config).init(jax.random.PRNGKey(config.seed)), batch=0
    )
    jax.tree.map(np.testing.assert_array_equal, restored.teams[0].params, start.teams[0].params)
    saved = json.loads((out / "evaluation.json").read_text())["results"]
    assert set(saved) == {"student", "fine_tune"}
    for run in saved.values():
        assert set(run) == {"sampled", "greedy", "ensemble_none", "agents_28"}
        for m in run.values():
            assert m["win"]["mean"] + m["draw"]["mean"] + m["loss"]["mean"] == pytest.approx(1.0)
    # What `experiments.evaluate --run DIR --greedy` gives, down to the student's own reward
    # (kill credit 0.5, the fine-tune's 1.0).
    again = evaluate_run(student, episodes=4, greedy=True)["metrics"]
    assert summary["results"]["student"]["greedy"] == again
    assert {"return/team0", "episode_length"} <= set(again)  # not only the outcomes
    assert saved["student"]["greedy"]["return/team0"] == pytest.approx(again["return/team0"])

    # A second call keeps the student and resumes the fine-tune to its new length.
    made = (out / "imitation.json").read_text()
    longer = dataclasses.replace(args, num_batches=3)
    battle_student.check(longer)
    battle_student.make_student(longer, student)
    battle_student.fine_tune(longer, student, fine_tune)
    assert (out / "imitation.json").read_text() == made
    _, resumed = loop.load_runner(fine_tune)
    assert int(resumed.batch) == 3
    # A fine-tune that stops short (Ctrl-C: loop.train returns at its last saved batch) is
    # not evaluated.
    evaluated = (out / "evaluation.json").stat().st_mtime_ns
    monkeypatch.setattr(loop, "train", lambda *a, **k: None)
    assert battle_student.main(dataclasses.replace(args, num_batches=4)) == {"finished": False}
    assert (out / "evaluation.json").stat().st_mtime_ns == evaluated  # not written again
    monkeypatch.undo()
    with pytest.raises(ValueError, match="iterations: 1 there, 2 here"):
        battle_student.check(dataclasses.replace(args, iterations=2))
    with pytest.raises(ValueError, match=r"incompatible config.*lr: saved 0.0001, requested 0.001"):
        battle_student.check(dataclasses.replace(args, lr=1e-3))


def test_battle_losses_pairs_a_run_with_the_references_on_the_same_start_states(tmp_path):
    """The policy starts each game where ``play_episodes`` (the references' games) starts it;
    the same seed gives the same games; the summaries agree with the per-game outcomes; bad
    settings and a run of another scenario are refused, naming the field, before any play."""
    from envs.core import STAY
    from experiments import battle_losses
    from experiments.common import play_episodes
    from qmarl_jax.checkpoint import save_config

    config = make_config("battle", num_batches=1, games_per_batch=2, max_steps=4, width=16,
                         num_blocks=1)  # fmt: skip
    run = str(loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False))
    trainer = loop.load_runner(run)[0]
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    stay = lambda key, state: jnp.full(trainer.env.num_agents, STAY, jnp.int32)
    played_from = play_episodes(trainer.env, trainer.env_params, stay, keys)[0]
    _, ours = battle_losses.start_states(trainer.env, trainer.env_params, keys)
    np.testing.assert_array_equal(ours.grid.positions, played_from.grid.positions)

    args = battle_losses.Args(run=run, episodes=5, batch=2, references=("strike2", "pack"),
                              json=str(tmp_path / "l.json"))  # fmt: skip
    out = battle_losses.main(args)
    per_game = {k: np.asarray(v) for k, v in out["per_game"].items()}
    assert set(per_game) == {"policy_sampled", "policy_greedy", "strike2", "pack"}
    assert all(v.shape == (5,) and set(v) <= {-1, 0, 1} for v in per_game.values())
    for name, outcome in per_game.items():
        assert out["players"][name]["loss"]["mean"] == pytest.approx(np.mean(outcome < 0))
    assert out["on_policy_losses"]["games"] == int(np.sum(per_game["policy_sampled"] < 0))
    assert json.loads((tmp_path / "l.json").read_text())["per_game"] == out["per_game"]
    again = battle_losses.main(dataclasses.replace(args, json=None))
    assert again["per_game"] == out["per_game"]

    for field, bad in (("episodes", 0), ("batch", 0), ("references", ("lookahead",))):
        with pytest.raises(ValueError, match=f"'{field}'="):
            battle_losses.main(dataclasses.replace(args, **{field: bad}))
    (tmp_path / "jungle").mkdir()
    save_config(tmp_path / "jungle", make_config("jungle"))
    with pytest.raises(ValueError, match=r"'run'=.*jungle run; choose a Battle run"):
        battle_losses.main(dataclasses.replace(args, run=str(tmp_path / "jungle")))


def test_battle_losses_analysis_on_hand_made_outcomes():
    """Five games by hand: the sampled policy loses games 0, 1 and 4."""
    from experiments.battle_losses import loss_analysis

    per_game = {"policy_sampled": np.array([-1, -1, 1, 0, -1]),
                "policy_greedy": np.array([-1, 1, 1, 1, 0]),
                "rule": np.array([1, -1, 1, 1, 1])}  # fmt: skip
    out = loss_analysis(per_game, ("rule",))
    on_losses = out["on_policy_losses"]
    assert on_losses["games"] == 3
    assert on_losses["policy_greedy"] == pytest.approx({"win": 1 / 3, "draw": 1 / 3, "loss": 1 / 3})
    assert on_losses["rule"] == pytest.approx({"win": 2 / 3, "draw": 0.0, "loss": 1 / 3})
    assert out["lost_both_modes"] == {"games": 1, "if_independent": pytest.approx(3 * 1 / 5)}
    # rule - policy per game, x100: 200, 0, 0, 100, 200 -> mean 100, sample std 100.
    paired = out["paired_vs_policy"]["rule"]
    half = 1.959964 * 100 / math.sqrt(5)
    assert paired == pytest.approx({"mean": 100.0, "low": 100 - half, "high": 100 + half}, 1e-5)
