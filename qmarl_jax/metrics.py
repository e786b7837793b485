"""Episode metrics of a batch of whole episodes (SPEC section 3), computed on the device.

``episode_values`` gives one value per episode (``[E]``); ``episode_metrics`` their batch means
plus ego-graph statistics. Common: ``return/team{k}`` (undiscounted return per agent of each
team), ``episode_length``. Jungle: ``score`` (mean reward per agent per step x100), ``survival``,
``food_contact``. Battle: ``win``, ``draw``, ``loss`` (0/1 per episode) and ``terminal_reward``
(+100 / 0 / -100) of the evaluated team (the first learning team). Deception: ``home_reward``
(x100), ``found`` (share of targets an adversary found), ``covered`` (share of targets a home
agent stands on). Ego-graph statistics: ``graph_nodes`` (mean nodes per ego-graph),
``graph_max_nodes``, ``truncated_nodes``, ``overflow_nodes``, ``overflow_edges`` (batch totals),
``graph_shared_fraction`` (share of all ego-graph nodes not stored because their ego-graph is
stored once for several centres: what ``share_ego_graphs`` saves; 0 without it).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qmarl_jax.rollout import Trajectory

#: The metric each scenario is judged by (the paper's "%"), x100.
HEADLINE = {"jungle": "score", "battle": "terminal_reward", "deception": "home_reward"}


def episode_values(scenario: str, traj: Trajectory, teams: np.ndarray, evaluated_team: int):
    """Per-episode metrics ``{name: float32[E]}`` of a trajectory; see the module docstring."""
    live = traj.live[:-1]  # [T, E]
    acting = traj.alive[:-1] & live[..., None]
    out = {"episode_length": jnp.sum(live, axis=0).astype(jnp.float32)}
    for team in range(int(teams.max()) + 1):
        member = np.asarray(teams == team)
        total = jnp.sum(traj.reward * acting * member, axis=(0, 2))
        out[f"return/team{team}"] = total / max(1, int(member.sum()))
    out.update(_SCENARIO_VALUES[scenario](traj, live, acting, evaluated_team))
    return {k: v.astype(jnp.float32) for k, v in out.items()}


def episode_metrics(scenario: str, traj: Trajectory, teams: np.ndarray, evaluated_team: int):
    """Batch means (float32[]) of ``episode_values`` plus ``graph_metrics``."""
    values = episode_values(scenario, traj, teams, evaluated_team)
    return {**{k: jnp.mean(v) for k, v in values.items()}, **graph_metrics(traj)}


def _jungle(traj, live, acting, evaluated_team):
    steps, _, agents = traj.reward.shape
    per_agent_step = steps * agents
    return {
        "score": 100 * jnp.sum(traj.reward * acting, axis=(0, 2)) / per_agent_step,
        "survival": jnp.mean(traj.alive[-1], axis=-1),
        "food_contact": jnp.sum(traj.info["food_contact"] & acting, axis=(0, 2)) / per_agent_step,
    }


def _battle(traj, live, acting, evaluated_team):
    outcome = jnp.sum(traj.info["outcome"][..., evaluated_team] * live, axis=0)  # [E]
    return {
        "win": outcome > 0,
        "draw": outcome == 0,
        "loss": outcome < 0,
        "terminal_reward": 100 * outcome,
    }


def _deception(traj, live, acting, evaluated_team):
    last = jnp.sum(live, axis=0) - 1  # index of each env's last step
    pick = lambda x: jnp.take_along_axis(x, last[None, :, None], axis=0)[0]  # [E, targets]
    covered, found = pick(traj.info["covered"]), pick(traj.info["found"])
    home = jnp.mean(jnp.where(covered & ~found, 1.0, -1.0), axis=-1)
    return {
        "home_reward": 100 * home,
        "found": jnp.mean(found, axis=-1),
        "covered": jnp.mean(covered, axis=-1),
    }


_SCENARIO_VALUES = {"jungle": _jungle, "battle": _battle, "deception": _deception}


def graph_metrics(traj: Trajectory):
    """Ego-graph size and budget statistics over all learning teams' steps."""
    out = {}
    for index, acts in enumerate(traj.teams):
        s = acts.stats
        prefix = "graph" if index == 0 else f"graph_team{index}"
        shared = jnp.sum(s.shared_nodes)
        nodes = jnp.sum(s.num_nodes) + shared  # every ego-graph's nodes
        out[f"{prefix}_nodes"] = nodes / jnp.maximum(jnp.sum(s.num_graphs), 1)
        out[f"{prefix}_shared_fraction"] = shared / jnp.maximum(nodes, 1)
        out[f"{prefix}_max_nodes"] = jnp.max(s.max_graph_nodes).astype(jnp.float32)
        for name in ("truncated_nodes", "overflow_nodes", "overflow_edges"):
            out[f"{prefix}_{name}"] = jnp.sum(getattr(s, name)).astype(jnp.float32)
    return out
