"""NMP invariances, ensembling against a plain loop, the counterfactual critic, returns and GAE."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
from envs import core
from qmarl_jax import graph, nmp
from qmarl_jax.algos import common
from qmarl_jax.ensemble import disagreement, ensemble
from qmarl_jax.metrics import graph_metrics

MODEL = nmp.ActorCritic(width=16, num_blocks=2, n_rbf=10, d_max=math.sqrt(2))


def setup_graphs(positions, height=9, width=9, depth=2, max_nodes=25):
    num_agents = len(positions)
    env, _ = envs.make("battle", height=height, width=width, num_agents=num_agents)
    state = env.state_from(jnp.asarray(positions))
    graphs, _ = graph.ego_graphs(env.spec, state.grid, depth, 1, max_nodes, num_agents * 25,
                                 num_agents * 200)  # fmt: skip
    return env, state, graphs


POSITIONS = [[1, 1], [1, 2], [2, 3], [4, 4], [5, 5], [0, 7], [7, 1], [6, 2]]


def init(features, graphs, num_agents):
    return MODEL.init(jax.random.key(0), features, graphs, jnp.zeros(num_agents, jnp.int32))


def test_node_permutation_invariance():
    env, _state, graphs = setup_graphs(POSITIONS)
    n = env.num_agents
    features = jax.random.normal(jax.random.key(1), (n, 12))
    params = init(features, graphs, n)
    logits = MODEL.apply(params, features, graphs, method=MODEL.logits)
    budget = graphs.nodes["agent"].shape[0]
    # New slot k holds old node perm[k]; the agent-aligned singleton slots [0, n) stay in place.
    perm = np.concatenate([np.arange(n), n + np.random.default_rng(0).permutation(budget - n)])
    inverse = np.argsort(perm)
    edges = np.random.default_rng(1).permutation(graphs.senders.shape[0])
    receivers = np.asarray(graphs.receivers)[edges]
    permuted = graphs._replace(
        nodes={k: v[perm] for k, v in graphs.nodes.items()},
        senders=jnp.asarray(inverse[np.asarray(graphs.senders)[edges]]),
        receivers=jnp.asarray(
            np.where(receivers < budget, inverse[np.minimum(receivers, budget - 1)], budget)
        ),
        edges={"distance": graphs.edges["distance"][edges]},
    )
    permuted_logits = MODEL.apply(params, features, permuted, method=MODEL.logits)
    np.testing.assert_allclose(permuted_logits, logits[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transform", ["rot90", "flip_rows", "transpose"])
def test_invariance_to_rotating_and_reflecting_the_grid(transform):
    side = 9
    p = np.asarray(POSITIONS)
    moved = {
        "rot90": np.stack([p[:, 1], side - 1 - p[:, 0]], -1),
        "flip_rows": np.stack([side - 1 - p[:, 0], p[:, 1]], -1),
        "transpose": p[:, ::-1],
    }[transform]
    env, _, graphs = setup_graphs(p)
    _, _, moved_graphs = setup_graphs(moved)
    n = env.num_agents
    features = jax.random.normal(jax.random.key(2), (n, 12))  # per-agent inputs held fixed
    params = init(features, graphs, n)

    assert_same_outputs(
        outputs_by_graph(params, features, moved_graphs, "logits"),
        outputs_by_graph(params, features, graphs, "logits"),
    )


def outputs_by_graph(params, features, graphs, head, *extra):
    """``{(ego-graph, agent): output}`` of one head over the real nodes of ``graphs``."""
    out = np.asarray(MODEL.apply(params, features, graphs, *extra, method=getattr(MODEL, head)))
    agent, owner = np.asarray(graphs.nodes["agent"]), np.asarray(graphs.nodes["graph"])
    real = np.flatnonzero(agent < features.shape[0])
    return {(int(owner[i]), int(agent[i])): out[i] for i in real}


def assert_same_outputs(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", ["logits", "values", "q_values"])
def test_singleton_fast_path_equals_message_passing_on_every_node(head):
    """Edgeless ego-graphs computed per agent give what the full network gives them."""
    n = len(POSITIONS)
    env, state = setup_graphs(POSITIONS)[:2]
    build = lambda aligned: graph.ego_graphs(env.spec, state.grid, 2, 1, 25, n * 25, n * 200,
                                             singleton_slots=aligned)[0]  # fmt: skip
    fast, reference = build(True), build(False)
    assert int(np.sum(np.asarray(fast.nodes["agent"])[:n] < n)) >= 1  # [0, 7] has no neighbour
    features = jax.random.normal(jax.random.key(8), (n, 12))
    actions = jax.random.randint(jax.random.key(9), (n,), 0, 5)
    params = init(features, fast, n)
    extra = (actions,) if head == "q_values" else ()
    assert_same_outputs(
        outputs_by_graph(params, features, fast, head, *extra),
        outputs_by_graph(params, features, reference, head, *extra),
    )


def loop_ensemble(logits, graphs, num_agents, mode, weight, max_hop=None):
    """Plain Python reference of the three ensembling modes."""
    logits = np.asarray(logits, np.float64)
    agent, hop = np.asarray(graphs.nodes["agent"]), np.asarray(graphs.nodes["hop"])
    out = np.full((num_agents, logits.shape[-1]), 1.0 / logits.shape[-1])
    reach = 0 if mode == "none" else max_hop if max_hop is not None else np.inf
    for j in range(num_agents):
        rows = [i for i in range(len(agent)) if agent[i] == j and weight[i] and hop[i] <= reach]
        if not rows:
            continue
        z = logits[rows] - logits[rows].max(-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        if mode == "mean_logit":
            mean = np.log(p).mean(0)
            out[j] = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
        else:
            out[j] = p.mean(0) if mode == "mean_prob" else p[0]
    return out


@pytest.mark.parametrize("mode", ["mean_prob", "mean_logit", "none"])
def test_ensemble_matches_a_python_loop(mode):
    env, _, graphs = setup_graphs(POSITIONS)
    n = env.num_agents
    budget = graphs.nodes["agent"].shape[0]
    logits = jax.random.normal(jax.random.key(3), (budget, 5)) * 2
    weight = np.random.default_rng(0).random(budget) < 0.8
    weight[np.asarray(graphs.nodes["hop"]) == 0] = True
    probs, votes = ensemble(logits, graphs, n, mode, jnp.asarray(weight))
    np.testing.assert_allclose(probs, loop_ensemble(logits, graphs, n, mode, weight), atol=1e-5)
    agent = np.asarray(graphs.nodes["agent"])
    if mode != "none":
        expected_votes = [np.sum((agent == j) & weight) for j in range(n)]
        np.testing.assert_array_equal(votes, expected_votes)


@pytest.mark.parametrize("mode", ["mean_prob", "mean_logit"])
def test_ensemble_within_max_hop_matches_a_python_loop(mode):
    """``max_hop``: only the nodes at most that many hops from their ego-graph's centre vote;
    0 is ``none`` and the ego-graphs' depth (2) is every vote."""
    env, _, graphs = setup_graphs(POSITIONS)
    n, budget = env.num_agents, graphs.nodes["agent"].shape[0]
    hop = np.asarray(graphs.nodes["hop"])
    assert {1, 2} <= set(hop[np.asarray(graphs.nodes["agent"]) < n])  # both rings vote here
    logits = jax.random.normal(jax.random.key(4), (budget, 5)) * 2
    weight = np.ones(budget, bool)
    by_hop = {h: np.asarray(ensemble(logits, graphs, n, mode, max_hop=h)[0]) for h in (0, 1, 2)}
    for h, probs in by_hop.items():
        np.testing.assert_allclose(probs, loop_ensemble(logits, graphs, n, mode, weight, h),
                                   atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(by_hop[0], ensemble(logits, graphs, n, "none")[0], atol=1e-6)
    np.testing.assert_allclose(by_hop[2], ensemble(logits, graphs, n, mode)[0], atol=1e-6)
    assert np.abs(by_hop[1] - by_hop[0]).max() > 1e-3
    assert np.abs(by_hop[1] - by_hop[2]).max() > 1e-3


def test_ensemble_rejects_unknown_mode():
    _, _, graphs = setup_graphs(POSITIONS)
    with pytest.raises(ValueError, match="unknown ensemble mode 'vote'; choose one of"):
        ensemble(jnp.zeros((graphs.nodes["agent"].shape[0], 5)), graphs, 8, "vote")


def critic_inputs():
    """``(graphs, features, params, actions)`` of the critic tests on ``POSITIONS``."""
    env, _, graphs = setup_graphs(POSITIONS)
    n = env.num_agents
    features = jax.random.normal(jax.random.key(4), (n, 12))
    params = init(features, graphs, n)
    actions = jax.random.randint(jax.random.key(5), (n,), 0, 5)
    return graphs, features, params, actions


@pytest.mark.parametrize("q_head", nmp.Q_HEADS)
def test_counterfactual_critic_ignores_only_the_nodes_own_action(q_head):
    model = MODEL.clone(q_head=q_head)
    graphs, features, params, actions = critic_inputs()
    q = model.apply(params, features, graphs, actions, method=model.q_values)
    agent = np.asarray(graphs.nodes["agent"])
    for j in (0, 1):  # agents 0 and 1 are neighbours
        changed = actions.at[j].set((actions[j] + 2) % 5)
        q2 = model.apply(params, features, graphs, changed, method=model.q_values)
        own = agent == j
        np.testing.assert_allclose(q2[own], q[own], rtol=1e-6, atol=1e-6)
        # ... but a neighbour's action does reach node j.
        assert not np.allclose(q2[agent == 1 - j], q[agent == 1 - j])


def test_dueling_q_is_the_state_value_plus_centred_plain_outputs():
    graphs, features, params, actions = critic_inputs()
    q_plain = MODEL.apply(params, features, graphs, actions, method=MODEL.q_values)
    dueling = MODEL.clone(q_head="dueling")
    q_dueling = dueling.apply(params, features, graphs, actions, method=dueling.q_values)
    values = MODEL.apply(params, features, graphs, method=MODEL.values)
    expected = values[:, None] + q_plain - q_plain.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(q_dueling, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q_head", nmp.Q_HEADS)
def test_regressing_the_taken_action_moves_the_untaken_ones_only_with_the_dueling_head(q_head):
    """What the ``dueling`` head is for: a TD update reaches only the taken action's Q; with the
    plain head the other four barely move (only through the shared hidden layer)."""
    model = MODEL.clone(q_head=q_head)
    graphs, features, params, actions = critic_inputs()
    actions = jnp.zeros_like(actions)  # every agent took action 0 (up)
    real = np.asarray(graph.node_mask(graphs))

    def taken_error(p):
        q = model.apply(p, features, graphs, actions, method=model.q_values)
        return jnp.mean((q[real, 0] - 1.0) ** 2)

    before = model.apply(params, features, graphs, actions, method=model.q_values)[real]
    tx = optax.adam(0.01)

    def step(_, carry):
        params, opt_state = carry
        updates, opt_state = tx.update(jax.grad(taken_error)(params), opt_state)
        return optax.apply_updates(params, updates), opt_state

    params, _ = jax.lax.fori_loop(0, 100, step, (params, tx.init(params)))
    after = model.apply(params, features, graphs, actions, method=model.q_values)[real]
    np.testing.assert_allclose(after[:, 0], 1.0, atol=0.1)  # the taken action learned its target
    untaken_shift = float(jnp.mean(after[:, 1:] - before[:, 1:]))
    if q_head == "dueling":
        assert untaken_shift > 0.5  # followed the state value toward the target
    else:
        assert abs(untaken_shift) < 0.1  # their output rows get no gradient


def test_policy_terms_match_numpy_in_float64():
    rng = np.random.default_rng(3)
    # A scale of 30 makes some rows near-deterministic (log-probs of -100 and below).
    logits = rng.normal(scale=30.0, size=(2, 7, 5)).astype(np.float32)
    values = rng.normal(size=(2, 7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 7))
    x = logits.astype(np.float64)
    log_p = x - x.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    p = np.exp(log_p)
    got = lambda f, *a: np.asarray(f(jnp.asarray(logits), *map(jnp.asarray, a)))
    np.testing.assert_allclose(got(common.label_log_probs, labels),
                               np.take_along_axis(log_p, labels[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(got(common.entropy), -(p * log_p).sum(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got(common.expected_value, values), (p * values).sum(-1),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    other = rng.normal(scale=3.0, size=(2, 7, 5))
    log_q = other - other.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    np.testing.assert_allclose(got(common.kl_divergence, other.astype(np.float32)),
                               (p * (log_p - log_q)).sum(-1), rtol=1e-4, atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(got(common.kl_divergence, logits), 0.0, atol=1e-5)


@pytest.mark.parametrize("estimator", ["sampled", "all_actions"])
def test_counterfactual_actor_gradient_matches_a_numpy_loop_over_actions(estimator):
    """d objective / d logits of each node against float64 numpy: ``sampled`` is the advantage
    of the label times d log pi(label) = onehot(label) - pi; ``all_actions`` is its expectation
    over the node's own policy, a loop over the 5 labels weighted by pi(a)."""
    from qmarl_jax.algos import qmarl_ac

    rng = np.random.default_rng(4)
    logits = rng.normal(scale=2.0, size=(3, 6, 5)).astype(np.float32)
    q = rng.normal(size=(3, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(3, 6))
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    baseline = (p * q).sum(-1)

    def sampled_gradient(action):  # [3, 6] actions -> [3, 6, 5]
        advantage = np.take_along_axis(q, action[..., None], -1)[..., 0] - baseline
        return advantage[..., None] * (np.eye(5)[action] - p)

    if estimator == "sampled":
        expected = sampled_gradient(labels)
    else:
        expected = sum(p[..., a, None] * sampled_gradient(np.full_like(labels, a))
                       for a in range(5))  # fmt: skip

    def objective(logits):
        value = common.expected_value(logits, jnp.asarray(q))
        return qmarl_ac.actor_objective(logits, jnp.asarray(q), value, jnp.asarray(labels),
                                        estimator).sum()  # fmt: skip

    got = jax.grad(objective)(jnp.asarray(logits))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(expected).max() > 0.1


def test_rbf_expansion():
    d = jnp.array([0.0, 0.7, 1.4142135])
    out = nmp.rbf_expand(d, 10, math.sqrt(2))
    step = math.sqrt(2) / 10
    expected = np.exp(-((np.asarray(d)[:, None] - np.arange(10) * step) ** 2) / step)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)  # float32 vs float64


def test_discounted_returns_and_gae_match_python_loops():
    rng = np.random.default_rng(0)
    steps, agents = 7, 3
    rewards = rng.normal(size=(steps, agents)).astype(np.float32)
    values = rng.normal(size=(steps + 1, agents)).astype(np.float32)
    bootstrap = (rng.random((steps, agents)) < 0.8).astype(np.float32)
    continues = (rng.random((steps, agents)) < 0.8).astype(np.float32)
    gamma, lam = 0.9, 0.8
    returns = np.zeros_like(rewards)
    advantages = np.zeros_like(rewards)
    for a in range(agents):
        g = adv = 0.0
        for t in reversed(range(steps)):
            g = rewards[t, a] + gamma * g
            returns[t, a] = g
            delta = rewards[t, a] + gamma * bootstrap[t, a] * values[t + 1, a] - values[t, a]
            adv = delta + gamma * lam * continues[t, a] * adv
            advantages[t, a] = adv
    np.testing.assert_allclose(common.discounted_returns(jnp.asarray(rewards), gamma), returns,
                               rtol=1e-5)  # fmt: skip
    got = common.gae(*map(jnp.asarray, (rewards, values, bootstrap, continues)), gamma, lam)
    np.testing.assert_allclose(got, advantages, rtol=1e-5, atol=1e-6)


def test_lambda_returns_are_the_mixture_of_n_step_returns_and_gae_plus_value():
    """``common.lambda_returns`` against the textbook definition, ``(1 - lam) sum_n lam^(n-1)
    G^(n)`` with the remaining weight on the longest return (one trajectory, bootstrapped at
    its end), and against GAE + V with episode ends and deaths (``continues`` <= ``bootstrap``,
    as in a batch); lam = 0 is the TD(0) target."""
    rng = np.random.default_rng(1)
    steps, agents = 6, 4
    rewards = rng.normal(size=(steps, agents))
    values = rng.normal(size=(steps + 1, agents))
    gamma, lam = 0.9, 0.7
    ones = np.ones((steps, agents))

    def n_step(t, n):
        head = sum(gamma**k * rewards[t + k] for k in range(n))
        return head + gamma**n * values[t + n]

    mixture = np.stack([
        (1 - lam) * sum(lam ** (n - 1) * n_step(t, n) for n in range(1, steps - t))
        + lam ** (steps - t - 1) * n_step(t, steps - t)
        for t in range(steps)
    ])  # fmt: skip
    as_f32 = lambda *xs: [jnp.asarray(x, jnp.float32) for x in xs]
    got = common.lambda_returns(*as_f32(rewards, values[1:], ones, ones), gamma, lam,
                                jnp.asarray(values[-1], jnp.float32))  # fmt: skip
    np.testing.assert_allclose(got, mixture, rtol=1e-5, atol=1e-5)

    bootstrap = (rng.random((steps, agents)) < 0.8).astype(np.float64)
    continues = bootstrap * (rng.random((steps, agents)) < 0.8)
    arrays = as_f32(rewards, values[1:], bootstrap, continues)
    got = common.lambda_returns(*arrays, gamma, lam, jnp.asarray(values[-1], jnp.float32))
    advantages = common.gae(*as_f32(rewards, values, bootstrap, continues), gamma, lam)
    np.testing.assert_allclose(got, advantages + values[:-1], rtol=1e-5, atol=1e-5)
    td0 = common.lambda_returns(*arrays, gamma, 0.0, jnp.zeros(agents))
    np.testing.assert_allclose(td0, rewards + gamma * bootstrap * values[1:], rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_merged_graph_batches_equal_separate_applications():
    env, _, graphs = setup_graphs(POSITIONS)
    _, _, other = setup_graphs([*POSITIONS[:4], [8, 8], [8, 6], [3, 6], [0, 4]])
    n = env.num_agents
    features = jax.random.normal(jax.random.key(6), (2, n, 12))
    params = init(features[0], graphs, n)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), graphs, other)
    heads = common.Heads(MODEL)
    batched = heads.logits(params, features, stacked)
    for i, g in enumerate((graphs, other)):
        single = MODEL.apply(params, features[i], g, method=MODEL.logits)
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-5)
    assert batched.shape[-1] == core.NUM_ACTIONS


def ppo_setup():
    """``(graphs, features float32[1, N, 12], params)`` of the PPO loss tests: POSITIONS'
    ego-graphs, random observations and a network initialised on them."""
    env, _, graphs = setup_graphs(POSITIONS)
    features = jax.random.normal(jax.random.key(7), (1, env.num_agents, 12))
    return graphs, features, init(features[0], graphs, env.num_agents)


def test_ppo_loss_ignores_masked_nodes_and_stays_finite():
    from qmarl_jax.algos import qmarl_ppo
    from qmarl_jax.config import make_config

    graphs, features, params = ppo_setup()
    budget = graphs.nodes["agent"].shape[0]
    weight = np.asarray(graph.node_mask(graphs)) & (np.arange(budget) % 3 != 0)
    rng = np.random.default_rng(0)
    base = dict(
        features=features,
        graphs=jax.tree.map(lambda x: x[None], graphs),
        labels=jnp.asarray(rng.integers(0, 5, (1, budget)), jnp.int32),
        advantage=jnp.asarray(rng.normal(size=(1, budget)), jnp.float32),
        target=jnp.asarray(rng.normal(size=(1, budget)), jnp.float32),
        weight=jnp.asarray(weight[None]),
    )
    old = rng.normal(size=(1, budget)).astype(np.float32) - 2
    garbage = np.where(weight[None], old, -1e30).astype(np.float32)
    heads, config = common.Heads(MODEL), make_config("battle")
    clean, _ = qmarl_ppo.loss(
        params, heads, qmarl_ppo.PPOSamples(old_log_prob=jnp.asarray(old), **base), config
    )
    dirty, _ = qmarl_ppo.loss(
        params, heads, qmarl_ppo.PPOSamples(old_log_prob=jnp.asarray(garbage), **base), config
    )
    grads = jax.grad(
        lambda p: qmarl_ppo.loss(
            p, heads, qmarl_ppo.PPOSamples(old_log_prob=jnp.asarray(garbage), **base), config
        )[0]
    )(params)
    assert np.isfinite(float(dirty)) and float(dirty) == float(clean)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("dual_clip", [0.0, 3.0])
def test_ppo_surrogate_and_dual_clip_match_a_hand_computation(dual_clip):
    import dataclasses

    from qmarl_jax.algos import qmarl_ppo
    from qmarl_jax.config import make_config

    graphs, features, params = ppo_setup()
    budget = graphs.nodes["agent"].shape[0]
    weight = np.asarray(graph.node_mask(graphs))
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (1, budget)).astype(np.int32)
    logits = np.asarray(MODEL.apply(params, features[0], graphs, method=MODEL.logits), np.float64)
    log_prob = (logits - np.log(np.exp(logits).sum(-1, keepdims=True)))[
        np.arange(budget), labels[0]
    ]
    # Old log-probs far below the new ones: ratios of e^5 .. e^12, beyond any clip.
    old = log_prob - rng.uniform(5, 12, budget)
    advantage = np.where(np.arange(budget) % 2 == 0, -1.0, 1.0) * rng.uniform(0.5, 2, budget)
    samples = qmarl_ppo.PPOSamples(
        features=features,
        graphs=jax.tree.map(lambda x: x[None], graphs),
        labels=jnp.asarray(labels),
        old_log_prob=jnp.asarray(old[None], jnp.float32),
        advantage=jnp.asarray(advantage[None], jnp.float32),
        target=jnp.zeros((1, budget), jnp.float32),
        weight=jnp.asarray(weight[None]),
    )
    config = dataclasses.replace(make_config("battle"), dual_clip=dual_clip)
    _, aux = qmarl_ppo.loss(params, common.Heads(MODEL), samples, config)
    expected = 0.0
    for i in np.flatnonzero(weight):
        ratio = np.exp(log_prob[i] - old[i])
        a = advantage[i]
        value = min(ratio * a, np.clip(ratio, 0.8, 1.2) * a)
        if dual_clip and a < 0:
            value = max(value, dual_clip * a)
        expected -= value
    centres = np.sum(weight & (np.asarray(graphs.nodes["hop"]) == 0))
    np.testing.assert_allclose(float(aux["actor_loss"]), expected / centres, rtol=1e-3)
    if dual_clip:  # bounded by c |A| per node
        assert abs(float(aux["actor_loss"])) <= dual_clip * np.abs(advantage).sum()
    else:  # plain PPO: the exploded ratios dominate
        assert float(aux["actor_loss"]) > 1e3


def test_ppo_kickstart_term_matches_a_hand_computation():
    """The loss with teacher labels minus the loss without = coef x the cross-entropy summed
    over weighted nodes (each counted once per centre it stands for) over the ego-graphs."""
    from qmarl_jax.algos import qmarl_ppo
    from qmarl_jax.config import make_config

    graphs, features, params = ppo_setup()
    budget = graphs.nodes["agent"].shape[0]
    weight = np.asarray(graph.node_mask(graphs)) & (np.arange(budget) % 4 != 1)
    rng = np.random.default_rng(2)
    teacher = rng.integers(0, 5, budget).astype(np.int32)
    samples = qmarl_ppo.PPOSamples(
        features=features,
        graphs=jax.tree.map(lambda x: x[None], graphs),
        labels=jnp.asarray(rng.integers(0, 5, (1, budget)), jnp.int32),
        old_log_prob=jnp.full((1, budget), -1.6, jnp.float32),
        advantage=jnp.asarray(rng.normal(size=(1, budget)), jnp.float32),
        target=jnp.zeros((1, budget), jnp.float32),
        weight=jnp.asarray(weight[None]),
    )
    heads, config = common.Heads(MODEL), make_config("battle", kickstart="strike")
    plain, _ = qmarl_ppo.loss(params, heads, samples, config)
    taught = samples.replace(teacher_labels=jnp.asarray(teacher[None]))
    kicked, aux = qmarl_ppo.loss(params, heads, taught, config, kickstart_coef=2.5)
    logits = np.asarray(MODEL.apply(params, features[0], graphs, method=MODEL.logits), np.float64)
    copies = np.asarray(graphs.nodes["copies"])
    cross_entropy, nodes, agree = 0.0, 0.0, 0.0
    for i in np.flatnonzero(weight):
        log_probs = logits[i] - np.log(np.exp(logits[i]).sum())
        cross_entropy -= copies[i] * log_probs[teacher[i]]
        nodes += copies[i]
        agree += copies[i] * (np.argmax(logits[i]) == teacher[i])
    centres = np.sum(weight & (np.asarray(graphs.nodes["hop"]) == 0))
    np.testing.assert_allclose(float(kicked - plain), 2.5 * cross_entropy / centres, rtol=1e-4)
    np.testing.assert_allclose(float(aux["kickstart_loss"]), cross_entropy / nodes, rtol=1e-5)
    np.testing.assert_allclose(float(aux["teacher_agreement"]), agree / nodes, rtol=1e-6)
    default, _ = qmarl_ppo.loss(params, heads, taught, config)  # the config's weight, 1.0
    np.testing.assert_allclose(float(default - plain), cross_entropy / centres, rtol=1e-4)


def test_take_rows_fills_out_of_range_and_its_gradient_skips_them():
    table = jax.random.normal(jax.random.key(3), (4, 3))
    index = jnp.array([2, 4, 0, 2, 9, 3], jnp.int32)  # 4 and 9: out of range (padding)
    rows = np.asarray(nmp.take_rows(table, index))
    for k, i in enumerate(np.asarray(index)):
        expected = np.asarray(table[i]) if i < 4 else np.zeros(3)
        np.testing.assert_array_equal(rows[k], expected)
    weights = jax.random.normal(jax.random.key(4), (6, 3))
    grad = jax.grad(lambda t: jnp.sum(nmp.take_rows(t, index) * weights))(table)
    expected = np.zeros((4, 3))
    for k, i in enumerate(np.asarray(index)):
        if i < 4:
            expected[i] += np.asarray(weights[k])
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


@pytest.mark.parametrize("head", ["logits", "values", "q_values"])
def test_padding_edges_change_no_output_or_gradient(head):
    """Padding edges (receiver out of range) may carry any sender and distance."""
    n = len(POSITIONS)
    _, _, graphs = setup_graphs(POSITIONS)
    features = jax.random.normal(jax.random.key(5), (n, 12))
    actions = jax.random.randint(jax.random.key(6), (n,), 0, 5)
    params = init(features, graphs, n)
    padding = np.asarray(graphs.receivers) >= graphs.nodes["agent"].shape[0]
    assert padding.any() and (~padding).any()
    scrambled = graphs._replace(
        senders=jnp.where(padding, jnp.arange(padding.size) % (n + 3), graphs.senders),
        edges={"distance": jnp.where(padding, 1.3, graphs.edges["distance"])},
    )
    extra = (actions,) if head == "q_values" else ()

    def summed(p, g):
        return jnp.sum(MODEL.apply(p, features, g, *extra, method=getattr(MODEL, head)) ** 2)

    np.testing.assert_allclose(
        MODEL.apply(params, features, scrambled, *extra, method=getattr(MODEL, head)),
        MODEL.apply(params, features, graphs, *extra, method=getattr(MODEL, head)),
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    for a, b in zip(
        jax.tree.leaves(jax.grad(summed)(params, scrambled)),
        jax.tree.leaves(jax.grad(summed)(params, graphs)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_first_block_per_node_per_agent_and_per_pair_agree():
    """The first block's edge terms depend only on an edge's two agents: computed per node and
    edge, per agent, or once per (receiver, ring slot) pair, the heads and gradients agree; in a
    dense crowd the automatic choice is the pair table, in a sparse one the per-node path."""
    rng = np.random.default_rng(4)
    cells = rng.choice(81, size=40, replace=False)  # about 50% density on 9x9
    positions = np.stack([cells // 9, cells % 9], -1)
    env, _, graphs = setup_graphs(positions, max_nodes=16)
    n = env.num_agents
    # Padding edges may carry any ring slot and sender (out-of-range receivers drop them).
    padding = np.asarray(graphs.receivers) >= graphs.nodes["agent"].shape[0]
    assert padding.any() and (~padding).any()
    graphs = graphs._replace(
        edges={**graphs.edges, "ring": jnp.where(padding, 7, graphs.edges["ring"])}
    )
    features = jax.random.normal(jax.random.key(11), (n, 12))
    actions = jax.random.randint(jax.random.key(12), (n,), 0, 5)
    models = {
        where: nmp.ActorCritic(width=16, num_blocks=2, n_rbf=10, d_max=math.sqrt(2),
                               max_degree=env.max_degree, first_block=where)
        for where in ("nodes", "agents", "pairs")
    }  # fmt: skip
    params = models["nodes"].init(jax.random.key(0), features, graphs, actions)

    def heads(model, p):
        return model.apply(p, features, graphs, actions)  # logits, values, q_values

    def loss(model, p):
        return sum(jnp.sum(jnp.tanh(out)) for out in heads(model, p))

    reference = heads(models["nodes"], params)
    reference_grad = jax.grad(lambda p: loss(models["nodes"], p))(params)
    for where in ("agents", "pairs"):
        for got, expected in zip(heads(models[where], params), reference, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        grad = jax.grad(lambda p, m=models[where]: loss(m, p))(params)
        for g, e in zip(jax.tree.leaves(grad), jax.tree.leaves(reference_grad), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    trunk = nmp.MessagePassing(max_degree=env.max_degree)
    num_edges = graphs.senders.shape[0]
    assert num_edges > n * env.max_degree
    assert trunk._first_block_where(n, graphs.nodes["agent"].shape[0] - n, num_edges) == "pairs"
    assert trunk._first_block_where(10000, 8479, 10470) == "nodes"
    assert trunk._first_block_where(10000, 21304, 33375) == "agents"
    assert nmp.MessagePassing()._first_block_where(10, 1000, 10**6) == "agents"
    with pytest.raises(ValueError, match="invalid first_block='edges'; choose one of: auto"):
        nmp.MessagePassing(first_block="edges")._first_block_where(10, 10, 10)


@pytest.mark.parametrize("mode", ["mean_prob", "mean_logit", "none"])
def test_shared_ego_graphs_give_every_agent_the_same_ensemble(mode):
    """A path of 4 agents (its two middle agents' ego-graphs are the whole path: stored once,
    2 copies; the ends' are not), a triangle (3 copies), a pair and a singleton: the network on
    the shared layout gives every agent the ensemble of one graph per agent."""
    positions = [[0, 0], [1, 1], [2, 2], [3, 3], [0, 6], [0, 7], [1, 7], [5, 0], [6, 1], [8, 8]]
    env, _ = envs.make("battle", height=9, width=9, num_agents=len(positions))
    state = env.state_from(jnp.asarray(positions))
    n = env.num_agents

    def build(share):
        return graph.ego_graphs(env.spec, state.grid, 2, 1, 25, n * 25, n * 200,
                                share_components=share)  # fmt: skip

    (plain, _), (shared, stats) = build(False), build(True)
    copies = np.asarray(shared.nodes["copies"])
    agent = np.asarray(shared.nodes["agent"])
    assert sorted(copies[(agent == 1) & (np.asarray(shared.nodes["own"]) == 1)]) == [2]
    assert copies[agent == 4].max() == 3 and copies[agent == 7].max() == 2
    assert int(stats.shared_nodes) == 4 + 3 + 3 + 2  # path 4, triangle 3 + 3, pair 2
    # Logged per batch: one graph per agent would hold 3 + 4 + 4 + 3 + 3 * 3 + 2 * 2 + 1 nodes.
    logged = graph_metrics(SimpleNamespace(teams=(SimpleNamespace(stats=stats),)))
    assert float(logged["graph_nodes"]) == pytest.approx(28 / n)
    assert float(logged["graph_shared_fraction"]) == pytest.approx(12 / 28)
    features = jax.random.normal(jax.random.key(5), (n, 12))
    params = init(features, plain, n)
    params = jax.tree.map(lambda w: w * 30, params)  # far from uniform probabilities
    got = ensemble(MODEL.apply(params, features, shared, method=MODEL.logits), shared, n, mode)
    want = ensemble(MODEL.apply(params, features, plain, method=MODEL.logits), plain, n, mode)
    assert np.abs(np.asarray(want[0]) - 0.2).max() > 0.1
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])


def test_an_own_ego_graph_of_depth_l_holds_the_whole_receptive_field_of_l_blocks():
    """With ``depth`` >= the network's L blocks, an agent's own ego-graph holds every agent its
    output can depend on, so its ``none`` distribution is the one a deeper ego-graph gives (the
    network on the whole component); ``mean_prob`` also averages in ego-graphs cut at their
    border, which differ (docs/RESULTS.md, "Ensemble ablation"). A path of 6 agents (diameter 5)
    and the triangle, pair and singleton of the test above."""
    positions = [[0, 0], [1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [0, 6], [0, 7], [1, 7], [5, 0],
                 [6, 1], [8, 8]]  # fmt: skip
    env, _ = envs.make("battle", height=9, width=9, num_agents=len(positions))
    state = env.state_from(jnp.asarray(positions))
    n = env.num_agents
    features = jax.random.normal(jax.random.key(7), (n, 12))

    def distributions(depth, mode):
        graphs = graph.ego_graphs(env.spec, state.grid, depth, 1, 25, n * 25, n * 200)[0]
        params = init(features, graphs, n)
        logits = MODEL.apply(params, features, graphs, method=MODEL.logits)
        return np.asarray(ensemble(logits, graphs, n, mode)[0])

    assert MODEL.num_blocks == 2
    np.testing.assert_allclose(distributions(2, "none"), distributions(4, "none"), atol=1e-6)
    assert np.abs(distributions(2, "mean_prob") - distributions(4, "none")).max() > 1e-4


def test_disagreement_compares_each_agents_own_ego_graph_with_the_ensemble():
    """Total variation between an agent's own-ego-graph distribution and the mean over every
    ego-graph holding it, against a loop over the nodes of one graph per agent; the shared
    layout gives the same. On the path 0-1-2-3 the ends' ego-graphs miss the far end: agent 1's
    output in agent 0's ego-graph lacks agent 3's message (two blocks pass it 3 -> 2 -> 1), so
    agents 1 and 2 disagree; agent 0's output needs only agents 1 and 2, present in every
    ego-graph holding it, so it does not. The triangle's, the pair's and the singleton's
    ego-graphs are all their whole component."""
    positions = [[0, 0], [1, 1], [2, 2], [3, 3], [0, 6], [0, 7], [1, 7], [5, 0], [6, 1], [8, 8]]
    env, _ = envs.make("battle", height=9, width=9, num_agents=len(positions))
    state = env.state_from(jnp.asarray(positions))
    n = env.num_agents
    features = jax.random.normal(jax.random.key(7), (n, 12))

    def build(share):
        return graph.ego_graphs(env.spec, state.grid, 2, 1, 25, n * 25, n * 200,
                                share_components=share)[0]  # fmt: skip

    plain, shared = build(False), build(True)
    params = init(features, plain, n)

    def logits_of(graphs):
        return MODEL.apply(params, features, graphs, method=MODEL.logits)

    tv, differs, votes = map(np.asarray, disagreement(logits_of(plain), plain, n))
    logits = np.asarray(logits_of(plain), np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    agent, own = np.asarray(plain.nodes["agent"]), np.asarray(plain.nodes["own"])
    for j in range(n):
        holds = agent == j
        mean, mine = probs[holds].mean(0), probs[holds & (own == 1)][0]
        assert votes[j] == holds.sum()
        assert tv[j] == pytest.approx(0.5 * np.abs(mean - mine).sum(), abs=1e-6)
        assert differs[j] == (np.argmax(mean) != np.argmax(mine))
    assert tv[[1, 2]].min() > 1e-4  # about 5e-4 at initialisation
    np.testing.assert_allclose(tv[[0, 3, 4, 5, 6, 7, 8, 9]], 0.0, atol=1e-6)
    got = map(np.asarray, disagreement(logits_of(shared), shared, n))
    for name, a, b in zip(("tv", "differs", "votes"), got, (tv, differs, votes), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
