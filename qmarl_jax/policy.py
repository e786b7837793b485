"""Decentralised inference: a trained run as a jitted ``policy(key, state) -> actions``.

``load_policy(run_dir, num_agents=10_000)`` rebuilds the run's network for an environment of any
size (the parameters are shared by every agent and independent of N), and returns a ``Policy``
whose ``act`` builds the ego-graphs of one state, runs the network, ensembles each agent's action
over the ego-graphs holding it, and samples (or takes the argmax). Teams the run did not learn are
driven by their controllers (scripted or random). Cost is linear in N.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from envs.base import GridEnv


@dataclasses.dataclass(frozen=True)
class Policy:
    """A trained policy bound to an environment.

    Attributes:
      env: the environment it acts in (``env.num_agents`` agents).
      env_params: that environment's default params.
      act: jitted ``(key, state) -> int32[N]`` actions of every agent of one (unbatched) state.
      config: the evaluation config the policy was built from.
    """

    env: GridEnv
    env_params: object
    act: Callable
    config: object


def make_policy(trainer, params_by_team, greedy: bool = False) -> Policy:
    """``Policy`` of a ``Trainer`` with the parameters of each learning team."""
    actor, env = trainer.actor, trainer.env

    def act(key, state):
        batch = jax.tree.map(lambda x: x[None], state)
        features = env.observe(state).features[None]
        return actor.act(params_by_team, key, features, batch, greedy)[0][0]

    return Policy(env=env, env_params=trainer.env_params, act=jax.jit(act), config=trainer.config)


def load_policy(
    run_dir: str | Path,
    num_agents: int | None = None,
    ensemble: str | None = None,
    greedy: bool = False,
) -> Policy:
    """The latest parameters of a run as a ``Policy``.

    Args:
      run_dir: a training run directory.
      num_agents: act in an environment of about this many agents (the nearest preset's density);
        default: the run's own environment.
      ensemble: ``mean_prob`` / ``mean_logit`` / ``none`` (default: the run's).
      greedy: argmax of the ensembled distribution instead of sampling.

    Example::

        policy = load_policy("runs/jungle-...", num_agents=10_000)
        obs, state = policy.env.reset(jax.random.key(0), policy.env_params)
        actions = policy.act(jax.random.key(1), state)  # int32[10000]
    """
    from qmarl_jax.evaluate import evaluation_config
    from qmarl_jax.loop import load_runner
    from qmarl_jax.train import Trainer

    trainer, runner = load_runner(run_dir)
    config = evaluation_config(trainer.config, 1, num_agents, ensemble, opponent=None)
    params = tuple(t.params for t in runner.teams)
    return make_policy(Trainer(config), params, greedy)


def average_params(trees: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """The weighted mean of parameter trees of one structure and shapes (a "model soup",
    Wortsman et al. 2022: fine-tunes of one starting point tend to share a basin, where the
    mean of their weights plays like the best of them or better).

    Args:
      trees: K parameter trees, each leaf ``float[...]`` of the same shape across the trees.
      weights: K positive weights (default: equal); normalised to sum to 1.

    Returns:
      One tree whose every leaf is ``sum_k w_k leaf_k / sum_k w_k``, in the leaves' dtype.
    """
    weights = [1.0] * len(trees) if weights is None else list(weights)
    if not trees or len(weights) != len(trees) or min(weights) <= 0:
        raise ValueError(f"average_params needs one positive weight per tree: {len(trees)} "
                         f"trees, weights {weights}")  # fmt: skip
    total = float(sum(weights))

    def mean(*leaves):
        pairs = zip(weights, leaves, strict=True)
        acc = sum(w / total * jnp.asarray(leaf, jnp.float32) for w, leaf in pairs)
        return acc.astype(jnp.asarray(leaves[0]).dtype)

    return jax.tree.map(mean, *trees)
