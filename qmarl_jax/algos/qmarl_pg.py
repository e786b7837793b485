"""Q-MARL-PG: REINFORCE on the ego-graph policy (and, with depth-0 graphs, the Vanilla-PG
baseline: an independent policy on the local observation).

Each node's label is its agent's executed action, weighted by the agent's Monte-Carlo return
(standardised over the batch when ``normalize_advantages``).
"""

from __future__ import annotations

import jax.numpy as jnp

from qmarl_jax.algos import common


def loss(
    params,
    heads: common.Heads,
    batch: common.TeamBatch,
    config,
    entropy_coef=None,
    kickstart_coef=None,
):
    """Scalar loss and metrics for one team's batch (``entropy_coef``: the entropy bonus
    weight; None: ``config.entropy_coef``; with ``batch.teacher_actions`` the kickstarting term
    of weight ``kickstart_coef``, None: ``config.kickstart_coef``: ``common.kickstart_term``)."""
    logits = heads.logits(params, batch.features[:-1], common.drop_last(batch.graphs))
    returns = common.discounted_returns(common.masked_rewards(batch), config.gamma)
    valid = batch.valid[:-1]
    if config.normalize_advantages:
        returns = common.standardize(returns, valid) * valid
    _, valid_nodes = common.node_weights(batch)
    weight = valid_nodes[:-1]
    labels = common.node_labels(batch)[:-1]
    node_return = common.per_node(returns, batch.node_agent[:-1])
    log_prob = common.label_log_probs(logits, labels)
    graphs = common.num_graphs(batch)
    actor_loss = -jnp.sum(weight * node_return * log_prob)
    entropy = jnp.sum(weight * common.entropy(logits))
    total = (actor_loss - common.entropy_weight(config, entropy_coef) * entropy) / graphs
    nodes = jnp.maximum(jnp.sum(weight), 1)
    metrics = {"actor_loss": actor_loss / graphs, "entropy": entropy / nodes}
    if batch.teacher_actions is not None:
        teacher = common.per_node(batch.teacher_actions, batch.node_agent[:-1])
        term, kick_metrics = common.kickstart_term(
            logits, teacher, weight, config, kickstart_coef, graphs, nodes
        )
        total, metrics = total + term, {**metrics, **kick_metrics}
    return total, metrics
