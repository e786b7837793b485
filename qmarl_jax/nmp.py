"""The neural message-passing (NMP) actor-critic of SPEC section 5, as flax modules.

With ``h_lin(x) = W x + b`` and ``h_rel(x) = relu(W x + b)``, on every ego-graph:

* embed ``s0_i = h_lin(obs_i)`` (computed once per agent, then gathered into the ego-graphs);
  edge input ``z0_ij = rbf(d_ij)``;
* L blocks of edge update ``z_ij = h_rel([s_i, s_j, z_ij])`` then vertex update
  ``s_i = s_i + h_lin(h_rel(sum_j h_lin(s_j) * h_rel(z_ij)))`` (sums by ``segment_sum``);
* policy head ``logits_i = h_lin(h_rel(s_i))`` over the 5 actions.

Only distances enter the edges, so outputs are invariant to permuting nodes and to rotating or
reflecting the grid (given correspondingly rotated observations).

``AttentionTrunk`` is the ``mha`` baseline's trunk (DGN-style relation kernel): each block lets a
node attend over itself and its graph neighbours with multi-head dot-product attention (``heads=1``
is the paper's SHA); it runs on the whole neighbour graph (``graph.neighbour_graph``).

The critic has its own trunk. Its Q head is counterfactual (COMA-style): node j gets a value for
each of its 5 actions from its action-free state and a message carrying the *neighbours'* actions,
never its own. The ``dueling`` Q head (an option) makes the 5 values the node's state value plus
action advantages centred on their mean (Wang et al. 2016): a TD update of the taken action's value
then moves the shared state value, and the values of actions a node rarely takes follow it instead
of staying where initialisation put them (measured on Jungle: no better, ``TrainConfig.q_head``).
``depth = 0`` ego-graphs (no edges) turn the trunk into a per-agent MLP on the local
observation: the ``vanilla_pg`` baseline.

The ``team`` critic input (an option, ours; centralised training as in MAPPO, Yu et al. 2022) adds
to the state value's hidden layer a summary of the node's whole world: the mean embedded
observation of the learning team's living agents and of the other living agents, and each side's
share of the agents still alive (``team_summaries``, O(N)). The policy never reads it, so acting
stays decentralised; it is meant to lower the variance of the advantages (a team's outcome
depends on the whole battle, which no ego-graph sees). Measured in Battle's stage 3: no gain
(docs/RESULTS.md, "Session 59").
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from envs.core import NUM_ACTIONS

#: Q heads of ``ActorCritic.q_values``.
Q_HEADS = ("plain", "dueling")
#: Submodules of ``ActorCritic`` that make the policy (the rest make the critics).
POLICY_MODULES = ("actor", "policy_hidden", "policy_out")
#: What the state value reads (``ActorCritic.critic_input``): its ego-graph, or also a summary of
#: the whole world (``team_summaries``).
CRITIC_INPUTS = ("ego", "team")
#: Submodules of ``ActorCritic`` that only the ``team`` critic input has.
TEAM_CONTEXT_MODULES = ("context_embed", "context_in")
#: ``agent_side`` of ``team_summaries``: a living agent of the learning team, another living
#: agent, an agent left out (dead, or padding).
LEARNING_SIDE, OTHER_SIDE, NOT_COUNTED = 0, 1, 2


def policy_mask(variables: dict) -> dict:
    """``True`` on the leaves of ``ActorCritic`` variables that belong to the policy (same tree)."""
    return {
        collection: {name: jax.tree.map(lambda _, p=name in POLICY_MODULES: p, tree)
                     for name, tree in modules.items()}
        for collection, modules in variables.items()
    }  # fmt: skip


def rbf_expand(distance: jax.Array, n_rbf: int, d_max: float) -> jax.Array:
    """``exp(-(d - n Dd)^2 / Dd)`` for n = 0..n_rbf-1, ``Dd = d_max / n_rbf``.

    Args:
      distance: float32[E] edge lengths.

    Returns:
      float32[E, n_rbf].
    """
    step = d_max / n_rbf
    centres = jnp.arange(n_rbf, dtype=jnp.float32) * step
    return jnp.exp(-((distance[:, None] - centres[None, :]) ** 2) / step)


def take_rows(table: jax.Array, index: jax.Array) -> jax.Array:
    """Rows ``table[index]`` of ``table [M, ...]`` for ``index int32[K]``, zeros where ``index``
    is out of range (padding).

    The gradient is a scatter-add that skips out-of-range rows, so padding entries never pile
    their (zero) updates onto one row: on a GPU such a pile serialises the scatter's atomics.
    """
    return jnp.take(table, index, axis=0, mode="fill", fill_value=0)


def gather_nodes(agent_table: jax.Array, node_agents: jax.Array) -> jax.Array:
    """Rows of a per-agent table ``[N, D]`` for nodes standing for ``node_agents int32[B]``
    -> ``[B, D]`` (zeros on padding, agent id N)."""
    return take_rows(agent_table, node_agents)


def padded_senders(senders: jax.Array, receivers: jax.Array, num_nodes: int) -> jax.Array:
    """``senders`` with padding edges (``receivers >= num_nodes``) moved out of range too, so
    ``take_rows`` gives them zeros instead of a real node's row."""
    return jnp.where(receivers < num_nodes, senders, num_nodes)


def team_summaries(hidden: jax.Array, agent_world: jax.Array, agent_side: jax.Array) -> jax.Array:
    """Per world, the mean of ``hidden`` over each side's counted agents and each side's share of
    the world's agents.

    Args:
      hidden: float32[M, H] a vector per agent, the agents of every world one after another.
      agent_world: int32[M] the world of each agent (0 ... M - 1).
      agent_side: int32[M] ``LEARNING_SIDE``, ``OTHER_SIDE`` or ``NOT_COUNTED``.

    Returns:
      float32[M, 2 H + 2]: row w is world w's ``[mean of the learning side, mean of the other
      side, learning side's share, other side's share]`` (a side without agents: zeros); rows of
      unused world numbers are zeros.
    """
    num_agents, width = hidden.shape
    counted = agent_side < NOT_COUNTED
    segment = jnp.where(counted, agent_world * 2 + agent_side, 2 * num_agents)
    segments = 2 * num_agents + 1
    sums = jax.ops.segment_sum(hidden, segment, num_segments=segments)[:-1]
    counts = jax.ops.segment_sum(counted.astype(hidden.dtype), segment, num_segments=segments)[:-1]
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    in_world = jax.ops.segment_sum(jnp.ones_like(agent_world, hidden.dtype), agent_world,
                                   num_segments=num_agents)  # fmt: skip
    shares = counts.reshape(num_agents, 2) / jnp.maximum(in_world, 1.0)[:, None]
    return jnp.concatenate([means.reshape(num_agents, 2 * width), shares], axis=-1)


FIRST_BLOCK = ("auto", "nodes", "agents", "pairs")


class MessagePassing(nn.Module):
    """L edge-then-vertex update blocks on a flat batch of ego-graphs.

    The first block's edge terms depend only on the two agents of an edge (node states are still
    the embedded observations, edge inputs the pair's distance), so they can be computed once per
    agent or once per neighbour pair and gathered, instead of once per node or ego-graph edge:
    ``first_block`` picks where (``nodes``: per node and edge; ``agents``: its three node maps per
    agent; ``pairs``: per agent and per (receiver agent, ring slot) pair, which needs
    ``max_degree``; ``auto``: the fewest rows from the static sizes: pairs where the edge slots
    outnumber the ``N x max_degree`` pairs, as in dense crowds). Every choice gives the same
    numbers.

    Attributes:
      width: hidden width H.
      num_blocks: L.
      n_rbf: radial basis functions on edge lengths.
      d_max: largest possible edge length (``sqrt(2) * graph_radius``).
      max_degree: ring slots K per agent (``env.max_degree``); None disables ``pairs``.
      first_block: one of ``FIRST_BLOCK``.
    """

    width: int = 64
    num_blocks: int = 2
    n_rbf: int = 10
    d_max: float = 2**0.5
    max_degree: int | None = None
    first_block: str = "auto"

    def _edge_terms(self, block, states, z, receivers, senders):
        """``(z_ij = h_rel([s_i, s_j, z_ij]), message_ij = h_lin(s_j) * h_rel(z_ij))`` for edges
        given as rows of ``states`` (out-of-range rows: zeros)."""
        z = nn.relu(
            take_rows(nn.Dense(self.width, name=f"edge_{block}_receiver")(states), receivers)
            + take_rows(
                nn.Dense(self.width, use_bias=False, name=f"edge_{block}_sender")(states), senders
            )
            + nn.Dense(self.width, use_bias=False, name=f"edge_{block}_edge")(z)
        )
        message = take_rows(nn.Dense(self.width, name=f"message_{block}")(states), senders)
        return z, message * nn.relu(nn.Dense(self.width, name=f"filter_{block}")(z))

    def _first_block_where(self, num_agents: int, num_nodes: int, num_edges: int) -> str:
        if self.first_block not in FIRST_BLOCK:
            raise ValueError(
                f"invalid first_block={self.first_block!r}; choose one of: {', '.join(FIRST_BLOCK)}"
            )
        if self.first_block != "auto":
            if self.first_block == "pairs" and self.max_degree is None:
                raise ValueError("first_block='pairs' needs max_degree")
            return self.first_block
        if self.max_degree is not None and num_edges > num_agents * self.max_degree:
            return "pairs"
        return "agents" if num_nodes > num_agents else "nodes"

    def _first_block_edges(self, embedded, s, z0, graphs, node_agent, receivers, senders):
        """The first block's ``(z, message)`` per ego-graph edge ``[B_e, H]`` each (``z0``: the
        RBF edge inputs)."""
        num_agents = embedded.shape[0]
        distance = graphs.edges["distance"]
        where = self._first_block_where(num_agents, s.shape[0], distance.shape[0])
        if where == "nodes":
            return self._edge_terms(0, s, z0, receivers, senders)
        agent_of = lambda nodes: jnp.take(node_agent, nodes, mode="fill", fill_value=num_agents)
        receiver_agent, sender_agent = agent_of(receivers), agent_of(senders)
        if where == "agents":
            return self._edge_terms(0, embedded, z0, receiver_agent, sender_agent)
        # One row per (receiver agent, ring slot): every ego-graph edge of the pair reads it.
        num_pairs = num_agents * self.max_degree
        pair = receiver_agent * self.max_degree + graphs.edges["ring"]  # >= num_pairs: padding
        pair_sender = (
            jnp.full(num_pairs, num_agents, jnp.int32).at[pair].set(sender_agent, mode="drop")
        )
        pair_distance = jnp.zeros(num_pairs, distance.dtype).at[pair].set(distance, mode="drop")
        pair_receiver = jnp.arange(num_pairs, dtype=jnp.int32) // self.max_degree
        z, message = self._edge_terms(
            0, embedded, rbf_expand(pair_distance, self.n_rbf, self.d_max),
            pair_receiver, pair_sender,
        )  # fmt: skip
        return take_rows(z, pair), take_rows(message, pair)

    @nn.compact
    def __call__(self, observations: jax.Array, graphs: jraph.GraphsTuple):
        """Node states of every ego-graph.

        The first N node slots are agent-aligned singleton ego-graphs (``graph.ego_graphs``):
        they have no edges, so their message sums are zero and each block only adds the constant
        ``h_lin(h_rel(0))``; they are computed per agent. Message passing runs on the other
        ``B_n - N`` slots, which hold every edge.

        Args:
          observations: float32[N, F] per-agent features.
          graphs: flat ego-graphs with B_n >= N nodes and B_e edges (``edges["ring"]`` needed
            by ``first_block='pairs'``).

        Returns:
          ``(s float32[B_n, H], z float32[B_e, H or n_rbf])`` node and edge states.
        """
        num_aligned = observations.shape[0]
        embedded = nn.Dense(self.width, name="embed")(observations)
        node_agent = graphs.nodes["agent"][num_aligned:]
        s = gather_nodes(embedded, node_agent)
        num_nodes = s.shape[0]
        z = rbf_expand(graphs.edges["distance"], self.n_rbf, self.d_max)
        # Every edge joins two slots >= num_aligned: index them within the message-passing part
        # (padding edges: out of range at both ends, dropped by the gathers and the sums).
        receivers = graphs.receivers - num_aligned
        senders = padded_senders(graphs.senders - num_aligned, receivers, num_nodes)
        edgeless = embedded
        for block in range(self.num_blocks):
            if block == 0:
                z, message = self._first_block_edges(
                    embedded, s, z, graphs, node_agent, receivers, senders
                )
            else:
                z, message = self._edge_terms(block, s, z, receivers, senders)
            incoming = jax.ops.segment_sum(message, receivers, num_segments=num_nodes)
            vertex_hidden = nn.Dense(self.width, name=f"vertex_{block}_hidden")
            vertex_out = nn.Dense(self.width, name=f"vertex_{block}_out")
            s = s + vertex_out(nn.relu(vertex_hidden(incoming)))
            no_message = jnp.zeros((1, self.width), s.dtype)
            edgeless = edgeless + vertex_out(nn.relu(vertex_hidden(no_message)))
        return jnp.concatenate([edgeless, s]), z


def neighbour_attention(q, k, v, senders, receivers):
    """Multi-head attention of each node over itself and its in-neighbours.

    Args:
      q, k, v: float32[B_n, heads, D] queries, keys and values of every node.
      senders, receivers: int32[B_e] edge endpoints (receivers >= B_n: padding, ignored).

    Returns:
      float32[B_n, heads, D]: ``sum_j softmax_j(q_i . k_j / sqrt(D)) v_j`` over ``j in {i} u N(i)``.
    """
    num_nodes, _, dim = q.shape
    scale = 1.0 / jnp.sqrt(jnp.float32(dim))
    senders = padded_senders(senders, receivers, num_nodes)
    edge_score = jnp.sum(take_rows(q, receivers) * take_rows(k, senders), -1) * scale  # [B_e, M]
    self_score = jnp.sum(q * k, axis=-1) * scale  # [B_n, heads]
    # Any per-node constant keeps the softmax exact; the max keeps it stable (no gradient).
    top = jax.lax.stop_gradient(
        jnp.maximum(jax.ops.segment_max(edge_score, receivers, num_segments=num_nodes), self_score)
    )
    edge_weight = jnp.exp(edge_score - take_rows(top, receivers))
    self_weight = jnp.exp(self_score - top)
    total = self_weight + jax.ops.segment_sum(edge_weight, receivers, num_segments=num_nodes)
    mixed = self_weight[..., None] * v + jax.ops.segment_sum(
        edge_weight[..., None] * take_rows(v, senders), receivers, num_segments=num_nodes
    )
    return mixed / total[..., None]


class AttentionTrunk(nn.Module):
    """L blocks of multi-head neighbour attention (the ``mha`` baseline, DGN's relation kernel).

    ``s_i <- s_i + h_lin(relu(concat_m sum_j alpha^m_ij W^m_V s_j))`` with ``alpha^m_ij`` the
    softmax over ``j in {i} u N(i)`` of ``(W^m_Q s_i) . (W^m_K s_j) / sqrt(D)``.

    Attributes:
      width: hidden width H (split over the heads).
      num_blocks: L.
      heads: attention heads M (1 = single-head attention, the paper's SHA).
      n_rbf, d_max: RBF edge features returned for the counterfactual Q head.
    """

    width: int = 64
    num_blocks: int = 2
    heads: int = 4
    n_rbf: int = 10
    d_max: float = 2**0.5

    @nn.compact
    def __call__(self, observations: jax.Array, graphs: jraph.GraphsTuple):
        """``(s float32[B_n, H], z float32[B_e, n_rbf])`` like ``MessagePassing``."""
        head_dim = max(1, self.width // self.heads)
        s = gather_nodes(nn.Dense(self.width, name="embed")(observations), graphs.nodes["agent"])
        for block in range(self.num_blocks):

            def project(name, s=s, block=block):
                out = nn.Dense(self.heads * head_dim, name=f"{name}_{block}")(s)
                return out.reshape(-1, self.heads, head_dim)

            mixed = neighbour_attention(
                project("query"), project("key"), project("value"),
                graphs.senders, graphs.receivers,
            )  # fmt: skip
            update = nn.Dense(self.width, name=f"out_{block}")(
                nn.relu(mixed.reshape(s.shape[0], -1))
            )
            s = s + update
        return s, rbf_expand(graphs.edges["distance"], self.n_rbf, self.d_max)


TRUNKS = {"nmp": MessagePassing, "mha": AttentionTrunk}


class ActorCritic(nn.Module):
    """Policy and critics of Q-MARL on flat ego-graphs (separate actor and critic trunks).

    Attributes:
      width: hidden width H.
      num_blocks: message-passing blocks L.
      n_rbf: radial basis functions.
      d_max: largest edge length.
      trunk: ``nmp`` (Q-MARL's message passing) or ``mha`` (the attention baseline).
      heads: attention heads of the ``mha`` trunk.
      max_degree, first_block: where the ``nmp`` trunk computes its first block
        (``MessagePassing``; the same numbers either way).
      q_head: ``plain`` (5 free outputs) or ``dueling`` (state value + centred action
        advantages).
      critic_input: ``ego`` (the state value reads the ego-graph) or ``team`` (also the
        node's world, ``team_summaries``).
    """

    width: int = 64
    num_blocks: int = 2
    n_rbf: int = 10
    d_max: float = 2**0.5
    trunk: str = "nmp"
    heads: int = 4
    max_degree: int | None = None
    first_block: str = "auto"
    q_head: str = "plain"
    critic_input: str = "ego"

    def setup(self):
        trunk = dict(width=self.width, num_blocks=self.num_blocks, n_rbf=self.n_rbf,
                     d_max=self.d_max)  # fmt: skip
        if self.trunk == "mha":
            trunk["heads"] = self.heads
        else:
            trunk.update(max_degree=self.max_degree, first_block=self.first_block)
        self.actor = TRUNKS[self.trunk](**trunk)
        self.critic = TRUNKS[self.trunk](**trunk)
        self.policy_hidden = nn.Dense(self.width)
        self.policy_out = nn.Dense(NUM_ACTIONS, kernel_init=nn.initializers.orthogonal(0.01))
        self.value_hidden = nn.Dense(self.width)
        self.value_out = nn.Dense(1)
        self.action_message = nn.Dense(self.width)
        self.q_hidden = nn.Dense(self.width)
        self.q_out = nn.Dense(NUM_ACTIONS)
        if self.critic_input == "team":
            self.context_embed = nn.Dense(self.width)
            # Zeros at first: a fresh summary changes nothing, so a run started from an ego
            # critic's parameters starts from its values exactly.
            self.context_in = nn.Dense(self.width, use_bias=False,
                                       kernel_init=nn.initializers.zeros)  # fmt: skip

    def __call__(self, observations, graphs, actions):
        """All heads at once (used to initialise every parameter; one world, every agent on
        the learning side)."""
        world = jnp.zeros(observations.shape[0], jnp.int32)
        return (
            self.logits(observations, graphs),
            self.values(observations, graphs, world, world + LEARNING_SIDE),
            self.q_values(observations, graphs, actions),
        )

    def logits(self, observations: jax.Array, graphs: jraph.GraphsTuple) -> jax.Array:
        """Action logits of every node -> ``float32[B_n, 5]``."""
        s, _ = self.actor(observations, graphs)
        return self.policy_out(nn.relu(self.policy_hidden(s)))

    def values(
        self,
        observations: jax.Array,
        graphs: jraph.GraphsTuple,
        agent_world: jax.Array | None = None,
        agent_side: jax.Array | None = None,
    ) -> jax.Array:
        """State value of every node -> ``float32[B_n]``.

        Args:
          observations: float32[N, F].
          graphs: flat ego-graphs.
          agent_world, agent_side: int32[N] each, as in ``team_summaries``; read (and needed)
            only by the ``team`` critic input.
        """
        s, _ = self.critic(observations, graphs)
        hidden = self.value_hidden(s)
        if self.critic_input == "team":
            if agent_world is None or agent_side is None:
                raise ValueError("critic_input='team' needs agent_world and agent_side")
            embedded = nn.relu(self.context_embed(observations))
            summary = team_summaries(embedded, agent_world, agent_side)
            node_world = jnp.take(agent_world, graphs.nodes["agent"], mode="fill",
                                  fill_value=observations.shape[0])  # fmt: skip
            hidden = hidden + self.context_in(take_rows(summary, node_world))
        return self.value_out(nn.relu(hidden))[:, 0]

    def q_values(
        self, observations: jax.Array, graphs: jraph.GraphsTuple, actions: jax.Array
    ) -> jax.Array:
        """Counterfactual Q of every node for each of its own actions -> ``float32[B_n, 5]``.

        Args:
          observations: float32[N, F].
          graphs: flat ego-graphs.
          actions: int32[N] executed action of every agent; node j's output does not depend on
            the action of j's own agent.
        """
        s, z = self.critic(observations, graphs)
        # The nmp trunk's first N slots are edgeless singletons (``MessagePassing``): no action
        # message reaches them, so their hidden layer needs only the state half of q_hidden.
        edgeless = observations.shape[0] if self.trunk == "nmp" else 0
        num_nodes = s.shape[0] - edgeless
        node_actions = gather_nodes(jax.nn.one_hot(actions, NUM_ACTIONS), graphs.nodes["agent"])
        senders = padded_senders(graphs.senders, graphs.receivers, s.shape[0])
        receivers = graphs.receivers - edgeless  # padding edges stay out of range
        message = nn.relu(
            self.action_message(
                jnp.concatenate([take_rows(s, senders), take_rows(node_actions, senders), z], -1)
            )
        )
        incoming = jax.ops.segment_sum(message, receivers, num_segments=num_nodes)
        hidden = self.q_hidden(jnp.concatenate([s[edgeless:], incoming], -1))
        if edgeless:
            kernel = self.q_hidden.variables["params"]["kernel"][: s.shape[1]]
            edgeless_hidden = s[:edgeless] @ kernel + self.q_hidden.variables["params"]["bias"]
            hidden = jnp.concatenate([edgeless_hidden, hidden])
        q = self.q_out(nn.relu(hidden))
        if self.q_head == "plain":
            return q
        state_value = self.value_out(nn.relu(self.value_hidden(s)))
        return state_value + q - jnp.mean(q, axis=-1, keepdims=True)
