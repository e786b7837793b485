"""Q-MARL-AC: TD(0) actor-critic with a counterfactual (COMA-style) baseline (SPEC section 7).

The critic ``q(G, a)`` gives node j a value for each of j's actions, conditioned on the other nodes'
actions but not on j's own. Advantage ``q_j(a_j) - sum_a pi_j(a) q_j(a)``; the critic regresses on
the TD(0) target ``r + gamma V(next)`` where ``V`` of an agent is the mean over the ego-graphs
holding it of ``sum_a pi(a) q(a)`` (no bootstrap through a terminal step or a death), or with
``config.td_lambda`` > 0 on the TD(lambda) return built from the same ``V``
(``common.lambda_returns``). The actor term is the paper's sampled estimator or its expectation
over the node's own policy (``actor_objective``, ``config.ac_estimator``).

The network runs on the T acting steps only; ``V`` and the return of the state after the last of
them (the bootstrap of step T - 1; both ``V`` at the end of a batch) come in as ``next_value`` and
``next_return``. A batch cut into time chunks (``common.time_chunks``) is then processed last chunk
first, each chunk handing the ``V`` and return of its first step to the chunk before it
(``chunk_loss``): no step is run twice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmarl_jax.algos import common


def _node_values(params, heads: common.Heads, features, graphs, actions):
    """``(logits [..., B, 5], q [..., B, 5], sum_a pi(a) q(a) [..., B] without gradient)``."""
    logits = heads.logits(params, features, graphs)
    q = heads.q_values(params, features, graphs, actions)
    node_value = jax.lax.stop_gradient(common.expected_value(logits, q))
    return logits, q, node_value


def _taken(q: jax.Array, labels: jax.Array) -> jax.Array:
    """``q [..., B, 5]`` at each node's label ``[..., B]`` -> ``[..., B]``."""
    return jnp.take_along_axis(q, labels[..., None], axis=-1)[..., 0]


def actor_objective(logits, q, node_value, labels, estimator: str = "sampled") -> jax.Array:
    """Per-node objective whose gradient is the node's counterfactual policy gradient.

    Args:
      logits: float32[..., B, 5] node policies (the gradient flows through them only).
      q: float32[..., B, 5] counterfactual action values.
      node_value: float32[..., B] ``sum_a pi(a) q(a)``, the baseline.
      labels: int32[..., B] executed action of each node's agent.
      estimator: ``sampled``: ``(q(label) - V) log pi(label)``; ``all_actions``: its expectation
        over the node's own policy, ``sum_a pi(a) (q(a) - V)`` (the same gradient in mean).

    Returns:
      float32[..., B] to maximise.
    """
    if estimator == "all_actions":
        advantages = jax.lax.stop_gradient(q - node_value[..., None])
        return common.expected_value(logits, advantages)
    advantage = jax.lax.stop_gradient(_taken(q, labels) - node_value)
    return advantage * common.label_log_probs(logits, labels)


def final_value(params, heads: common.Heads, batch: common.TeamBatch) -> jax.Array:
    """float32[E, N] (no gradient) ``V`` of every agent in the batch's last state (step T): the
    bootstrap of its last step."""
    last = lambda x: x[-1:]
    _, _, node_value = _node_values(
        params, heads, last(batch.features), jax.tree.map(last, batch.graphs), last(batch.actions)
    )
    alive_nodes = last(common.node_weights(batch)[0])
    return common.agent_mean(node_value, last(batch.node_agent), alive_nodes, batch.num_agents)[0]


def chunk_loss(
    params,
    heads: common.Heads,
    batch: common.TeamBatch,
    config,
    counts: common.LossCounts,
    next_value: jax.Array,
    next_return: jax.Array,
    entropy_coef: jax.Array | float | None = None,
    kickstart_coef: jax.Array | float | None = None,
):
    """The loss terms of T steps given the value and return of the state after them.

    Args:
      batch: a batch (or one time chunk of one) with T acting steps.
      counts: the normalisers of the whole batch (``common.loss_counts``).
      next_value: float32[E, N] ``V`` of every agent at step T (``final_value``, or the first
        value of the next chunk).
      next_return: float32[E, N] the TD(lambda) return of every agent at step T (``next_value``
        at the end of a batch, or the first return of the next chunk).
      entropy_coef: the entropy bonus weight (None: ``config.entropy_coef``).
      kickstart_coef: the weight of the teacher's cross-entropy when the batch has
        ``teacher_actions`` (None: ``config.kickstart_coef``; ``common.kickstart_term``).

    Returns:
      ``(loss, (metrics, (first_value, first_return) float32[E, N] each))``: ``V`` and the
      return at step 0, the ``next_value`` and ``next_return`` of the chunk before this one.
    """
    steps = common.drop_last
    logits, q, node_value = _node_values(
        params, heads, steps(batch.features), steps(batch.graphs), steps(batch.actions)
    )  # [T, E, B, 5], [T, E, B, 5], [T, E, B]
    labels = common.node_labels(batch)[:-1]
    alive_nodes, valid_nodes = common.node_weights(batch)
    agents = batch.node_agent[:-1]
    agent_value = common.agent_mean(node_value, agents, alive_nodes[:-1], batch.num_agents)
    following = jnp.concatenate([agent_value[1:], next_value[None]])  # V at step t + 1
    target = common.lambda_returns(
        common.masked_rewards(batch),
        following,
        *common.step_masks(batch),
        config.gamma,
        config.td_lambda,
        next_return,
    )

    q_taken = _taken(q, labels)
    weight = valid_nodes[:-1]
    graphs = counts.graphs
    critic_loss = jnp.sum(weight * (q_taken - common.per_node(target, agents)) ** 2)
    objective = actor_objective(logits, q, node_value, labels, config.ac_estimator)
    actor_loss = -jnp.sum(weight * objective)
    entropy = jnp.sum(weight * common.entropy(logits))
    bonus = common.entropy_weight(config, entropy_coef) * entropy
    total = (actor_loss + config.critic_coef * critic_loss - bonus) / graphs
    metrics = {
        "actor_loss": actor_loss / graphs,
        "critic_loss": critic_loss / graphs,
        "entropy": entropy / counts.nodes,
    }
    if batch.teacher_actions is not None:
        teacher = common.per_node(batch.teacher_actions, agents)
        term, kick_metrics = common.kickstart_term(
            logits, teacher, weight, config, kickstart_coef, graphs, counts.nodes
        )
        total, metrics = total + term, {**metrics, **kick_metrics}
    return total, (metrics, (agent_value[0], target[0]))


def loss(
    params,
    heads: common.Heads,
    batch: common.TeamBatch,
    config,
    entropy_coef=None,
    kickstart_coef=None,
):
    """Scalar loss and metrics for one team's whole batch (``entropy_coef``,
    ``kickstart_coef``: as in ``chunk_loss``)."""
    next_value = final_value(params, heads, batch)
    counts = common.loss_counts(batch)
    total, (metrics, _) = chunk_loss(
        params, heads, batch, config, counts, next_value, next_value, entropy_coef, kickstart_coef
    )
    return total, metrics
