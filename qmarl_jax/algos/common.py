"""Shared pieces of the losses: node labels and masks, per-agent means, returns, advantages.

Conventions: arrays are time-major ``[T, E, ...]`` (T steps, E envs) or ``[T + 1, E, ...]``
where the extra step is the state after the last action (for bootstrapping).
``B`` is the node budget.
Every node of an ego-graph that stands for an agent of the learning team gets that agent's
executed action as its label; the loss of an ego-graph sums over its nodes, and the batch loss
is the mean over ego-graphs (SPEC section 7).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph
from flax import struct

from qmarl_jax import graph, nmp


@struct.dataclass
class TeamBatch:
    """One learning team's view of a batch of episodes.

    Attributes:
      features: float32[T+1, E, N, F] observations.
      graphs: GraphsTuple with leading [T+1, E] axes (ego-graphs centred on the team's agents).
      actions: int32[T+1, E, N] executed actions (the last step: sampled, not executed).
      node_logp: float32[T, E, B] log-prob of the node's label under the acting parameters.
      reward: float32[T, E, N].
      terminated: bool[T, E] the episode ended in a terminal state at step t.
      alive: bool[T+1, E, N] agent alive at step t.
      live: bool[T+1, E] the episode had not ended before step t.
      team_member: bool[N] agents of the learning team.
      teacher_actions: int32[T, E, N] the kickstarting teacher's action of every agent in each
        acting state (``TrainConfig.kickstart``), or None.
    """

    features: jax.Array
    graphs: jraph.GraphsTuple
    actions: jax.Array
    node_logp: jax.Array
    reward: jax.Array
    terminated: jax.Array
    alive: jax.Array
    live: jax.Array
    team_member: jax.Array
    teacher_actions: jax.Array | None = None

    @property
    def num_agents(self) -> int:
        return self.actions.shape[-1]

    @property
    def valid(self) -> jax.Array:
        """bool[T+1, E, N] the agent acts at step t (alive, episode running, in the team)."""
        return self.alive & self.live[..., None] & self.team_member

    @property
    def node_agent(self) -> jax.Array:
        """int32[T+1, E, B] global agent id of each node (N on padding)."""
        return self.graphs.nodes["agent"]


def drop_last(tree):
    """The first T steps of a ``[T+1, ...]`` pytree."""
    return jax.tree.map(lambda x: x[:-1], tree)


def per_node(agent_values: jax.Array, node_agent: jax.Array) -> jax.Array:
    """Gather ``[..., N]`` per-agent values to nodes ``[..., B]`` (0 on padding nodes); per-agent
    values broadcast over the nodes' leading axes."""
    padded = jnp.concatenate([agent_values, jnp.zeros_like(agent_values[..., :1])], axis=-1)
    padded = jnp.broadcast_to(padded, node_agent.shape[:-1] + padded.shape[-1:])
    return jnp.take_along_axis(padded, node_agent, axis=-1)


def agent_mean(node_values: jax.Array, node_agent: jax.Array, weight: jax.Array, n: int):
    """Mean over weighted nodes of each agent: ``[..., B] -> [..., N]`` (0 without nodes)."""

    def one(values, agents, w):
        total = jax.ops.segment_sum(values * w, agents, num_segments=n)
        count = jax.ops.segment_sum(w.astype(values.dtype), agents, num_segments=n)
        return total / jnp.maximum(count, 1.0)

    lead = node_values.shape[:-1]
    flat = [x.reshape(-1, x.shape[-1]) for x in (node_values, node_agent, weight)]
    return jax.vmap(one)(*flat).reshape(*lead, n)


def node_masks(batch: TeamBatch) -> tuple[jax.Array, jax.Array]:
    """``(alive_nodes [T+1,E,B], valid_nodes [T+1,E,B])``: team nodes of alive agents; of agents
    acting in a running episode."""
    member = per_node(batch.team_member, batch.node_agent).astype(bool)
    alive = per_node(batch.alive, batch.node_agent).astype(bool) & member
    valid = per_node(batch.valid, batch.node_agent).astype(bool)
    return alive, valid


def node_weights(batch: TeamBatch) -> tuple[jax.Array, jax.Array]:
    """``node_masks`` as float32 weights times the ego-graphs each node stands for
    (``copies``: an ego-graph stored once for several centres counts once per centre), so
    sums over nodes are sums over every ego-graph."""
    copies = batch.graphs.nodes["copies"].astype(jnp.float32)
    return tuple(mask * copies for mask in node_masks(batch))


def num_graphs(batch: TeamBatch) -> jax.Array:
    """Ego-graphs in the loss: acting team agents over the T steps (at least 1)."""
    return jnp.maximum(jnp.sum(batch.valid[:-1]), 1).astype(jnp.float32)


class LossCounts(NamedTuple):
    """Normalisers of a batch's loss (float32[] each, at least 1).

    Attributes:
      graphs: ego-graphs in the loss (``num_graphs``).
      nodes: nodes of acting team agents over the T steps (the entropy's mean).
    """

    graphs: jax.Array
    nodes: jax.Array


def loss_counts(batch: TeamBatch) -> LossCounts:
    """The ``LossCounts`` of a whole batch."""
    nodes = jnp.sum(node_weights(batch)[1][:-1])
    return LossCounts(num_graphs(batch), jnp.maximum(nodes, 1.0))


def time_chunks(batch: TeamBatch, num_chunks: int) -> TeamBatch:
    """Split a batch of T steps into ``num_chunks`` chunks of ``k = T / num_chunks`` steps.

    Chunk c holds steps ``[c k, (c + 1) k)`` and, for the ``[T + 1]`` fields, the state after
    them (step ``(c + 1) k``: who is alive there, for its last TD target; ``qmarl_ac`` takes the
    value of that state from the next chunk); so a loss that sums per-step terms (normalised by
    the whole batch's ``LossCounts``) sums over the chunks to the whole batch's loss.

    Returns:
      The batch with a leading chunk axis C on every field (``[C, k + 1, ...]`` / ``[C, k, ...]``).
    """
    steps = batch.reward.shape[0]
    if steps % num_chunks:
        raise ValueError(f"{num_chunks} chunks do not divide the {steps} steps of a batch")
    length = steps // num_chunks
    start = jnp.arange(num_chunks)[:, None] * length
    with_next, steps_only = start + jnp.arange(length + 1), start + jnp.arange(length)
    take = lambda index: lambda x: x[index]
    return batch.replace(
        features=batch.features[with_next],
        graphs=jax.tree.map(take(with_next), batch.graphs),
        actions=batch.actions[with_next],
        node_logp=batch.node_logp[steps_only],
        reward=batch.reward[steps_only],
        terminated=batch.terminated[steps_only],
        alive=batch.alive[with_next],
        live=batch.live[with_next],
        team_member=jnp.broadcast_to(batch.team_member, (num_chunks, *batch.team_member.shape)),
        teacher_actions=jax.tree.map(take(steps_only), batch.teacher_actions),  # None stays None
    )


def with_graphs(batch: TeamBatch, graphs: jraph.GraphsTuple) -> TeamBatch:
    """``batch`` on ``graphs`` cut from its own (``graph.trim_budget``): the per-node arrays
    are cut to the same node slots."""
    return batch.replace(
        graphs=graphs, node_logp=batch.node_logp[..., : graphs.nodes["agent"].shape[-1]]
    )


def on_trimmed_batch(ladder, batch: TeamBatch, fn):
    """``fn(batch)`` on the batch's graphs and node arrays cut to the smallest ``ladder`` size
    that holds every step's real ego-graphs (``graph.on_trimmed_graphs``): the same numbers,
    without the padding's work. ``fn``'s outputs must not depend on the size (e.g. a loss, its
    gradient, per-agent values)."""
    on_graphs = lambda graphs: fn(with_graphs(batch, graphs))
    return graph.on_trimmed_graphs(ladder, batch.graphs, batch.num_agents, on_graphs)


def masked_rewards(batch: TeamBatch) -> jax.Array:
    """float32[T, E, N] rewards of acting agents (0 after death or after the episode ended)."""
    return batch.reward * batch.valid[:-1]


def step_masks(batch: TeamBatch) -> tuple[jax.Array, jax.Array]:
    """float32[T, E, N] each: ``bootstrap`` (1 where the value of the next state counts: the step
    did not end the game in a terminal state and the agent is alive after it) and ``continues``
    (1 where the agent acts at step t + 1, so its return or advantage chains) for ``gae`` and
    ``lambda_returns``."""
    bootstrap = (~batch.terminated)[..., None] & batch.alive[1:]
    return bootstrap.astype(jnp.float32), batch.valid[1:].astype(jnp.float32)


def discounted_returns(rewards: jax.Array, gamma: float) -> jax.Array:
    """Monte-Carlo returns ``G_t = r_t + gamma G_{t+1}`` over the time axis 0 -> same shape."""

    def back(carry, r):
        g = r + gamma * carry
        return g, g

    _, returns = jax.lax.scan(back, jnp.zeros_like(rewards[0]), rewards, reverse=True)
    return returns


def lambda_returns(
    rewards: jax.Array,
    next_values: jax.Array,
    bootstrap: jax.Array,
    continues: jax.Array,
    gamma: float,
    lam: float,
    last_return: jax.Array,
) -> jax.Array:
    """TD(lambda) returns over time axis 0:
    ``G_t = r_t + gamma b_t (V_{t+1} + lam c_t (G_{t+1} - V_{t+1}))`` (lam = 0: the TD(0) target).

    Args:
      rewards: [T, ...] rewards.
      next_values: [T, ...] ``V_{t+1}``, the value of the state after step t.
      bootstrap: [T, ...] 1 where the next value counts (not terminal, agent alive next), else 0.
      continues: [T, ...] 1 where step t+1 continues the same trajectory (its return chains).
      gamma: discount.
      lam: lambda in [0, 1].
      last_return: [...] ``G_T``, the return of the state after the last step (``V_T`` at the
        end of a batch; a later time chunk's first return).

    Returns:
      [T, ...] returns.
    """

    def back(following, inputs):
        r, value, b, c = inputs
        g = r + gamma * b * (value + lam * c * (following - value))
        return g, g

    inputs = (rewards, next_values, bootstrap, continues)
    _, returns = jax.lax.scan(back, last_return, inputs, reverse=True)
    return returns


def gae(
    rewards: jax.Array,
    values: jax.Array,
    bootstrap: jax.Array,
    continues: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """Generalised advantage estimates over time axis 0.

    Args:
      rewards: [T, ...] rewards.
      values: [T+1, ...] value estimates (the last: the state after the final action).
      bootstrap: [T, ...] 1 where the next value counts (not terminal, agent alive next), else 0.
        A truncated step bootstraps; a terminated one does not.
      continues: [T, ...] 1 where step t+1 continues the same trajectory (its advantage chains).
      gamma: discount.
      lam: GAE lambda.

    Returns:
      [T, ...] advantages.
    """
    deltas = rewards + gamma * bootstrap * values[1:] - values[:-1]

    def back(carry, inputs):
        delta, cont = inputs
        advantage = delta + gamma * lam * cont * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros_like(deltas[0]), (deltas, continues), reverse=True)
    return advantages


def standardize(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``(x - mean) / std`` over the masked entries (masked-out entries unchanged in meaning)."""
    count = jnp.maximum(jnp.sum(mask), 1)
    mean = jnp.sum(x * mask) / count
    var = jnp.sum(((x - mean) ** 2) * mask) / count
    return (x - mean) / jnp.sqrt(var + 1e-8)


def log_softmax_columns(logits: jax.Array) -> list[jax.Array]:
    """``log_softmax`` over the (small) action axis as one array per action: ``[..., A] -> A x
    [...]``. Written column by column, the policy terms below are elementwise loops that XLA
    fuses; a reduction over a minor axis of 5 is about 3x slower on the CPU (measured on
    [11000, 5]: 1.9 ms -> 0.63 ms for the loss terms of ``qmarl_ac``, value and gradient)."""
    columns = [logits[..., a] for a in range(logits.shape[-1])]
    top = jax.lax.stop_gradient(functools.reduce(jnp.maximum, columns))
    shifted = [c - top for c in columns]
    log_total = jnp.log(sum(jnp.exp(c) for c in shifted))
    return [c - log_total for c in shifted]


def label_log_probs(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """log pi(label) per node: ``[..., B, A], [..., B] -> [..., B]``."""
    columns = log_softmax_columns(logits)
    return sum(jnp.where(labels == a, c, 0.0) for a, c in enumerate(columns))


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy of each node's policy ``[..., A] -> [...]``."""
    return -sum(jnp.exp(c) * c for c in log_softmax_columns(logits))


def kl_divergence(old_logits: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(old || new) of each node's policy, exactly over the actions: ``[..., A] x 2 -> [...]``."""
    old, new = log_softmax_columns(old_logits), log_softmax_columns(logits)
    return sum(jnp.exp(o) * (o - n) for o, n in zip(old, new, strict=True))


def entropy_weight(config, entropy_coef: jax.Array | float | None) -> jax.Array | float:
    """The entropy bonus weight of a loss: ``entropy_coef`` (the trainer's annealed scalar) or,
    for None, the config's constant ``entropy_coef``."""
    return config.entropy_coef if entropy_coef is None else entropy_coef


def kickstart_term(
    logits: jax.Array,
    teacher: jax.Array,
    weight: jax.Array,
    config,
    kickstart_coef: jax.Array | float | None,
    graphs: jax.Array,
    nodes: jax.Array,
) -> tuple[jax.Array, dict]:
    """The kickstarting term of a loss (Schmitt et al. 2018), the same for every learner.

    Args:
      logits: float32[..., B, A] node policies.
      teacher: int32[..., B] the teacher's action of each node's agent.
      weight: float32[..., B] each node's weight in the loss's sums (0 masks it; the copies of
        an ego-graph stored for several centres).
      kickstart_coef: the batch's weight (None: ``config.kickstart_coef``).
      graphs, nodes: float32[] the loss's normalisers (its ego-graphs; its weighted nodes).

    Returns:
      ``(term, metrics)``: ``kickstart_coef`` x the weighted cross-entropy of the policies
      against the teacher's actions / ``graphs``, to add to the loss; ``kickstart_loss`` (the
      cross-entropy per node) and ``teacher_agreement`` (the share of nodes whose argmax is the
      teacher's action).
    """
    cross_entropy = -jnp.sum(weight * label_log_probs(logits, teacher))
    agreement = jnp.sum(weight * (jnp.argmax(logits, -1) == teacher))
    coef = config.kickstart_coef if kickstart_coef is None else kickstart_coef
    metrics = {"kickstart_loss": cross_entropy / nodes, "teacher_agreement": agreement / nodes}
    return coef * cross_entropy / graphs, metrics


def expected_value(logits: jax.Array, values: jax.Array) -> jax.Array:
    """``sum_a pi(a) values(a)`` per node: ``[..., A], [..., A] -> [...]``."""
    columns = log_softmax_columns(logits)
    return sum(jnp.exp(c) * values[..., a] for a, c in enumerate(columns))


def critic_sides(batch: TeamBatch) -> jax.Array:
    """int32[T+1, E, N] each agent's side for the ``team`` critic input
    (``nmp.team_summaries``): the learning team's living agents, the other living agents, the
    dead."""
    other = jnp.where(batch.alive, nmp.OTHER_SIDE, nmp.NOT_COUNTED)
    return jnp.where(batch.alive & batch.team_member, nmp.LEARNING_SIDE, other).astype(jnp.int32)


def node_labels(batch: TeamBatch) -> jax.Array:
    """int32[T+1, E, B] the executed action of each node's agent (0 on padding)."""
    return per_node(batch.actions, batch.node_agent)


def merge_graphs(graphs: jraph.GraphsTuple, num_agents: int) -> jraph.GraphsTuple:
    """Merge a ``[G, ...]`` batch of flat ego-graph batches into one flat batch.

    The agent-aligned first N slots of every batch come first (slot ``g * N + i``: agent i of
    batch g, so they stay aligned with the merged ``[G * N]`` observations), then the remaining
    ``B`` slots of every batch (slot ``G * N + g * B + k``). Agent ids are offset by ``g * N``;
    padding stays out of range (agent ``G * N``, receiver ``G * (N + B)``). The network then runs
    one big graph with big matmuls and 1-D segment sums instead of G small ones;
    ``split_merged`` undoes the node order.
    """
    agent = graphs.nodes["agent"]
    num_graphs, slots = agent.shape
    rest = slots - num_agents
    batch = jnp.arange(num_graphs)[:, None]
    total_agents, total_nodes = num_graphs * num_agents, num_graphs * slots

    def node_order(x):
        return jnp.concatenate([x[:, :num_agents].ravel(), x[:, num_agents:].ravel()])

    def new_index(k):
        moved = jnp.where(
            k < num_agents, batch * num_agents + k, total_agents + batch * rest + k - num_agents
        )
        return jnp.where(k < slots, moved, total_nodes).ravel()

    merged_agent = jnp.where(agent < num_agents, agent + batch * num_agents, total_agents)
    return graphs._replace(
        nodes={**jax.tree.map(node_order, graphs.nodes), "agent": node_order(merged_agent)},
        edges=jax.tree.map(jnp.ravel, graphs.edges),
        senders=new_index(graphs.senders),
        receivers=new_index(graphs.receivers),
        n_node=graphs.n_node.ravel(),
        n_edge=graphs.n_edge.ravel(),
    )


def split_merged(values: jax.Array, num_graphs: int, num_agents: int) -> jax.Array:
    """Node values of a merged batch ``[G * B_n, ...]`` back to ``[G, B_n, ...]``."""
    aligned = num_graphs * num_agents
    head = values[:aligned].reshape(num_graphs, num_agents, *values.shape[1:])
    tail = values[aligned:].reshape(num_graphs, -1, *values.shape[1:])
    return jnp.concatenate([head, tail], axis=1)


class Heads:
    """The network's heads on ego-graph batches with any leading axes (e.g. [T, E]).

    All leading axes are merged into one flat graph (``merge_graphs``) before the network runs.

    Args:
      model: an ``nmp.ActorCritic``.
    """

    def __init__(self, model):
        self.model = model

    def _apply(self, method, params, features, graphs, *per_agent):
        lead = features.shape[:-2]
        num_agents, budget = features.shape[-2], graphs.nodes["agent"].shape[-1]
        count = math.prod(lead)
        merged = merge_graphs(jax.tree.map(lambda x: x.reshape(count, -1), graphs), num_agents)
        out = self.model.apply(
            params,
            features.reshape(count * num_agents, features.shape[-1]),
            merged,
            *(x.reshape(count * num_agents) for x in per_agent),
            method=method,
        )
        out = split_merged(out, count, num_agents)
        return out.reshape(*lead, budget, *out.shape[2:])

    def logits(self, params, features, graphs):
        """float32[..., B, 5] from ``features [..., N, F]`` and matching graphs."""
        return self._apply(type(self.model).logits, params, features, graphs)

    def values(self, params, features, graphs, agent_side=None):
        """float32[..., B]; ``agent_side int32[..., N]`` (``critic_sides``) feeds the ``team``
        critic input, each world (leading index) summarised apart."""
        if agent_side is None:
            return self._apply(type(self.model).values, params, features, graphs)
        lead = features.shape[:-2]
        world = jnp.arange(math.prod(lead), dtype=jnp.int32).reshape(*lead, 1)
        world = jnp.broadcast_to(world, agent_side.shape)
        return self._apply(type(self.model).values, params, features, graphs, world, agent_side)

    def q_values(self, params, features, graphs, actions):
        """float32[..., B, 5] counterfactual Q (``actions int32[..., N]``)."""
        return self._apply(type(self.model).q_values, params, features, graphs, actions)
