"""Ensembling of per-node action distributions over all ego-graphs holding an agent (SPEC 6).

For agent j, ``mean_prob`` averages the probability vectors that every ego-graph containing j
produced for j (a segment sum over global agent ids divided by the count); ``mean_logit`` averages
the logits instead; ``none`` uses only j's own ego-graph (its centre node). An ego-graph stored
once for several centres (``graph.ego_graphs(share_components=True)``) votes once per centre.
``max_hop`` (ours, an ablation) keeps only the votes of the ego-graphs whose centre lies within
that many hops of the agent: the farther out an agent sits in an ego-graph, the more of its own
neighbourhood that graph cuts off (docs/RESULTS.md, "Ensemble ablation").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph

MODES = ("mean_prob", "mean_logit", "none")


def ensemble(
    logits: jax.Array,
    graphs: jraph.GraphsTuple,
    num_agents: int,
    mode: str = "mean_prob",
    weight: jax.Array | None = None,
    max_hop: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-agent action distribution from per-node logits.

    Args:
      logits: float32[B_n, A] logits of every node.
      graphs: the flat ego-graphs the logits were computed on.
      num_agents: N.
      mode: one of ``MODES``.
      weight: optional bool[B_n] nodes allowed to vote (e.g. only a team's own agents).
      max_hop: None (every ego-graph votes) or h >= 0: only nodes at most h hops from their
        graph's centre vote (0 is ``none``). Hops count from the stored centre, so use it with
        one graph per agent (``share_components=False``).

    Returns:
      ``(probs float32[N, A], votes int32[N])``: the ensemble distribution (uniform where an agent
      got no vote) and how many ego-graphs voted for each agent.
    """
    if mode not in MODES:
        raise ValueError(f"unknown ensemble mode {mode!r}; choose one of: {', '.join(MODES)}")
    agent = graphs.nodes["agent"]
    voting = agent < num_agents
    if mode == "none":
        voting &= graphs.nodes["own"] == 1
    if weight is not None:
        voting &= weight
    if max_hop is not None:
        voting &= graphs.nodes["hop"] <= max_hop
    vote = jnp.where(voting, 1 if mode == "none" else graphs.nodes["copies"], 0)
    votes = jax.ops.segment_sum(vote, agent, num_segments=num_agents)
    values = jax.nn.log_softmax(logits) if mode == "mean_logit" else jax.nn.softmax(logits)
    total = jax.ops.segment_sum(values * vote[:, None], agent, num_segments=num_agents)
    mean = total / jnp.maximum(votes, 1)[:, None]
    probs = jax.nn.softmax(mean) if mode == "mean_logit" else mean
    uniform = jnp.full_like(probs, 1.0 / probs.shape[-1])
    return jnp.where(votes[:, None] > 0, probs, uniform), votes


def disagreement(
    logits: jax.Array,
    graphs: jraph.GraphsTuple,
    num_agents: int,
    weight: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """How much ensembling can change each agent's action: its own ego-graph's distribution
    (``none``) against the ``mean_prob`` ensemble over every ego-graph holding it.

    Args: as ``ensemble``.

    Returns:
      ``(tv float32[N], argmax_differs bool[N], votes int32[N])``: the total-variation distance
      ``0.5 sum_a |p_none(a) - p_mean(a)|`` (0 where the agent has no ego-graph of its own),
      whether the two distributions' most likely actions differ, and how many ego-graphs hold
      the agent (copies counted). Where an agent is in one ego-graph only both are the same.
    """
    mean, votes = ensemble(logits, graphs, num_agents, "mean_prob", weight)
    own, own_votes = ensemble(logits, graphs, num_agents, "none", weight)
    has_own = own_votes > 0
    tv = jnp.where(has_own, 0.5 * jnp.sum(jnp.abs(mean - own), axis=-1), 0.0)
    differs = has_own & (jnp.argmax(mean, axis=-1) != jnp.argmax(own, axis=-1))
    return tv, differs, votes
