"""Q-MARL-AC: TD(0) actor-critic with a counterfactual (COMA-style) baseline (SPEC section 7).

The critic ``q(G, a)`` gives node j a value for each of j's actions, conditioned on the other nodes'
actions but not on j's own. Advantage ``q_j(a_j) - sum_a pi_j(a) q_j(a)``; the critic regresses on
the TD(0) target ``r + gamma V(next)`` where ``V`` of an agent is the mean over the ego-graphs
holding it of ``sum_a pi(a) q(a)`` (no bootstrap through a terminal step or a death).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmarl_jax.algos import common


def loss(params, heads: common.Heads, batch: common.TeamBatch, config, counts=None):
    """Scalar loss and metrics for one team's batch.

    Args:
      counts: ``common.LossCounts`` of the whole batch when ``batch`` is one time chunk of it
        (``common.time_chunks``): the chunks' losses and gradients then sum to the whole batch's.
        Default: the batch's own.
    """
    logits = heads.logits(params, batch.features, batch.graphs)  # [T+1, E, B, 5]
    q = heads.q_values(params, batch.features, batch.graphs, batch.actions)
    labels = common.node_labels(batch)
    alive_nodes, valid_nodes = common.node_masks(batch)

    policy = jax.nn.softmax(logits)
    node_value = jax.lax.stop_gradient(jnp.sum(policy * q, axis=-1))  # [T+1, E, B]
    agent_value = common.agent_mean(node_value, batch.node_agent, alive_nodes, batch.num_agents)
    bootstrap = (~batch.terminated)[..., None] & batch.alive[1:]
    target = common.masked_rewards(batch) + config.gamma * bootstrap * agent_value[1:]

    q_taken = jnp.take_along_axis(q, labels[..., None], axis=-1)[..., 0][:-1]
    weight = valid_nodes[:-1]
    counts = common.loss_counts(batch) if counts is None else counts
    graphs = counts.graphs
    critic_loss = jnp.sum(weight * (q_taken - common.per_node(target, batch.node_agent[:-1])) ** 2)
    advantage = jax.lax.stop_gradient(q_taken - node_value[:-1])
    log_prob = common.label_log_probs(logits[:-1], labels[:-1])
    actor_loss = -jnp.sum(weight * advantage * log_prob)
    entropy = jnp.sum(weight * common.entropy(logits[:-1]))
    total = (actor_loss + config.critic_coef * critic_loss - config.entropy_coef * entropy) / graphs
    return total, {
        "actor_loss": actor_loss / graphs,
        "critic_loss": critic_loss / graphs,
        "entropy": entropy / counts.nodes,
    }
