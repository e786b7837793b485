"""Acting and collecting episodes: ego-graphs -> NMP -> ensemble -> actions -> env step.

A batch is ``E`` games played in parallel from a reset for ``max_steps`` steps (a ``lax.scan``,
vmapped over envs); an env that finishes keeps stepping but is masked out (``live``), so every
game in the batch is one whole episode and nothing crosses a batch boundary. Everything stays on
the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

from envs.base import GridConfig, GridEnv
from envs.opponents import MOVE_TEACHERS, make_controller
from qmarl_jax import graph
from qmarl_jax.algos.common import Heads, TeamBatch, label_log_probs, per_node
from qmarl_jax.config import LEARN, TrainConfig
from qmarl_jax.ensemble import ensemble


class TeamAct(NamedTuple):
    """What one learning team's network did on one step (leading axis E).

    Attributes:
      graphs: its ego-graphs.
      node_logp: float32[E, B] log-prob of each node's label.
      stats: graph.EgoStats per env.
    """

    graphs: jraph.GraphsTuple
    node_logp: jax.Array
    stats: graph.EgoStats


@struct.dataclass
class Trajectory:
    """A batch of whole episodes, time-major.

    Attributes:
      features: float32[T+1, E, N, F].
      alive: bool[T+1, E, N].
      live: bool[T+1, E] the episode had not ended before step t.
      actions: int32[T+1, E, N] (the last step sampled at the final state, not executed).
      reward: float32[T, E, N].
      terminated: bool[T, E].
      truncated: bool[T, E].
      teams: tuple of TeamAct per learning team, with leading [T+1] (node_logp: [T]).
      info: the env's info dict with leading [T, E] (final observations removed).
      teacher_actions: int32[T, E, N] the ``config.kickstart`` teacher's actions in each acting
        state, or None without one.
    """

    features: jax.Array
    alive: jax.Array
    live: jax.Array
    actions: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    teams: tuple
    info: dict
    teacher_actions: jax.Array | None = None


def budgets(config: TrainConfig, env: GridEnv) -> tuple[int, int]:
    """``(node_budget, edge_budget)`` of one env-step: the config's, or calibrated (``mha``: the
    whole neighbour graph, exactly N nodes and N x K edges)."""
    if config.trunk == "mha":
        return env.num_agents, env.num_agents * env.max_degree
    nodes, edges = config.node_budget, config.edge_budget
    if nodes is None or edges is None:
        auto_nodes, auto_edges = calibrated_budgets(
            type(env), env.config, config.graph_depth, config.max_nodes, config.budget_margin,
            config.seed, config.share_ego_graphs,
        )  # fmt: skip
        nodes = auto_nodes if nodes is None else nodes
        edges = auto_edges if edges is None else edges
    return nodes, edges


@functools.lru_cache(maxsize=256)
def calibrated_budgets(
    env_type: type[GridEnv],
    env_config: GridConfig,
    depth: int,
    max_nodes: int,
    margin: float,
    seed: int,
    share_components: bool,
) -> tuple[int, int]:
    """``graph.calibrate_budgets`` on ``env_type(env_config)``'s default starts (graph radius
    from the env config, key ``PRNGKey(seed)``) -> ``(node_budget, edge_budget)``.

    A pure function of its (hashable) arguments, so it is computed once per process for each:
    every trainer, evaluator and rollout tool built for one run's config reuses the numbers
    instead of compiling and playing the 64 starts again."""
    env = env_type(env_config)
    params = env.default_params()
    return graph.calibrate_budgets(
        env.spec, lambda k: env.reset_state(k, params), depth, env_config.graph_radius,
        max_nodes, margin, jax.random.PRNGKey(seed), share_components=share_components,
    )  # fmt: skip


def budget_ladder(config: TrainConfig, node_budget: int, edge_budget: int, backend: str):
    """The ``(node_slots, edge_slots)`` sizes the network may run on (``graph.budget_ladder``):
    ``config.budget_buckets`` sizes, or for 0 (auto) down to ``graph.MIN_BUCKET_NODES`` node
    slots: up to 8 on CPU; on GPU/TPU up to 4 when the update is chunked in time
    (``update_chunks > 1``, set for large or dense worlds: each chunk then runs on its own
    size), else the full budgets alone; always the full budgets alone for ``mha`` (its
    neighbour graph has no packed budget).

    Measured on an H100 at 10,000 agents with 10 update chunks (docs/NOTEBOOK.md, "Training
    speed"): 4 sizes take 4% density from 2.37 to 2.27 s per 100 episodes and 40% from 19.9 to
    6.8 s."""
    if config.trunk == "mha":
        return ((node_budget, edge_budget),)
    if config.budget_buckets:
        return graph.budget_ladder(node_budget, edge_budget, config.budget_buckets)
    levels = 8 if backend == "cpu" else (4 if config.update_chunks > 1 else 1)
    return graph.budget_ladder(node_budget, edge_budget, levels, graph.MIN_BUCKET_NODES)


class Actor:
    """Chooses the actions of every team for a batch of envs (learning teams by Q-MARL)."""

    def __init__(self, config: TrainConfig, env: GridEnv, heads: Heads):
        self.config = config
        self.env = env
        self.heads = heads
        self.node_budget, self.edge_budget = budgets(config, env)
        self.ladder = budget_ladder(
            config, self.node_budget, self.edge_budget, jax.default_backend()
        )
        self.learning_teams = config.learning_teams
        self.controllers: dict[int, Callable] = {
            team: make_controller(kind, env)
            for team, kind in enumerate(config.controllers[: env.num_teams])
            if kind != LEARN
        }
        self.team_of_agent = np.asarray(env.teams)
        self.teacher = make_controller(config.kickstart, env) if config.kickstart else None

    def teacher_actions(self, key, states, moves) -> jax.Array | None:
        """The kickstarting teacher's actions of every agent of E envs -> ``int32[E, N]``, or
        None without a teacher. ``moves int32[E, N]``: the joint moves just played from
        ``states``, which a ``MOVE_TEACHERS`` teacher corrects (the others ignore them)."""
        if self.teacher is None:
            return None
        keys = jax.random.split(key, self.config.games_per_batch)
        if self.config.kickstart in MOVE_TEACHERS:
            return jax.vmap(self.teacher)(keys, states, moves)
        return jax.vmap(self.teacher, in_axes=(0, 0, None))(keys, states, None)

    def build_graphs(self, grids, team: int):
        """Ego-graphs centred on ``team``'s agents for a batch of grids (leading E)."""
        cfg = self.config
        centres = jnp.asarray(self.team_of_agent == team)

        def one(grid):
            if cfg.trunk == "mha":
                return graph.neighbour_graph(self.env.spec, grid, self.env.config.graph_radius,
                                             centres)  # fmt: skip
            return graph.ego_graphs(
                self.env.spec, grid, cfg.graph_depth, self.env.config.graph_radius,
                cfg.max_nodes, self.node_budget, self.edge_budget, centres,
                share_components=cfg.share_ego_graphs,
            )  # fmt: skip

        return jax.vmap(one)(grids)

    def team_policy(self, params, features, graphs, team: int):
        """Ensembled action distribution of ``team`` -> ``(logits [E,B,5], probs [E,N,5])``."""
        num_agents, num_slots = self.env.num_agents, graphs.nodes["agent"].shape[-1]

        def padded_logits(small):  # zeros on the cut padding slots
            logits = self.heads.logits(params, features, small)
            return jnp.pad(logits, ((0, 0), (0, num_slots - logits.shape[1]), (0, 0)))

        logits = graph.on_trimmed_graphs(self.ladder, graphs, num_agents, padded_logits)
        own = jnp.asarray(self.team_of_agent == team)
        weight = per_node(own, graphs.nodes["agent"]).astype(bool)

        def one(logits, graphs, weight):
            return ensemble(logits, graphs, num_agents, self.config.ensemble, weight,
                            self.config.ensemble_hops)[0]  # fmt: skip

        return logits, jax.vmap(one)(logits, graphs, weight)

    def act(self, params_by_team, key, features, states, greedy: bool = False):
        """Actions of all agents of E envs -> ``(actions int32[E, N], tuple of TeamAct)``."""
        num_envs = features.shape[0]
        keys = jax.random.split(key, self.env.num_teams + 1)
        actions = jnp.zeros((num_envs, self.env.num_agents), jnp.int32)
        for team, controller in self.controllers.items():
            team_actions = jax.vmap(controller, in_axes=(0, 0, None))(
                jax.random.split(keys[team], num_envs), states, None
            )
            actions = jnp.where(self.team_of_agent == team, team_actions, actions)
        outputs = []
        for params, team in zip(params_by_team, self.learning_teams, strict=True):
            graphs, stats = self.build_graphs(states.grid, team)
            logits, probs = self.team_policy(params, features, graphs, team)
            if greedy:
                chosen = jnp.argmax(probs, axis=-1).astype(jnp.int32)
            else:
                chosen = jax.random.categorical(keys[team], jnp.log(probs)).astype(jnp.int32)
            actions = jnp.where(self.team_of_agent == team, chosen, actions)
            outputs.append((graphs, stats, logits))
        # Every node's label is its agent's executed action (a node may hold another team's agent).
        acts = [
            TeamAct(
                graphs, label_log_probs(logits, per_node(actions, graphs.nodes["agent"])), stats
            )
            for graphs, stats, logits in outputs
        ]
        return actions, tuple(acts)


def reset_games(env: GridEnv, key: jax.Array, num_envs: int, env_params):
    """``(obs, states)`` of ``num_envs`` fresh games (leading axis E) from one key."""
    return env.batch_reset(jax.random.split(key, num_envs), env_params)


def collect(
    actor: Actor,
    params_by_team,
    key,
    env_params,
    greedy: bool = False,
    start=None,
    place: Callable = lambda games: games,
) -> Trajectory:
    """Play ``games_per_batch`` whole episodes -> a ``Trajectory``.

    Args:
      start: optional ``(obs, states)`` of the games' first states (default: ``reset_games``
        from the key), e.g. to score the same start states with an oracle.
      place: applied to the first states, e.g. ``sharding.shard_games`` to split the games over
        a device mesh (the rest of the batch follows by sharding propagation).
    """
    env = actor.env
    num_envs = actor.config.games_per_batch
    steps = env.config.max_steps
    reset_key, steps_key, final_key = jax.random.split(key, 3)
    obs, states = start if start is not None else reset_games(env, reset_key, num_envs, env_params)
    obs, states = place((obs, states))
    step = jax.vmap(env.step_no_reset, in_axes=(0, 0, 0, None))

    def body(carry, key):
        obs, states, live = carry
        act_key, step_key = jax.random.split(key)
        actions, acts = actor.act(params_by_team, act_key, obs.features, states, greedy)
        next_obs, next_states, reward, terminated, truncated, info = step(
            jax.random.split(step_key, num_envs), states, actions, env_params
        )
        info = {k: v for k, v in info.items() if k != "final_observation"}
        teacher = actor.teacher_actions(jax.random.fold_in(key, 1), states, actions)
        record = (obs.features, obs.alive, live, actions, acts, reward, terminated, truncated,
                  info, teacher)  # fmt: skip
        return (next_obs, next_states, live & ~(terminated | truncated)), record

    carry = (obs, states, jnp.ones(num_envs, bool))
    (obs, states, live), records = jax.lax.scan(body, carry, jax.random.split(steps_key, steps))
    features, alive, lives, actions, acts, reward, terminated, truncated, info, teacher = records
    final_actions, final_acts = actor.act(params_by_team, final_key, obs.features, states, greedy)

    def append(history, last):
        return jax.tree.map(lambda h, x: jnp.concatenate([h, x[None]]), history, last)

    teams = tuple(
        TeamAct(append(a.graphs, f.graphs), a.node_logp, append(a.stats, f.stats))
        for a, f in zip(acts, final_acts, strict=True)
    )
    return Trajectory(
        features=append(features, obs.features),
        alive=append(alive, obs.alive),
        live=append(lives, live),
        actions=append(actions, final_actions),
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        teams=teams,
        info=info,
        teacher_actions=teacher,
    )


def credit_fallen(trajectory: Trajectory, teams: Any, gamma: float) -> jax.Array:
    """Rewards with each team's end-of-episode outcome also paid to its fallen agents ->
    ``float32[T, E, N]``.

    Battle pays the outcome (+1 win, -1 loss) only to agents alive at the last step, so an agent
    of a losing team that dies early escapes the -1 its surviving teammates get: its own return
    rewards dying. Here an agent that died at step ``t`` before the episode's terminal step
    ``t_end`` also receives ``gamma ** (t_end - t) * outcome`` on its last transition, what that
    outcome is worth from step ``t``. Rewards are unchanged where the env reports no ``outcome``
    (Jungle, Deception) or the episode did not end in the trajectory.
    """
    if "outcome" not in trajectory.info:
        return trajectory.reward
    steps = trajectory.reward.shape[0]
    live = trajectory.live[:-1]  # [T, E]
    ended = trajectory.terminated & live
    end_step = jnp.argmax(ended, axis=0)  # [E]
    final = jnp.sum(trajectory.info["outcome"] * ended[..., None], axis=0)  # [E, K]
    before_end = jnp.arange(steps)[:, None] < end_step[None, :]  # [T, E]
    fell = trajectory.alive[:-1] & ~trajectory.alive[1:] & (live & before_end)[..., None]
    to_end = (end_step[None, :] - jnp.arange(steps)[:, None]).astype(jnp.float32)
    worth = gamma ** to_end[..., None] * final[:, jnp.asarray(teams)][None].astype(jnp.float32)
    return trajectory.reward + jnp.where(fell, worth, 0.0)


def team_batch(
    trajectory: Trajectory, team_index: int, team: int, teams: Any, reward: jax.Array | None = None
) -> TeamBatch:
    """One learning team's ``TeamBatch`` view of a trajectory (``reward``: the trajectory's
    rewards by default, e.g. ``credit_fallen``'s instead)."""
    acts = trajectory.teams[team_index]
    return TeamBatch(
        features=trajectory.features,
        graphs=acts.graphs,
        actions=trajectory.actions,
        node_logp=acts.node_logp,
        reward=trajectory.reward if reward is None else reward,
        terminated=trajectory.terminated,
        alive=trajectory.alive,
        live=trajectory.live,
        team_member=jnp.asarray(np.asarray(teams) == team),
        teacher_actions=trajectory.teacher_actions,
    )
