"""The learner end to end: learning, checkpoints, resume, NaN guard, config validation."""

import dataclasses
import itertools
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import export_policy
from qmarl_jax import loop
from qmarl_jax.checkpoint import Checkpointer, save_config
from qmarl_jax.config import TrainConfig, make_config
from qmarl_jax.evaluate import evaluate_run
from qmarl_jax.train import BatchSchedule, Trainer, make_train

SMALL = dict(games_per_batch=4, max_steps=8, width=16, num_blocks=1, batches_per_chunk=2)


def rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_ppo_learns_jungle_tiny():
    config = make_config(
        "jungle", algo="qmarl_ppo", games_per_batch=32, num_batches=20, ppo_epochs=4,
        num_minibatches=4,
    )  # fmt: skip
    key = jax.random.PRNGKey(0)
    # conftest compiles at -O0 (fast to compile, slow to run); this test runs 20 batches, so it
    # asks for the optimised program (about 14 s less in all).
    optimised = {"xla_backend_optimization_level": 3}
    train = make_train(config).lower(key).compile(compiler_options=optimised)
    runner, metrics = train(key)
    score = np.asarray(metrics["score"])
    # The untrained policy is near uniform (score ~3, i.e. 0.03 reward per agent-step); a learned
    # one walks to the food and shares it.
    assert score[0] < 6
    assert score[-3:].mean() > 15, score
    assert int(runner.batch) == 20


@pytest.mark.parametrize("algo", ["qmarl_ac", "qmarl_pg", "qmarl_ppo", "vanilla_pg", "mha"])
def test_every_algorithm_runs_and_updates(algo, tmp_path):
    config = make_config("battle", algo=algo, num_batches=2, **SMALL)
    trainer = Trainer(config)
    runner = trainer.init(jax.random.PRNGKey(0))
    after, metrics = jax.jit(trainer.run_batches, static_argnums=1)(runner, 2)
    assert int(after.batch) == 2
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), runner.teams, after.teams)
    assert any(jax.tree.leaves(changed))


@pytest.mark.parametrize(
    "scenario, fields, obs_dim",
    [("deception", {"landmark_sight": 4}, 9 * 5 + 2 * 6 + 1), ("battle", {}, 9 * 5 + 1)],
)
def test_extra_features_and_time_reach_the_network(scenario, fields, obs_dim):
    config = make_config(scenario, observe_time=True, num_batches=2, **fields, **SMALL)
    trainer = Trainer(config)
    assert trainer.env.obs_dim == obs_dim
    runner = trainer.init(jax.random.PRNGKey(0))
    after, metrics = jax.jit(trainer.run_batches, static_argnums=1)(runner, 2)
    assert int(after.batch) == 2
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    input_dims = {leaf.shape[0] for leaf in jax.tree.leaves(runner.teams) if leaf.ndim == 2}
    assert trainer.env.obs_dim in input_dims


def test_actor_lr_scale_scales_only_the_policys_steps():
    config = make_config("jungle", algo="qmarl_ac", num_batches=1, **SMALL)
    changes = {}
    for scale in (1.0, 0.1):
        trainer = Trainer(dataclasses.replace(config, actor_lr_scale=scale))
        runner = trainer.init(jax.random.PRNGKey(0))
        after, _ = jax.jit(trainer.run_batches, static_argnums=1)(runner, 1)
        delta = jax.tree.map(lambda a, b: np.asarray(b - a), runner.teams[0].params,
                             after.teams[0].params)  # fmt: skip
        changes[scale] = delta["params"]
    for module, full in changes[1.0].items():
        factor = 0.1 if module in ("actor", "policy_hidden", "policy_out") else 1.0
        for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(changes[0.1][module]), strict=True):
            # atol: rounding of (p + step) - p on parameters of order 1
            np.testing.assert_allclose(b, factor * a, rtol=1e-4, atol=1e-7, err_msg=module)
    for module in ("actor", "policy_out", "critic", "q_out"):  # (value_* are PPO's)
        assert any(np.abs(a).max() > 0 for a in jax.tree.leaves(changes[1.0][module])), module


@pytest.mark.parametrize(
    "algo, td_lambda, kickstart",
    [
        ("qmarl_ac", 0.0, None),
        ("mha", 0.0, None),
        ("qmarl_ac", 0.8, None),
        ("qmarl_ac", 0.0, "pack"),
    ],
)
def test_chunked_update_equals_the_update_in_one_piece(algo, td_lambda, kickstart):
    from qmarl_jax.algos import qmarl_ac
    from qmarl_jax.rollout import collect, team_batch

    config = make_config("battle", algo=algo, num_batches=1, td_lambda=td_lambda,
                         kickstart=kickstart, **{**SMALL, "max_steps": 12})  # fmt: skip
    trainer = Trainer(config)
    chunked = Trainer(dataclasses.replace(config, update_chunks=4))
    params = trainer.init(jax.random.PRNGKey(0)).teams[0].params
    traj = jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))(
        jax.random.PRNGKey(1)
    )
    batch = team_batch(traj, 0, 0, trainer.teams)
    (loss, aux), grads = jax.jit(
        jax.value_and_grad(lambda p: qmarl_ac.loss(p, trainer.heads, batch, config), has_aux=True)
    )(params)
    (loss4, aux4), grads4 = jax.jit(chunked._chunked_gradient)(params, batch)
    assert abs(float(loss4) - float(loss)) <= 1e-5 * max(1.0, abs(float(loss)))
    for name in aux:
        np.testing.assert_allclose(aux4[name], aux[name], rtol=1e-5, atol=1e-6)
    flat, flat4 = jax.tree.leaves(grads), jax.tree.leaves(grads4)
    assert any(np.abs(g).max() > 0 for g in flat)
    for g, g4 in zip(flat, flat4, strict=True):
        np.testing.assert_allclose(g4, g, rtol=1e-4, atol=1e-6)


def assert_same_loss_and_gradient(reference, other, context=None):
    """``((loss, aux), grads)`` of ``other`` equal ``reference``'s (loss to 1e-5 relative, aux
    to 1e-5, gradients to 1e-4), and the reference gradient is not all zeros."""
    (loss, aux), grads = reference
    (loss2, aux2), grads2 = other
    assert abs(float(loss2) - float(loss)) <= 1e-5 * max(1.0, abs(float(loss))), context
    for name in aux:
        np.testing.assert_allclose(aux2[name], aux[name], rtol=1e-5, atol=1e-6)
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
    for g, g2 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2), strict=True):
        np.testing.assert_allclose(g2, g, rtol=1e-4, atol=1e-6)


def test_budget_ladder_gives_the_same_rollout_and_gradient():
    """Acting and the chunked qmarl_ac gradient on the smallest budget size that holds each
    step (``budget_buckets=3``) equal the same on the full budgets; the steps really do run on
    the smaller sizes (Jungle's harm rule thins a 30% crowd)."""
    from qmarl_jax import graph
    from qmarl_jax.rollout import collect, team_batch

    config = make_config(
        "jungle", algo="qmarl_ac", num_agents=60, density=0.3, budget_buckets=1,
        update_chunks=12, **{**SMALL, "max_steps": 12, "num_blocks": 2},
    )  # fmt: skip
    full = Trainer(config)
    laddered = Trainer(dataclasses.replace(config, budget_buckets=3))
    assert len(full.actor.ladder) == 1 and len(laddered.actor.ladder) == 3
    params = full.init(jax.random.PRNGKey(0)).teams[0].params

    def play(trainer):
        return jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))(
            jax.random.PRNGKey(1)
        )

    traj, traj3 = play(full), play(laddered)
    np.testing.assert_array_equal(traj3.actions, traj.actions)
    batch, batch3 = (team_batch(t, 0, 0, full.teams) for t in (traj, traj3))
    real = np.asarray(graph.node_mask(batch.graphs))[:-1]
    np.testing.assert_allclose(
        np.where(real, batch3.node_logp, 0), np.where(real, batch.node_logp, 0), atol=1e-5
    )
    use = [graph.budget_use(jax.tree.map(lambda x, t=t: x[t], batch.graphs), 60) for t in range(13)]
    smallest = laddered.actor.ladder[0]
    assert any(int(n) <= smallest[0] and int(e) <= smallest[1] for n, e in use)
    assert any(int(n) > smallest[0] for n, _ in use)
    assert_same_loss_and_gradient(
        jax.jit(full._chunked_gradient)(params, batch),
        jax.jit(laddered._chunked_gradient)(params, batch),
    )


def test_ppo_minibatches_on_the_budget_ladder_give_the_same_loss_and_gradient():
    """The PPO loss of a minibatch on the smallest budget size that holds its ego-graphs
    (``budget_buckets=3``) equals the same on the full budgets: for a late step (a small size),
    an early one (the full size) and every step at once."""
    from qmarl_jax import graph
    from qmarl_jax.algos import qmarl_ppo
    from qmarl_jax.rollout import collect, team_batch

    config = make_config(
        "jungle", algo="qmarl_ppo", num_agents=60, density=0.3, budget_buckets=1,
        **{**SMALL, "max_steps": 12, "num_blocks": 2},
    )  # fmt: skip
    full = Trainer(config)
    laddered = Trainer(dataclasses.replace(config, budget_buckets=3))
    params = full.init(jax.random.PRNGKey(0)).teams[0].params
    traj = jax.jit(lambda key: collect(full.actor, (params,), key, full.env_params))(
        jax.random.PRNGKey(1)
    )
    samples = qmarl_ppo.prepare(params, full.heads, team_batch(traj, 0, 0, full.teams), config)
    use = [
        graph.budget_use(jax.tree.map(lambda x, s=s: x[s], samples.graphs), 60)
        for s in range(samples.features.shape[0])
    ]
    smallest, middle = laddered.actor.ladder[:2]
    late = max(s for s, (n, e) in enumerate(use) if n <= smallest[0] and e <= smallest[1])
    early = min(s for s, (n, _) in enumerate(use) if n > middle[0])
    full_gradient, laddered_gradient = jax.jit(full.ppo_gradient), jax.jit(laddered.ppo_gradient)
    for picked in ([late], [early], list(range(len(use)))):
        minibatch = jax.tree.map(lambda x, p=picked: x[np.array(p)], samples)
        assert_same_loss_and_gradient(
            full_gradient(params, minibatch), laddered_gradient(params, minibatch), picked
        )


def test_auto_budget_ladder_skips_small_sizes_and_runs_on_accelerators_with_chunks():
    from qmarl_jax.rollout import budget_ladder

    auto = make_config("jungle", algo="qmarl_ac")
    assert budget_ladder(auto, 8479, 10470, "cpu") == (
        (67, 82), (133, 164), (265, 328), (530, 655), (1060, 1309), (2120, 2618), (4240, 5235),
        (8479, 10470),
    )  # fmt: skip
    assert len(budget_ladder(auto, 101868, 301365, "cpu")) == 8
    assert budget_ladder(auto, 8479, 10470, "gpu") == ((8479, 10470),)
    chunked = make_config("jungle", algo="qmarl_ac", update_chunks=10)
    assert budget_ladder(chunked, 8479, 10470, "gpu") == (
        (1060, 1309), (2120, 2618), (4240, 5235), (8479, 10470),
    )  # fmt: skip
    assert len(budget_ladder(chunked, 8479, 10470, "cpu")) == 8
    assert budget_ladder(auto, 600, 900, "cpu") == ((75, 113), (150, 225), (300, 450), (600, 900))
    assert budget_ladder(auto, 100, 300, "cpu") == ((100, 300),)
    assert budget_ladder(make_config("jungle", algo="mha"), 100, 800, "cpu") == ((100, 800),)
    explicit = make_config("jungle", budget_buckets=2)
    assert budget_ladder(explicit, 20, 30, "tpu") == ((10, 15), (20, 30))


def test_calibrated_budgets_are_computed_once_per_setting_and_equal_a_direct_calibration(
    monkeypatch,
):
    """Trainers of one config reuse the calibration (``graph.calibrate_budgets`` runs once);
    the numbers are those of calibrating the env's starts directly; a setting that changes the
    starts or the budgets (seed, margin, world size) calibrates anew."""
    from qmarl_jax import graph, rollout

    config = make_config("battle", seed=11, budget_margin=1.5, **SMALL)
    env = Trainer(config).env
    params = env.default_params()
    direct = graph.calibrate_budgets(
        env.spec, lambda k: env.reset_state(k, params), config.graph_depth,
        env.config.graph_radius, config.max_nodes, 1.5, jax.random.PRNGKey(11),
        share_components=config.share_ego_graphs,
    )  # fmt: skip
    calibrate, calls = graph.calibrate_budgets, []

    def counted(*args, **kwargs):
        calls.append(args)
        return calibrate(*args, **kwargs)

    monkeypatch.setattr(graph, "calibrate_budgets", counted)
    rollout.calibrated_budgets.cache_clear()
    assert rollout.budgets(config, Trainer(config).env) == direct and len(calls) == 1
    assert rollout.budgets(config, Trainer(config).env) == direct and len(calls) == 1
    for changed in (dict(seed=12), dict(budget_margin=3.0), dict(num_agents=8)):
        other = dataclasses.replace(config, **changed)
        rollout.budgets(other, Trainer(other).env)
    assert len(calls) == 4


@pytest.mark.parametrize(("scenario", "algo"), [("battle", "qmarl_ac"), ("jungle", "qmarl_ppo")])
def test_shared_ego_graphs_train_like_one_graph_per_agent(scenario, algo):
    """Storing identical ego-graphs once (weighted by their copies) gives the same actions,
    losses, metrics and updated parameters as one graph per agent, and really shares some."""
    controllers = ("learn", "scripted")[: 2 if scenario == "battle" else 1]
    config = make_config(
        scenario, algo=algo, controllers=controllers, num_agents=40, density=0.15,
        ensemble="mean_prob", share_ego_graphs=False, **{**SMALL, "max_steps": 12},
    )  # fmt: skip
    runs = {}
    for share in (False, True):
        trainer = Trainer(dataclasses.replace(config, share_ego_graphs=share))
        runner = trainer.init(jax.random.PRNGKey(0))
        runs[share] = jax.jit(trainer.update)(runner)
    (plain, plain_logs), (shared, shared_logs) = runs[False], runs[True]
    assert float(shared_logs["graph_nodes"]) == pytest.approx(float(plain_logs["graph_nodes"]))
    # Some ego-graphs really were stored once for several centres.
    assert float(plain_logs["graph_shared_fraction"]) == 0.0
    assert 0.0 < float(shared_logs["graph_shared_fraction"]) < 1.0
    for name, value in plain_logs.items():
        if name != "graph_shared_fraction":
            np.testing.assert_allclose(shared_logs[name], value, rtol=2e-4, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(plain.teams), jax.tree.leaves(shared.teams), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scenario, td_lambda", [("battle", 0.0), ("jungle", 0.0),
                                                 ("battle", 0.8), ("jungle", 0.8)])  # fmt: skip
def test_ac_loss_matches_a_python_loop_over_steps_and_nodes(scenario, td_lambda):
    """The TD(0) / TD(lambda) targets, counterfactual advantage and entropy of qmarl_ac against a
    plain loop over the network's outputs on all T + 1 steps (Battle: deaths and terminal steps;
    Jungle: a truncated last step that bootstraps from the state after it)."""
    from qmarl_jax.algos import qmarl_ac
    from qmarl_jax.rollout import collect, team_batch

    controllers = ("learn", "scripted")[: 2 if scenario == "battle" else 1]
    # One graph per ego-graph (test_shared_ego_graphs_train_like_one_graph_per_agent checks the
    # shared layout against this one).
    config = make_config(scenario, algo="qmarl_ac", num_batches=1, controllers=controllers,
                         share_ego_graphs=False, td_lambda=td_lambda,
                         **{**SMALL, "max_steps": 12})  # fmt: skip
    trainer = Trainer(config)
    params = trainer.init(jax.random.PRNGKey(0)).teams[0].params
    traj = jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))(
        jax.random.PRNGKey(3)
    )
    batch = team_batch(traj, 0, 0, trainer.teams)
    _, metrics = jax.jit(lambda p: qmarl_ac.loss(p, trainer.heads, batch, config))(params)
    h = trainer.heads
    logits = np.asarray(h.logits(params, batch.features, batch.graphs), np.float64)
    q = np.asarray(h.q_values(params, batch.features, batch.graphs, batch.actions), np.float64)
    b = jax.tree.map(np.asarray, batch)
    node_agent, n = b.graphs.nodes["agent"], b.actions.shape[-1]
    steps, envs, slots = node_agent.shape
    member = b.team_member
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    node_value = (probs * q).sum(-1)
    value_sum, value_count = np.zeros((steps, envs, n)), np.zeros((steps, envs, n))
    for t in range(steps):
        for e in range(envs):
            for k in range(slots):
                i = node_agent[t, e, k]
                if i < n and member[i] and b.alive[t, e, i]:
                    value_sum[t, e, i] += node_value[t, e, k]
                    value_count[t, e, i] += 1
    agent_value = value_sum / np.maximum(value_count, 1)
    # The TD(lambda) return, step by step from the last: G_T = V_T; a step whose agent dies or
    # ends the game does not bootstrap; G_{t+1} chains only while the agent acts at t + 1.
    returns = np.zeros((steps, envs, n))
    returns[-1] = agent_value[-1]
    for t in reversed(range(steps - 1)):
        for e in range(envs):
            for i in range(n):
                returns[t, e, i] = b.reward[t, e, i] * (member[i] and b.alive[t, e, i]
                                                        and b.live[t, e])  # fmt: skip
                if not b.terminated[t, e] and b.alive[t + 1, e, i]:
                    acts_next = member[i] and b.alive[t + 1, e, i] and b.live[t + 1, e]
                    chained = td_lambda * returns[t + 1, e, i] if acts_next else 0.0
                    mixed = (1 - td_lambda * acts_next) * agent_value[t + 1, e, i] + chained
                    returns[t, e, i] += config.gamma * mixed
    actor = critic = entropy = 0.0
    acting = nodes = 0
    for t in range(steps - 1):
        for e in range(envs):
            for i in range(n):
                acting += bool(member[i] and b.alive[t, e, i] and b.live[t, e])
            for k in range(slots):
                i = node_agent[t, e, k]
                if not (i < n and member[i] and b.alive[t, e, i] and b.live[t, e]):
                    continue
                nodes += 1
                label = b.actions[t, e, i]
                critic += (q[t, e, k, label] - returns[t, e, i]) ** 2
                advantage = q[t, e, k, label] - node_value[t, e, k]
                actor -= advantage * np.log(probs[t, e, k, label])
                entropy -= np.sum(probs[t, e, k] * np.log(probs[t, e, k]))
    if scenario == "battle":
        assert np.any(b.terminated) and not np.all(b.alive)
    else:
        assert np.any(b.live[-2] & ~b.terminated[-1]) and np.any(agent_value[-1] != 0)
    np.testing.assert_allclose(metrics["critic_loss"], critic / acting, rtol=1e-4)
    np.testing.assert_allclose(metrics["actor_loss"], actor / acting, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["entropy"], entropy / nodes, rtol=1e-5)
    if td_lambda:  # lambda really moves the targets away from TD(0)'s
        td0 = dataclasses.replace(config, td_lambda=0.0)
        _, metrics0 = jax.jit(lambda p: qmarl_ac.loss(p, trainer.heads, batch, td0))(params)
        assert abs(float(metrics0["critic_loss"]) - critic / acting) > 1e-3 * critic / acting


def test_auto_update_chunks_are_one_per_step_on_cpu_and_one_piece_elsewhere():
    from qmarl_jax.train import update_chunks

    ac = make_config("jungle", algo="qmarl_ac", max_steps=12)
    assert update_chunks(ac, "cpu") == 12
    assert update_chunks(ac, "gpu") == update_chunks(ac, "tpu") == 1
    assert update_chunks(make_config("jungle", algo="qmarl_ac", update_chunks=3), "cpu") == 3
    assert update_chunks(make_config("jungle", algo="qmarl_ppo"), "cpu") == 1


def test_overflowing_budgets_grow_and_the_chunk_reruns(tmp_path):
    from qmarl_jax.checkpoint import load_config

    # Budgets that hold the first chunk's ego-graphs but not the second's: one regrowth (each is
    # a recompile), and the rerun starts from the checkpoint the first chunk left.
    config = make_config("jungle", num_batches=4, node_budget=8, edge_budget=12, **SMALL)
    grown = loop.train(config, tmp_path / "grown", progress=False, finish=False)
    saved = load_config(grown)
    assert saved.node_budget > 8 and saved.edge_budget > 12
    got = rows(grown)
    assert [row["batch"] for row in got] == [1, 2, 3, 4]
    assert all(row["graph_overflow_nodes"] == 0 == row["graph_overflow_edges"] for row in got)
    # The same numbers as a run that had the final budgets from the start.
    fixed = dataclasses.replace(config, node_budget=saved.node_budget,
                                edge_budget=saved.edge_budget)  # fmt: skip
    expected = rows(loop.train(fixed, tmp_path / "fixed", progress=False, finish=False))
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-4, atol=1e-5)
    # Without growth the overflow is dropped and counted.
    kept = dataclasses.replace(config, grow_budgets=False)
    dropped = rows(loop.train(kept, tmp_path / "dropped", progress=False, finish=False))
    assert sum(row["graph_overflow_nodes"] for row in dropped) > 0


def test_checkpoint_round_trip(tmp_path):
    config = make_config("deception", num_batches=1, **SMALL)
    trainer = Trainer(config)
    runner = trainer.init(jax.random.PRNGKey(3))
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(7, runner)
    restored = Checkpointer(tmp_path).restore(trainer.init(jax.random.PRNGKey(99)))
    jax.tree.map(np.testing.assert_array_equal, restored, runner)
    assert checkpointer.latest_batch() == 7


def test_resume_equals_uninterrupted(tmp_path):
    config = make_config("jungle", num_batches=4, **SMALL)
    whole = loop.train(config, run_dir=tmp_path / "whole", progress=False, finish=False)
    half = loop.train(config.__class__(**{**config.to_dict(), "num_batches": 2}),
                      run_dir=tmp_path / "split", progress=False, finish=False)  # fmt: skip
    resumed = loop.train(config, resume=half, progress=False, finish=False)
    assert rows(whole) == rows(resumed)
    trainer, a = loop.load_runner(whole)
    _, b = loop.load_runner(resumed)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # load_runner restores into traced shapes: the same state as restoring into a real init.
    like = trainer.init(jax.random.PRNGKey(5))
    jax.tree.map(np.testing.assert_array_equal, a, Checkpointer(whole).restore(like))
    assert int(a.batch) == 4 and jax.tree.structure(a) == jax.tree.structure(like)


def test_resume_refuses_an_incompatible_config(tmp_path):
    config = make_config("jungle", num_batches=2, **SMALL)
    run = loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False)
    other = TrainConfig(**{**config.to_dict(), "width": 32, "lr": 0.1})
    with pytest.raises(ValueError, match="incompatible config") as error:
        loop.train(other, resume=run, progress=False, finish=False)
    assert "width: saved 16, requested 32" in str(error.value)
    assert "lr: saved" in str(error.value)


POLICY_MODULES = ("actor", "policy_hidden", "policy_out")


@pytest.mark.parametrize("algo", ["qmarl_ppo", "qmarl_ac"])
def test_critic_warmup_trains_only_the_critic_for_its_batches(algo):
    config = make_config("battle", algo=algo, num_batches=3, critic_warmup=2, **SMALL)
    trainer = Trainer(config)
    step = jax.jit(trainer.update)
    states = [trainer.init(jax.random.PRNGKey(0))]
    for _ in range(3):
        states.append(step(states[-1])[0])
    params = [s.teams[0].params["params"] for s in states]
    moved = [
        {m for m in before if any(np.any(a != b) for a, b in zip(
            jax.tree.leaves(before[m]), jax.tree.leaves(after[m]), strict=True))}
        for before, after in itertools.pairwise(params)
    ]  # fmt: skip
    trained = moved[2]  # batch 3 is past the warm-up: what the loss trains
    policy = trained & set(POLICY_MODULES)
    critic = trained - policy
    assert policy == set(POLICY_MODULES) and critic
    assert moved[0] == critic and moved[1] == critic  # batches 1-2: the critic alone


def test_init_from_starts_a_new_run_from_another_runs_parameters(tmp_path):
    source_config = make_config("jungle", num_batches=2, seed=1, **SMALL)
    source = loop.train(source_config, run_dir=tmp_path / "source", progress=False, finish=False)
    _, trained = loop.load_runner(source)
    config = make_config("jungle", num_batches=2, lr=1e-4, init_from=str(source), **SMALL)
    run = loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False)
    trainer = Trainer(config)
    fresh = trainer.init(jax.random.PRNGKey(config.seed))
    start = Checkpointer(run).restore(fresh, batch=0)
    jax.tree.map(np.testing.assert_array_equal, start.teams[0].params, trained.teams[0].params)
    # Only the parameters come over: the optimiser, the schedules and the batch count are new.
    jax.tree.map(np.testing.assert_array_equal, start.teams[0].opt_state, fresh.teams[0].opt_state)
    assert int(start.batch) == 0 and int(trained.batch) == 2
    _, end = loop.load_runner(run)
    assert int(end.batch) == 2
    pairs = zip(jax.tree.leaves(end.teams[0].params), jax.tree.leaves(start.teams[0].params),
                strict=True)  # fmt: skip
    assert any(np.any(a != b) for a, b in pairs)


def test_init_from_refuses_a_run_it_cannot_start_from(tmp_path):
    source = loop.train(make_config("jungle", num_batches=1, **SMALL), run_dir=tmp_path / "source",
                        progress=False, finish=False)  # fmt: skip
    wider = make_config("jungle", num_batches=1, init_from=str(source), **{**SMALL, "width": 32})
    with pytest.raises(ValueError, match=r"'init_from'=.*other parameter shapes") as error:
        loop.train(wider, run_dir=tmp_path / "wider", progress=False, finish=False)
    assert "width: 16 there, 32 here" in str(error.value)
    assert not (tmp_path / "wider").exists()  # refused before anything was written
    battle = make_config("battle", num_batches=1, init_from=str(source), **SMALL)
    selfplay = TrainConfig(**{**battle.to_dict(), "controllers": ("learn", "learn")})
    with pytest.raises(ValueError, match=r"its learning teams are \(0,\), this run's \(0, 1\)"):
        loop.train(selfplay, run_dir=tmp_path / "selfplay", progress=False, finish=False)
    with pytest.raises(FileNotFoundError, match="not a qmarl-jax run directory"):
        loop.train(TrainConfig(**{**battle.to_dict(), "init_from": str(tmp_path / "none")}),
                   run_dir=tmp_path / "none_run", progress=False, finish=False)  # fmt: skip


def test_an_exported_policy_plays_and_starts_runs_as_its_run_does(tmp_path):
    config = make_config("battle", num_batches=2, seed=2, **SMALL)
    run = loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False)
    export_policy.main(export_policy.Args(run=str(run), out=str(tmp_path / "policy")))
    policy = tmp_path / "policy"
    assert sorted(p.name for p in policy.iterdir()) == ["config.json", "policy.msgpack"]
    assert (policy / "policy.msgpack").stat().st_size * 2 < dir_bytes(run / "checkpoints" / "2")
    _, trained = loop.load_runner(run)
    _, exported = loop.load_runner(policy)
    jax.tree.map(np.testing.assert_array_equal, exported.teams[0].params, trained.teams[0].params)
    assert int(exported.batch) == 2 and loop.finished(policy)
    # The same evaluation, game for game.
    a, b = (evaluate_run(d, episodes=6, seed=4) for d in (run, policy))
    jax.tree.map(np.testing.assert_array_equal, a["per_episode"], b["per_episode"])
    assert a["metrics"] == b["metrics"] and b["trained_batches"] == 2
    # A run started from it starts from the same parameters as one started from the run.
    starts = []
    for source in (run, policy):
        child = dataclasses.replace(config, num_batches=1, init_from=str(source))
        out = loop.train(child, run_dir=tmp_path / f"from_{source.name}", progress=False,
                         finish=False)  # fmt: skip
        starts.append(Checkpointer(out).restore(Trainer(child).init(jax.random.PRNGKey(0)), 0))
    jax.tree.map(np.testing.assert_array_equal, starts[0].teams[0].params, trained.teams[0].params)
    jax.tree.map(np.testing.assert_array_equal, starts[1].teams[0].params, trained.teams[0].params)
    with pytest.raises(ValueError, match=r"policy directory .* cannot be resumed"):
        loop.train(resume=policy, progress=False, finish=False)


def test_a_policy_that_does_not_fit_its_config_is_refused_by_name(tmp_path):
    config = make_config("jungle", num_batches=1, **SMALL)
    run = loop.train(config, run_dir=tmp_path / "run", progress=False, finish=False)
    policy = tmp_path / "policy"
    export_policy.main(export_policy.Args(run=str(run), out=str(policy)))
    save_config(policy, dataclasses.replace(config, width=32))  # edited after the export
    with pytest.raises(ValueError, match=r"policy.msgpack: team 0's parameters have other shapes"):
        loop.load_runner(policy)
    save_config(policy, dataclasses.replace(config, num_blocks=2))  # modules it does not hold
    with pytest.raises(ValueError, match=r"policy.msgpack: team 0's parameters do not fit"):
        loop.load_runner(policy)
    with pytest.raises(ValueError, match="holds a run's checkpoints"):
        export_policy.main(export_policy.Args(run=str(run), out=str(run)))


def dir_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = make_config(
        "jungle", algo="qmarl_ac", num_batches=6, lr=1e30, **{**SMALL, "batches_per_chunk": 1}
    )
    with pytest.raises(loop.NonFiniteLoss, match="non-finite loss at batch") as error:
        loop.train(config, run_dir=tmp_path / "nan", progress=False, finish=False)
    checkpointer = Checkpointer(tmp_path / "nan")
    last_good = checkpointer.latest_batch()
    assert f"checkpoint (batch {last_good})" in str(error.value)
    assert last_good is not None and last_good < 6
    assert len(rows(tmp_path / "nan")) == last_good


def test_full_run_writes_every_artefact(tmp_path):
    config = make_config("battle", num_batches=2, **SMALL)
    run = loop.train(config, run_dir=tmp_path / "run", progress=False)
    for name in ("config.json", "metrics.jsonl", "curve.png", "policy.gif"):
        assert (run / name).exists(), name
    assert any((run / "tensorboard").iterdir())
    assert [r["batch"] for r in rows(run)] == [1, 2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "dqn"}, "invalid config field 'algo'='dqn'; choose one of: qmarl_ac, qmarl_pg"),
        ({"ensemble": "max"}, "'ensemble'='max'; choose one of: mean_prob, mean_logit, none"),
        ({"controllers": ("learn",)}, "battle has 2 teams, give one controller each"),
        ({"controllers": ("scripted", "random")}, "at least one team must be 'learn'"),
        ({"controllers": ("learn", "smart")}, "'controllers[1]'='smart'; choose one of: learn"),
        ({"env_preset": "huge"}, "'env_preset'='huge'; choose one of: tiny, n100, n1k, n10k"),
        ({"games_per_batch": 0}, "invalid config field 'games_per_batch'=0: must be >= 1"),
        ({"lr": 0.0}, "invalid config field 'lr'=0.0: must be > 0"),
        ({"actor_lr_scale": 0.0}, "invalid config field 'actor_lr_scale'=0.0: must be > 0"),
        ({"q_head": "max"}, "invalid config field 'q_head'='max'; choose one of: plain, dueling"),
        ({"gamma": 1.5}, "invalid config field 'gamma'=1.5: must be in (0, 1]"),
        ({"depth": 9}, "invalid config field 'depth'=9: needs a grid border of"),
        ({"node_budget": 0}, "invalid config field 'node_budget'=0: must be >= 1"),
        ({"budget_margin": 0.5}, "invalid config field 'budget_margin'=0.5: must be >= 1"),
        ({"heads": 0}, "invalid config field 'heads'=0: must be >= 1"),
        ({"landmark_sight": 4}, "invalid config field 'landmark_sight'=4: only Deception has one"),
        ({"dual_clip": 0.5}, "invalid config field 'dual_clip'=0.5: must be > 1 (or 0: off)"),
        ({"entropy_final": -0.1}, "invalid config field 'entropy_final'=-0.1: must be >= 0"),
        (
            {"ensemble_hops": -1, "share_ego_graphs": False},
            "invalid config field 'ensemble_hops'=-1: must be >= 0 (or None: all)",
        ),
        ({"ensemble_hops": 1}, "'ensemble_hops'=1: needs share_ego_graphs=False (or None)"),
        (
            {"ensemble_hops": 1, "share_ego_graphs": False, "algo": "mha"},
            "'ensemble_hops'=1: only for the ego-graph algos (got algo='mha')",
        ),
        ({"target_kl": 0.0}, "invalid config field 'target_kl'=0.0: must be > 0 (or None: off)"),
        (
            {"desired_kl": 0.01, "algo": "qmarl_ac"},
            "invalid config field 'desired_kl'=0.01: only for algo='qmarl_ppo'",
        ),
        ({"ac_steps": 0, "algo": "qmarl_ac"}, "invalid config field 'ac_steps'=0: must be >= 1"),
        (
            {"td_lambda": 1.5, "algo": "qmarl_ac"},
            "invalid config field 'td_lambda'=1.5: must be in [0, 1]",
        ),
        (
            {"td_lambda": 0.8, "algo": "qmarl_ppo"},
            "invalid config field 'td_lambda'=0.8: only for algo='qmarl_ac' or 'mha' (got algo=",
        ),
        (
            {"ac_steps": 2, "algo": "qmarl_ppo"},
            "invalid config field 'ac_steps'=2: only for algo='qmarl_ac' or 'mha' (got algo=",
        ),
        (
            {"ac_estimator": "greedy"},
            "invalid config field 'ac_estimator'='greedy'; choose one of: sampled, all_actions",
        ),
        (
            {"ac_estimator": "all_actions", "algo": "qmarl_pg"},
            "invalid config field 'ac_estimator'='all_actions': only for algo='qmarl_ac' or 'mha'",
        ),
        ({"update_chunks": -1}, "invalid config field 'update_chunks'=-1: must be >= 0 (0 = auto)"),
        ({"critic_warmup": -1}, "invalid config field 'critic_warmup'=-1: must be >= 0"),
        (
            {"budget_buckets": -1},
            "invalid config field 'budget_buckets'=-1: must be >= 0 (0 = auto)",
        ),
        (
            {"update_chunks": 7, "algo": "qmarl_ac"},
            "invalid config field 'update_chunks'=7: must divide the episode length",
        ),
        (
            {"update_chunks": 2, "algo": "qmarl_pg"},
            "invalid config field 'update_chunks'=2: must be 0 or 1 for algo='qmarl_pg'",
        ),
        (
            {"kickstart": "random"},
            "invalid config field 'kickstart'='random'; "
            "choose one of: scripted, pack, strike, strike2",
        ),
        ({"kickstart_coef": -1.0}, "invalid config field 'kickstart_coef'=-1.0: must be >= 0"),
        ({"kickstart_batches": 0}, "invalid config field 'kickstart_batches'=0: must be >= 1"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError) as error:
        make_config("battle", **overrides)
    assert message in str(error.value)


def test_scenario_only_fields_are_refused_elsewhere():
    with pytest.raises(ValueError, match=r"'shaping'=1\.0: only Battle and Deception have one"):
        make_config("jungle", shaping=1.0)
    with pytest.raises(ValueError, match="'observe_time'=True: only Battle and Deception have"):
        make_config("jungle", observe_time=True)
    with pytest.raises(ValueError, match=r"'kill_credit'=0\.5: only Battle has one"):
        make_config("deception", kill_credit=0.5)


def test_scenario_rules_are_controllers_and_teachers_of_their_scenario_only():
    assert make_config("battle", controllers=("learn", "strike")).controllers[1] == "strike"
    assert make_config("battle", kickstart="pack").kickstart == "pack"
    assert make_config("jungle", kickstart="claim").kickstart == "claim"
    assert make_config("jungle", kickstart="lookahead").kickstart == "lookahead"
    with pytest.raises(ValueError, match=r"'controllers\[1\]'='pack'; choose one of: learn, "
                                         r"random, scripted$"):  # fmt: skip
        make_config("deception", controllers=("learn", "pack"))
    with pytest.raises(
        ValueError,
        match=r"'kickstart'='strike'; choose one of: scripted, claim, informed, "
        r"lookahead$",
    ):
        make_config("jungle", kickstart="strike")
    with pytest.raises(ValueError, match=r"'kickstart'='claim'; choose one of: scripted, pack, "):
        make_config("battle", kickstart="claim")


def test_battle_rollout_is_a_teacher_of_team_0_against_the_scripted_team_only():
    assert make_config("battle", kickstart="rollout").kickstart == "rollout"
    with pytest.raises(ValueError, match=r"'kickstart'='rollout'; choose one of: scripted, claim"):
        make_config("jungle", kickstart="rollout")
    for controllers in (("scripted", "learn"), ("learn", "learn"), ("learn", "strike")):
        with pytest.raises(
            ValueError,
            match=r"'controllers'=.*: the 'rollout' teacher plans team 0's agents against the "
            r"scripted team; it needs controllers \('learn', 'scripted'\)",
        ):
            make_config("battle", kickstart="rollout", controllers=controllers)
    for team in (0, 1):  # no controller of a team
        controllers = ["learn", "scripted"]
        controllers[team] = "rollout"
        with pytest.raises(ValueError, match=rf"'controllers\[{team}\]'='rollout'; choose one "
                                             r"of: learn, random, scripted, pack, strike, "
                                             r"strike2$"):  # fmt: skip
            make_config("battle", controllers=tuple(controllers))


def test_battle_rollout_own_labels_the_moves_the_learner_just_played():
    """Collected with ``kickstart="rollout_own"``, the teacher corrects the joint moves just
    played: team 1's labels are its played moves, and team 0's are mostly the learner's own
    moves. ``rollout`` on the same games (the same parameters and keys: the same moves) labels
    ``strike``'s corrected moves, which an untrained learner matches far less often."""
    from qmarl_jax.rollout import collect

    def labelled(kickstart):
        trainer = Trainer(make_config("battle", kickstart=kickstart, num_batches=1, **SMALL))
        params = trainer.init(jax.random.PRNGKey(0)).teams[0].params
        play = jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))
        traj = play(jax.random.PRNGKey(1))
        acting = np.asarray(traj.alive)[:-1] & np.asarray(traj.live)[:-1][..., None]
        return np.asarray(traj.actions)[:-1], np.asarray(traj.teacher_actions), acting, trainer

    played, own_labels, acting, trainer = labelled("rollout_own")
    played_too, rollout_labels, _, _ = labelled("rollout")
    np.testing.assert_array_equal(played, played_too)
    team0 = np.asarray(trainer.teams) == 0
    agree = lambda labels, team: np.mean((labels == played)[acting & team])
    assert agree(own_labels, ~team0) == 1.0
    assert 0.7 < agree(own_labels, team0) < 1.0  # a few corrections
    assert agree(rollout_labels, team0) < agree(own_labels, team0) - 0.3


def test_kickstart_weight_decays_linearly_to_zero():
    def weights(**overrides):
        trainer = Trainer(make_config("battle", kickstart="strike", num_batches=8, **overrides))
        return [float(trainer.kickstart_coef(jnp.int32(b))) for b in (0, 2, 4, 8, 20)]

    assert weights() == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert weights(kickstart_coef=2.0, kickstart_batches=4) == [2.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("algo", ["qmarl_ac", "qmarl_pg"])
def test_kickstart_term_of_every_learner_is_the_teachers_cross_entropy(algo):
    """With the teacher's labels in the batch, the qmarl_ac (and mha's) / qmarl_pg loss grows by
    ``kickstart_coef`` x the cross-entropy of every acting node's policy against its agent's
    teacher action, summed in a plain loop over steps, games and nodes (each node counted once
    per ego-graph it stands for) and divided by the acting ego-graphs; the metrics are its mean
    per node and the argmax agreement. The trainer's update passes the batch's weight on."""
    from qmarl_jax.algos import common, qmarl_ac, qmarl_pg
    from qmarl_jax.rollout import collect, team_batch

    loss = qmarl_pg.loss if algo == "qmarl_pg" else qmarl_ac.loss
    config = make_config("battle", algo=algo, kickstart="strike", num_batches=1, **SMALL)
    trainer = Trainer(config)
    team = trainer.init(jax.random.PRNGKey(0)).teams[0]
    params = team.params
    traj = jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))(
        jax.random.PRNGKey(1)
    )
    taught = team_batch(traj, 0, 0, trainer.teams)
    plain = taught.replace(teacher_actions=None)
    base, base_metrics = jax.jit(lambda b: loss(params, trainer.heads, b, config))(plain)
    kicked, metrics = jax.jit(lambda b: loss(params, trainer.heads, b, config, None, 2.5))(taught)
    assert "teacher_agreement" not in base_metrics

    logits = trainer.heads.logits(params, taught.features[:-1], common.drop_last(taught.graphs))
    logits = np.asarray(logits, np.float64)
    copies = np.asarray(taught.graphs.nodes["copies"])[:-1]
    agents = np.asarray(taught.node_agent)[:-1]
    acting, teacher = np.asarray(taught.valid)[:-1], np.asarray(taught.teacher_actions)
    steps, games, slots = agents.shape
    cross_entropy = nodes = agree = 0.0
    for t, e, b in itertools.product(range(steps), range(games), range(slots)):
        agent = agents[t, e, b]
        if agent >= taught.num_agents or not acting[t, e, agent] or copies[t, e, b] == 0:
            continue  # padding, or the node of an agent that does not act
        log_probs = logits[t, e, b] - np.log(np.exp(logits[t, e, b]).sum())
        label = teacher[t, e, agent]
        cross_entropy -= copies[t, e, b] * log_probs[label]
        nodes += copies[t, e, b]
        agree += copies[t, e, b] * (np.argmax(logits[t, e, b]) == label)
    graphs = acting.sum()
    assert nodes > graphs > 0  # ego-graphs hold more nodes than their centres
    np.testing.assert_allclose(float(kicked - base), 2.5 * cross_entropy / graphs, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["kickstart_loss"]), cross_entropy / nodes, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["teacher_agreement"]), agree / nodes, rtol=1e-6)
    entropy_coef, train_policy = jnp.float32(config.entropy_coef), jnp.bool_(True)
    schedule = BatchSchedule(jnp.float32(1.0), entropy_coef, train_policy, jnp.float32(2.5))
    _, logs = jax.jit(trainer._gradient_step)(team, taught, schedule)
    np.testing.assert_allclose(float(logs["total_loss"]), float(kicked), rtol=1e-6)


@pytest.mark.parametrize("algo", ["qmarl_ppo", pytest.param("qmarl_ac", marks=pytest.mark.slow)])
def test_kickstart_pulls_the_policy_to_its_teacher(algo):
    """Kickstarted toward the ``pack`` rule, the greedy policy takes pack's action on nearly all
    the states it visits; it starts, and trained without kickstarting stays, far below. The
    rollout's teacher labels are ``pack_actions`` of the states played."""
    from envs.opponents import pack_actions
    from qmarl_jax.rollout import collect

    overrides = dict(SMALL, algo=algo, games_per_batch=8, max_steps=16, num_batches=12, lr=0.01)
    if algo == "qmarl_ac":
        overrides.update(ac_steps=16)  # PPO's 4 epochs x 4 minibatches: as many updates
    overrides.update(entropy_coef=0.0, kickstart_batches=1000)
    kicked = Trainer(make_config("battle", kickstart="pack", **overrides))
    plain = Trainer(make_config("battle", **overrides))
    env, team0 = kicked.env, np.asarray(kicked.env.teams) == 0
    start = env.batch_reset(jax.random.split(jax.random.PRNGKey(3), 8), kicked.env_params)

    play = jax.jit(lambda params: collect(kicked.actor, params, jax.random.PRNGKey(4),
                                          kicked.env_params, greedy=True, start=start))  # fmt: skip

    def agreement(runner) -> float:
        traj = play(tuple(t.params for t in runner.teams))
        first = jax.vmap(lambda grid: pack_actions(env, grid))(start[1].grid)
        np.testing.assert_array_equal(traj.teacher_actions[0], first)
        acting = np.asarray(traj.alive[:-1] & traj.live[:-1, :, None]) & team0
        same = np.asarray(traj.actions[:-1] == traj.teacher_actions)
        return float(same[acting].mean())

    key = jax.random.PRNGKey(0)
    trained, logs = jax.jit(kicked.train)(key)
    untaught, plain_logs = jax.jit(plain.train)(key)
    assert "teacher_agreement" in logs and "teacher_agreement" not in plain_logs
    before, after, without = agreement(kicked.init(key)), agreement(trained), agreement(untaught)
    assert before < 0.5 and after > 0.9 and without < 0.7  # measured: 0.18, 1.0, 0.48


def test_unknown_scenario_preset_and_field():
    with pytest.raises(ValueError, match="'scenario'='chess'; choose one of: jungle, battle"):
        make_config("chess")
    with pytest.raises(ValueError, match="'preset'='fast'; choose one of: default, paper"):
        make_config("battle", "fast")
    with pytest.raises(ValueError, match="'preset'='coordinated': only for deception"):
        make_config("battle", "coordinated")
    usable = "default, paper, kickstart, kickstart_finetune"
    with pytest.raises(ValueError, match=f"'preset'='wide_view': only for jungle; choose one of: "
                                         f"{usable}$"):  # fmt: skip
        make_config("battle", "wide_view")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['lrate'\]"):
        make_config("battle", lrate=0.1)


def test_paper_preset_holds_the_papers_settings():
    config = make_config("battle", "paper")
    assert (config.lr, config.lr_decay, config.lr_patience) == (0.01, 0.95, 10)
    assert (config.games_per_batch, config.num_batches, config.gamma) == (100, 120, 0.99)
    assert config.algo == "qmarl_ac"
    # The paper's sparse reward: neither the default's shaping nor its kill credit.
    env = config.env_config
    assert (env.shaping, env.kill_credit) == (0.0, 0.0)
    default = make_config("battle").env_config
    assert (default.shaping, default.kill_credit) == (1.0, 0.5)


def test_coordinated_preset_is_the_deception_run_that_beat_the_paper():
    config = make_config("deception", "coordinated")
    assert (config.landmark_sight, config.observe_time, config.shaping) == (4, True, 1.0)
    assert (config.games_per_batch, config.num_batches, config.lr_anneal) == (256, 1000, True)
    assert config.algo == "qmarl_ppo" and config.controllers == ("learn", "scripted")
    env = Trainer(config).env.config
    assert (env.landmark_sight, env.observe_time, env.shaping) == (4, True, 1.0)


def test_wide_view_preset_is_the_jungle_recipe_that_learned_on_every_seed():
    config = make_config("jungle", "wide_view")
    assert (config.view_radius, config.num_batches, config.entropy_coef) == (2, 1200, 0.05)
    assert config.algo == "qmarl_ppo" and config.games_per_batch == 32
    assert Trainer(config).env.config.view_radius == 2
    assert make_config("jungle", "wide_view", entropy_coef=0.03).entropy_coef == 0.03


def test_wide_view_ac_preset_is_the_best_measured_qmarl_ac_recipe():
    config = make_config("jungle", "wide_view_ac")
    assert (config.view_radius, config.num_batches, config.games_per_batch) == (2, 1200, 32)
    assert (config.algo, config.ac_estimator, config.ac_steps) == ("qmarl_ac", "all_actions", 4)
    assert (config.lr, config.actor_lr_scale, config.entropy_coef) == (0.01, 0.1, 0.7)
    assert config.td_lambda == 0.0
    with pytest.raises(ValueError, match="'preset'='wide_view_ac': only for jungle"):
        make_config("deception", "wide_view_ac")


def test_wide_view_ac_kickstart_preset_is_qmarl_ac_held_to_the_claim_rule():
    config = make_config("jungle", "wide_view_ac_kickstart")
    ac = make_config("jungle", "wide_view_ac")
    assert (config.algo, config.ac_estimator, config.ac_steps) == ("qmarl_ac", "all_actions", 4)
    assert (config.lr, config.actor_lr_scale, config.num_batches) == (0.01, 0.1, 1200)
    assert (config.kickstart, config.kickstart_coef, config.kickstart_batches) == (
        "claim",
        1.0,
        100_000,
    )
    assert (config.view_radius, config.entropy_coef, config.env_config.graph_radius) == (4, 0.01, 2)
    # Otherwise the wide_view_ac recipe.
    changed = ("view_radius", "graph_radius", "entropy_coef", "kickstart", "kickstart_batches")
    assert dataclasses.replace(config, **{name: getattr(ac, name) for name in changed}) == ac
    assert Trainer(config).actor.teacher is not None
    with pytest.raises(ValueError, match="'preset'='wide_view_ac_kickstart': only for jungle"):
        make_config("battle", "wide_view_ac_kickstart")


def test_wide_view_kickstart_preset_is_jungle_held_to_the_claim_rule():
    config = make_config("jungle", "wide_view_kickstart")
    assert (config.algo, config.kickstart, config.kickstart_coef) == ("qmarl_ppo", "claim", 1.0)
    assert (config.view_radius, config.entropy_coef, config.num_batches) == (4, 0.01, 1200)
    assert config.env_config.graph_radius == 2 and config.env_config.sight_radius == 4
    # The weight is held near 1 for the whole run: 1 - 1,200 / 100,000 at its end.
    last = float(Trainer(config).kickstart_coef(jnp.int32(config.num_batches)))
    assert last == pytest.approx(1 - 1200 / 100_000) and config.kickstart_batches == 100_000
    with pytest.raises(ValueError, match="'preset'='wide_view_kickstart': only for jungle"):
        make_config("battle", "wide_view_kickstart")


def test_kickstart_preset_is_battle_taught_by_rollout_from_scratch():
    config = make_config("battle", "kickstart")
    assert (config.kickstart, config.kickstart_coef, config.kickstart_batches) == (
        "rollout",
        1.0,
        None,
    )
    assert (config.view_radius, config.kill_credit, config.num_batches) == (3, 1.0, 600)
    assert config.env_config.graph_radius == 2
    assert config.algo == "qmarl_ppo" and config.init_from is None
    assert Trainer(config).actor.teacher is not None
    with pytest.raises(ValueError, match="'preset'='kickstart': only for battle"):
        make_config("jungle", "kickstart")


def learner_param_shapes(config):
    """The shapes of the learning team's parameters under ``config`` (no compute)."""
    init = jax.eval_shape(Trainer(config).init, jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: x.shape, init.teams[0].params)


def test_kickstart_finetune_preset_is_rl_alone_on_a_kickstart_runs_network(capsys):
    from experiments import train as train_cli
    from experiments import train_seeds as train_seeds_cli

    config = make_config("battle", "kickstart_finetune", init_from="runs/kickstarted")
    assert config.kickstart is None and config.init_from == "runs/kickstarted"
    assert (config.lr, config.num_batches, config.lr_anneal) == (3e-4, 300, True)
    assert (config.view_radius, config.kill_credit, config.env_config.graph_radius) == (3, 1.0, 2)
    # The same network as the kickstart preset's, so init_from accepts a kickstart run.
    kickstart = make_config("battle", "kickstart")
    assert learner_param_shapes(config) == learner_param_shapes(kickstart)
    # Without a run to start from it is refused, from Python and from the CLI (after its flags).
    stage1_run = re.escape("a --preset kickstart (or kickstart_finetune) run")
    with pytest.raises(
        ValueError, match=f"'init_from'=None: preset 'kickstart_finetune' .*{stage1_run}"
    ):
        make_config("battle", "kickstart_finetune")
    assert train_cli.main(["--preset", "kickstart_finetune", "--num-batches", "1"]) == 2
    assert "'init_from'=None: preset 'kickstart_finetune'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'preset'='kickstart_finetune': only for battle"):
        make_config("jungle", "kickstart_finetune", init_from="runs/kickstarted")
    # Vmapped fresh seeds cannot start from one run: refused, not silently trained from scratch.
    fresh = "starts every seed from a fresh network"
    with pytest.raises(ValueError, match=f"'preset'='kickstart_finetune': {fresh}"):
        train_seeds_cli.main(["--scenario", "battle", "--preset", "kickstart_finetune"])
    with pytest.raises(ValueError, match=f"'init_from'='runs/kickstarted': {fresh}"):
        train_seeds_cli.main(["--scenario", "battle", "--init-from", "runs/kickstarted"])


def test_wide_view_ac_finetune_preset_continues_a_kickstarted_run_at_a_fresh_rate(capsys):
    from experiments import train as train_cli
    from experiments import train_seeds as train_seeds_cli

    config = make_config("jungle", "wide_view_ac_finetune", init_from="runs/student")
    assert (config.kickstart, config.init_from) == ("claim", "runs/student")
    # A fresh rate annealed to 0 over 400 batches; the plateau decay is off.
    assert (config.lr, config.lr_anneal, config.lr_decay, config.num_batches) == (
        0.003,
        True,
        1.0,
        400,
    )
    # Otherwise stage 1's recipe and teacher, so init_from accepts its runs.
    stage1 = make_config("jungle", "wide_view_ac_kickstart")
    changed = ("lr", "lr_anneal", "lr_decay", "num_batches", "init_from")
    assert dataclasses.replace(config, **{name: getattr(stage1, name) for name in changed}) == (
        stage1
    )
    assert learner_param_shapes(config) == learner_param_shapes(stage1)
    planner = make_config("jungle", "wide_view_ac_finetune", init_from="r", kickstart="lookahead")
    assert Trainer(planner).actor.teacher is not None
    # Without a run to start from it is refused, naming the run it continues.
    stage1_run = "a --preset wide_view_ac_kickstart (or wide_view_ac_finetune) run as --init-from"
    with pytest.raises(ValueError, match=rf"'init_from'=None: .* {re.escape(stage1_run)}"):
        make_config("jungle", "wide_view_ac_finetune")
    assert train_cli.main(["--scenario", "jungle", "--preset", "wide_view_ac_finetune"]) == 2
    assert stage1_run in capsys.readouterr().err
    with pytest.raises(ValueError, match="'preset'='wide_view_ac_finetune': only for jungle"):
        make_config("battle", "wide_view_ac_finetune", init_from="runs/student")
    fresh = "'preset'='wide_view_ac_finetune': starts every seed from a fresh network"
    with pytest.raises(ValueError, match=fresh):
        train_seeds_cli.main(["--scenario", "jungle", "--preset", "wide_view_ac_finetune"])


def test_graph_radius_override_reaches_the_env_the_network_and_the_border_check():
    config = make_config("jungle", "wide_view_ac", graph_radius=2)
    assert config.env_config.graph_radius == 2
    trainer = Trainer(config)
    assert trainer.env.config.graph_radius == 2
    assert trainer.model.d_max == pytest.approx(math.sqrt(8))
    assert make_config("jungle", "wide_view_ac").env_config.graph_radius == 1
    # depth 3 x radius 2 = 6 cells of ego window: wider than the border of sight_radius 4.
    with pytest.raises(ValueError, match="needs a grid border of depth \\* graph_radius = 6"):
        make_config("jungle", graph_radius=2, depth=3)


def test_linear_lr_anneal_scales_every_update():
    config = make_config("jungle", algo="qmarl_ac", lr_anneal=True, num_batches=4, **SMALL)
    trainer = Trainer(config)
    runner = trainer.init(jax.random.PRNGKey(0))
    state, metrics = jax.jit(trainer.run_batches, static_argnums=1)(runner, 3)
    np.testing.assert_allclose(metrics["lr"], config.lr * np.array([1.0, 0.75, 0.5]))
    # The update of batch 4 is a quarter of an un-annealed one: same Adam state, same gradient.
    plain = Trainer(TrainConfig(**{**config.to_dict(), "lr_anneal": False}))
    step_annealed, logs = jax.jit(trainer.update)(state)
    assert float(logs["lr"]) == pytest.approx(0.25 * config.lr)
    step_plain, _ = jax.jit(plain.update)(state)
    for a, p, s in zip(jax.tree.leaves(step_annealed.teams[0].params),
                       jax.tree.leaves(step_plain.teams[0].params),
                       jax.tree.leaves(state.teams[0].params), strict=True):  # fmt: skip
        np.testing.assert_allclose(a - s, 0.25 * (p - s), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("algo", ["qmarl_ac", "qmarl_pg", "qmarl_ppo"])
def test_entropy_schedule_is_linear_and_each_update_uses_its_batchs_weight(algo):
    """``entropy_final`` anneals the bonus from ``entropy_coef`` at batch 0 to ``entropy_final``
    at the last batch; the update of batch k equals the update of a run whose constant bonus is
    the schedule's value at k (same state, same key; a schedule ignored would use 0.5)."""
    config = make_config("jungle", algo=algo, entropy_coef=0.5, entropy_final=0.1, num_batches=5,
                         ppo_epochs=1, num_minibatches=2, **SMALL)  # fmt: skip
    trainer = Trainer(config)
    schedule = jax.vmap(trainer.entropy_coef)(jnp.arange(5))
    np.testing.assert_allclose(schedule, [0.5, 0.4, 0.3, 0.2, 0.1], rtol=1e-6)
    state = trainer.init(jax.random.PRNGKey(0)).replace(batch=jnp.int32(2))
    scheduled, logs = jax.jit(trainer.update)(state)
    assert float(logs["entropy_coef"]) == pytest.approx(0.3)
    fields = {**config.to_dict(), "entropy_coef": 0.3, "entropy_final": None}
    constant, _ = jax.jit(Trainer(TrainConfig(**fields)).update)(state)
    for a, c in zip(jax.tree.leaves(scheduled.teams[0].params),
                    jax.tree.leaves(constant.teams[0].params), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)


def test_target_kl_stops_a_batchs_epochs_at_the_first_minibatch_past_it():
    """With ``target_kl`` the PPO steps of a batch stop (SB3's rule) once a minibatch's mean KL
    divergence of the nodes' policies from the acting ones exceeds 1.5 x the target: a target no
    step reaches changes nothing, and one below any step's KL lets exactly the first step through
    (its KL is 0: the parameters are still the acting ones), as Adam's step count shows."""
    base = make_config("jungle", algo="qmarl_ppo", ppo_epochs=2, num_minibatches=4, **SMALL)
    state = Trainer(base).init(jax.random.PRNGKey(0))
    start = jax.tree.leaves(state.teams[0].params)

    def update(target_kl):
        trainer = Trainer(TrainConfig(**{**base.to_dict(), "target_kl": target_kl}))
        after, logs = jax.jit(trainer.update)(state)
        adam_steps = [int(x) for x in jax.tree.leaves(after.teams[0].opt_state)
                      if jnp.issubdtype(x.dtype, jnp.integer)]  # fmt: skip
        return jax.tree.leaves(after.teams[0].params), logs, adam_steps

    free, free_logs, free_steps = update(None)
    loose, loose_logs, loose_steps = update(1e6)
    tight, tight_logs, tight_steps = update(1e-9)
    assert free_steps == loose_steps == [8]
    assert tight_steps == [1]
    assert float(free_logs["ppo_updates"]) == float(loose_logs["ppo_updates"]) == 1.0
    assert float(tight_logs["ppo_updates"]) == pytest.approx(1 / 8)
    assert "kl" not in free_logs  # measured only for target_kl
    assert float(loose_logs["kl"]) > 1e-6  # later minibatches see moved parameters
    for a, b in zip(free, loose, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    moved = lambda leaves: [
        np.abs(np.asarray(x - s)).max() for x, s in zip(leaves, start, strict=True)
    ]
    assert max(moved(tight)) > 0
    further = [f >= t for f, t in zip(moved(free), moved(tight), strict=True)]
    assert sum(further) > len(further) // 2  # one step moves less than eight


@pytest.mark.parametrize("algo", ["qmarl_ac", "mha"])
def test_ac_steps_are_that_many_single_steps_on_the_same_batch(algo):
    """``ac_steps=3``: the parameters of three one-step updates on the batch the first one
    collected, each from the parameters the one before left, and the mean of their losses."""
    base = make_config("jungle", algo=algo, lr_anneal=False, **SMALL)
    one = Trainer(base)
    three = Trainer(TrainConfig(**{**base.to_dict(), "ac_steps": 3}))
    runner = one.init(jax.random.PRNGKey(0))
    after, logs = jax.jit(three.update)(runner)

    batches = []
    original = one._gradient_step

    def capture(team, batch, *args):
        batches.append(batch)
        return original(team, batch, *args)

    def collected(runner):  # the batch the update collects (the same key)
        one.update(runner)
        return batches[-1]

    one._gradient_step = capture
    batch = jax.jit(collected)(runner)
    step = jax.jit(original)
    team, losses, replayed = runner.teams[0], [], []
    for _ in range(3):
        schedule = BatchSchedule(
            jnp.float32(1.0), jnp.float32(base.entropy_coef), jnp.bool_(True), jnp.float32(0.0)
        )
        team, step_logs = step(team, batch, schedule)
        losses.append(float(step_logs["critic_loss"]))
        replayed.append(jax.tree.leaves(team.params))
    got = jax.tree.leaves(after.teams[0].params)
    # Adam turns float noise in a near-zero gradient into steps of up to ~lr / 10 (lr 3e-3 here);
    # one step fewer misses by more than lr.
    for a, b in zip(got, replayed[-1], strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-4)
    assert max(np.abs(a - b).max() for a, b in zip(got, replayed[-2], strict=True)) > 3e-3
    assert float(logs["critic_loss"]) == pytest.approx(np.mean(losses), rel=1e-4)
    assert len(set(np.round(losses, 6))) == 3  # each step saw parameters the last one moved


def test_scale_by_kl_follows_rsl_rls_rule_step_by_step():
    """Each step's KL moves the scale before the step: above 2 x desired -> / 1.5, below half ->
    x 1.5, else unchanged; the learning rate stays in [1e-5, 1e-2] (a plain loop replays it)."""
    from qmarl_jax.train import scale_by_kl

    desired, lr = 0.01, 1e-3
    tx = scale_by_kl(desired, lr)
    state = tx.init({"w": jnp.zeros(2)})
    expected = 1.0
    kls = [0.0, 0.001, 0.01, 0.03, 0.5, 0.015, 0.004] + [0.0] * 12 + [1.0] * 30
    for kl in kls:
        if kl > 2 * desired:
            expected /= 1.5
        elif kl < desired / 2:
            expected *= 1.5
        expected = min(max(expected, 1e-5 / lr), 1e-2 / lr)
        updates, state = tx.update({"w": jnp.ones(2)}, state, kl=jnp.float32(kl))
        np.testing.assert_allclose(updates["w"], [expected] * 2, rtol=1e-5)
    assert expected == pytest.approx(1e-5 / lr)  # the floor was reached, and the cap before it
    updates, state = tx.update({"w": jnp.ones(2)}, state)  # no KL: applied unchanged
    np.testing.assert_allclose(updates["w"], [expected] * 2, rtol=1e-5)


def test_desired_kl_adapts_the_learning_rate_to_each_minibatchs_kl():
    """A desired KL above every step's KL raises the learning rate 1.5x per minibatch (8 here, up
    to the 1e-2 cap); one below every step's KL but the first (whose KL is 0: the acting
    parameters) lowers it 1.5x per later step; the logged lr is the adapted one."""
    base = make_config("jungle", algo="qmarl_ppo", ppo_epochs=2, num_minibatches=4, lr=0.003,
                       lr_anneal=False, **SMALL)  # fmt: skip
    for desired, scale in ((1e6, 1e-2 / 0.003), (1e-9, 1.5 * 1.5**-7)):
        trainer = Trainer(TrainConfig(**{**base.to_dict(), "desired_kl": desired}))
        after, logs = jax.jit(trainer.update)(trainer.init(jax.random.PRNGKey(0)))
        assert float(trainer.kl_scale(after.teams[0])) == pytest.approx(scale, rel=1e-5)
        assert float(logs["lr"]) == pytest.approx(0.003 * scale, rel=1e-5)


def test_entropy_weight_of_a_loss_is_the_given_one_or_the_configs():
    from qmarl_jax.algos import common

    config = make_config("jungle", entropy_coef=0.03)
    assert common.entropy_weight(config, None) == 0.03
    assert common.entropy_weight(config, 0.2) == 0.2


def test_credit_fallen_pays_the_outcome_to_agents_that_died_before_the_end():
    """Against a plain loop over real Battle episodes: an agent that fell at step t before the
    terminal step t_end gets gamma^(t_end - t) * its team's outcome added at t; nothing else
    changes."""
    from qmarl_jax.rollout import collect, credit_fallen

    gamma = 0.9
    config = make_config("battle", num_batches=1, **{**SMALL, "games_per_batch": 16,
                                                     "max_steps": 30})  # fmt: skip
    trainer = Trainer(config)
    params = trainer.init(jax.random.PRNGKey(0)).teams[0].params
    traj = jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))(
        jax.random.PRNGKey(5)
    )
    credited = np.asarray(credit_fallen(traj, trainer.teams, gamma))
    t_ = jax.tree.map(np.asarray, traj)
    expected = t_.reward.astype(np.float64).copy()
    steps, envs, agents = t_.reward.shape
    fallen = 0
    for e in range(envs):
        ends = [t for t in range(steps) if t_.terminated[t, e] and t_.live[t, e]]
        if not ends:
            continue
        end = ends[0]
        outcome = t_.info["outcome"][end, e]
        for i in range(agents):
            for t in range(end):
                if t_.alive[t, e, i] and not t_.alive[t + 1, e, i] and t_.live[t, e]:
                    expected[t, e, i] += gamma ** (end - t) * outcome[trainer.teams[i]]
                    fallen += outcome[trainer.teams[i]] != 0
    assert fallen > 0  # the sample holds fallen agents of decided games
    np.testing.assert_allclose(credited, expected, rtol=1e-6, atol=1e-6)
    jungle = Trainer(make_config("jungle", num_batches=1, **SMALL))
    jungle_params = jungle.init(jax.random.PRNGKey(0)).teams[0].params
    jungle_traj = jax.jit(
        lambda key: collect(jungle.actor, (jungle_params,), key, jungle.env_params)
    )(jax.random.PRNGKey(5))
    assert credit_fallen(jungle_traj, jungle.teams, gamma) is jungle_traj.reward  # no outcome
