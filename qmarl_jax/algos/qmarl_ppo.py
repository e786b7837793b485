"""Q-MARL-PPO (ours): clipped PPO with GAE on the same ego-graph samples.

Before the epochs, the critic's node values are averaged per agent over the ego-graphs holding it;
GAE runs per agent with terminated and truncated kept apart (a truncated last step bootstraps from
the value of the state after it, a terminal one or a death does not). In the epochs every node's
ratio uses its own log-prob under the acting parameters; its advantage and return are its agent's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from qmarl_jax.algos import common


@struct.dataclass
class PPOSamples:
    """Per-step training samples, with a leading sample axis S (= T x E env-steps).

    Attributes:
      features: float32[S, N, F].
      graphs: GraphsTuple with a leading S axis.
      labels: int32[S, B] executed action of each node's agent.
      old_log_prob: float32[S, B].
      advantage: float32[S, B] the node's agent's (standardised) advantage.
      target: float32[S, B] the node's agent's return (GAE + old value).
      weight: bool[S, B] nodes of acting team agents.
      old_logits: float32[S, B, 5] each node's policy under the acting parameters, to measure
        how far the epochs move it (``config.target_kl``, ``desired_kl``); None when not needed.
      teacher_labels: int32[S, B] the kickstarting teacher's action of each node's agent
        (``config.kickstart``); None without a teacher.
      agent_side: int32[S, N] each agent's side for the ``team`` critic input
        (``common.critic_sides``); None for the ``ego`` critic.
    """

    features: jax.Array
    graphs: object
    labels: jax.Array
    old_log_prob: jax.Array
    advantage: jax.Array
    target: jax.Array
    weight: jax.Array
    old_logits: jax.Array | None = None
    teacher_labels: jax.Array | None = None
    agent_side: jax.Array | None = None


def prepare(params, heads: common.Heads, batch: common.TeamBatch, config) -> PPOSamples:
    """Advantages and returns from the acting parameters, flattened to env-step samples."""
    sides = common.critic_sides(batch) if config.critic_input == "team" else None
    values = heads.values(params, batch.features, batch.graphs, sides)  # [T+1, E, B]
    alive_weight, valid_weight = common.node_weights(batch)
    agent_value = common.agent_mean(values, batch.node_agent, alive_weight, batch.num_agents)
    advantage = common.gae(
        common.masked_rewards(batch),
        agent_value,
        *common.step_masks(batch),
        config.gamma,
        config.gae_lambda,
    )
    target = advantage + agent_value[:-1]
    valid = batch.valid[:-1]
    if config.normalize_advantages:
        advantage = common.standardize(advantage, valid)
    agents = batch.node_agent[:-1]
    features, graphs = batch.features[:-1], common.drop_last(batch.graphs)
    old_logits = None
    if config.target_kl is not None or config.desired_kl is not None:
        old_logits = heads.logits(params, features, graphs)
    samples = PPOSamples(
        features=features,
        graphs=graphs,
        labels=common.node_labels(batch)[:-1],
        old_log_prob=batch.node_logp,
        advantage=common.per_node(advantage * valid, agents),
        target=common.per_node(target, agents),
        weight=valid_weight[:-1] > 0,
        old_logits=old_logits,
        teacher_labels=jax.tree.map(lambda t: common.per_node(t, agents), batch.teacher_actions),
        agent_side=None if sides is None else sides[:-1],
    )
    flatten = lambda x: x.reshape(-1, *x.shape[2:])
    return jax.tree.map(flatten, jax.lax.stop_gradient(samples))


def with_graphs(samples: PPOSamples, graphs) -> PPOSamples:
    """``samples`` on ``graphs`` cut from their own (``graph.trim_budget``): the per-node arrays
    are cut to the same node slots."""
    slots = graphs.nodes["agent"].shape[-1]
    cut = lambda x: x[..., :slots]
    old_logits = samples.old_logits
    return samples.replace(
        graphs=graphs,
        labels=cut(samples.labels),
        old_log_prob=cut(samples.old_log_prob),
        advantage=cut(samples.advantage),
        target=cut(samples.target),
        weight=cut(samples.weight),
        old_logits=None if old_logits is None else old_logits[..., :slots, :],
        teacher_labels=jax.tree.map(cut, samples.teacher_labels),
    )


def loss(
    params,
    heads: common.Heads,
    samples: PPOSamples,
    config,
    entropy_coef=None,
    kickstart_coef=None,
):
    """Clipped-surrogate + value + entropy loss of a minibatch of samples (``entropy_coef``: the
    entropy bonus weight; None: ``config.entropy_coef``), plus with ``samples.teacher_labels``
    the kickstarting term: ``kickstart_coef`` (None: ``config.kickstart_coef``) x the
    cross-entropy of every acting node's policy against its agent's teacher action, summed over
    nodes and divided by the ego-graphs as the other terms are."""
    logits = heads.logits(params, samples.features, samples.graphs)
    values = heads.values(params, samples.features, samples.graphs, samples.agent_side)
    log_prob = common.label_log_probs(logits, samples.labels)
    weight = samples.weight
    # Masked nodes (padding, other teams, the dead) carry arbitrary old log-probs: keep their ratio
    # at 1 so no inf * 0 can appear; a node can also disagree strongly with the ensemble that
    # chose its label, so the log-ratio is bounded before exponentiation.
    log_ratio = jnp.clip(jnp.where(weight, log_prob - samples.old_log_prob, 0.0), -20.0, 20.0)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
    surrogate = jnp.minimum(ratio * samples.advantage, clipped * samples.advantage)
    if config.dual_clip:
        bound = config.dual_clip * samples.advantage
        surrogate = jnp.where(samples.advantage < 0, jnp.maximum(surrogate, bound), surrogate)
    # Every ego-graph is a sample: a node of a graph stored for several centres counts per copy.
    copies = jnp.where(weight, samples.graphs.nodes["copies"], 0).astype(jnp.float32)
    graphs = jnp.maximum(jnp.sum(weight & (samples.graphs.nodes["own"] == 1)), 1)
    nodes = jnp.maximum(jnp.sum(copies), 1.0)
    actor_loss = -jnp.sum(jnp.where(weight, copies * surrogate, 0.0))
    critic_loss = jnp.sum(jnp.where(weight, copies * (values - samples.target) ** 2, 0.0))
    entropy = jnp.sum(jnp.where(weight, copies * common.entropy(logits), 0.0))
    bonus = common.entropy_weight(config, entropy_coef) * entropy
    total = (actor_loss + config.critic_coef * critic_loss - bonus) / graphs
    metrics = {
        "actor_loss": actor_loss / graphs,
        "critic_loss": critic_loss / graphs,
        "entropy": entropy / nodes,
        "clip_fraction": jnp.sum(copies * (jnp.abs(ratio - 1) > config.clip_eps)) / nodes,
    }
    if samples.teacher_labels is not None:
        term, kick_metrics = common.kickstart_term(
            logits, samples.teacher_labels, copies, config, kickstart_coef, graphs, nodes
        )
        total, metrics = total + term, {**metrics, **kick_metrics}
    if samples.old_logits is not None:
        # Exact, not estimated from the labels: they are the ensemble's actions, which a node's
        # own policy may have given almost no probability (a ratio-based estimate explodes).
        kl = common.kl_divergence(samples.old_logits, logits)
        metrics["kl"] = jnp.sum(jnp.where(weight, copies * kl, 0.0)) / nodes
    return total, metrics
