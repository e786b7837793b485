"""Run artefacts: the learning-curve PNG and a GIF of the trained policy."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from envs import render
from qmarl_jax.config import TrainConfig

#: The metric plotted per scenario.
CURVE_METRIC = {"jungle": "score", "battle": "terminal_reward", "deception": "home_reward"}


def learning_curve(history: list[dict], config: TrainConfig, path: Path) -> Path:
    """Plot the scenario's headline metric (and the team return) against batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = CURVE_METRIC[config.scenario]
    batches = [row["batch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, (metric, f"return/team{config.learning_teams[0]}"), strict=True):
        ax.plot(batches, [row[key] for row in history])
        ax.set_xlabel("batch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{config.scenario} / {config.algo} (seed {config.seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def record_states(trainer, params_by_team, key, greedy: bool = False):
    """One episode of env 0 under the trained policy -> ``(states [T+1], length)``."""
    env, actor = trainer.env, trainer.actor

    @jax.jit
    def run(key):
        reset_key, key = jax.random.split(key)
        _, state = env.reset(reset_key, trainer.env_params)
        batch = jax.tree.map(lambda x: x[None], state)

        def body(carry, key):
            states, done = carry
            act_key, step_key = jax.random.split(key)
            obs = jax.vmap(env.observe)(states)
            actions, _ = actor.act(params_by_team, act_key, obs.features, states, greedy)
            _, next_states, _, terminated, truncated, _ = jax.vmap(
                env.step_no_reset, in_axes=(None, 0, 0, None)
            )(step_key, states, actions, trainer.env_params)
            next_states = jax.tree.map(lambda a, b: jnp.where(done, a, b), states, next_states)
            return (next_states, done | terminated[0] | truncated[0]), (next_states, done)

        _, (states, done_before) = jax.lax.scan(
            body, (batch, jnp.bool_(False)), jax.random.split(key, env.config.max_steps)
        )
        states = jax.tree.map(
            lambda first, rest: jnp.concatenate([first, rest[:, 0]]), batch, states
        )
        return states, 1 + jnp.sum(~done_before)

    return run(key)


def policy_gif(trainer, runner, path: Path, seed: int = 0) -> Path:
    """Render one episode of the trained policy (other teams by their controllers)."""
    params = tuple(t.params for t in runner.teams)
    states, length = record_states(trainer, params, jax.random.PRNGKey(seed))
    frames = [render.frame(trainer.env, s) for s in render.unstack(states, int(length))]
    return render.save_gif(frames, path)
