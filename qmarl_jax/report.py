"""Run artefacts: the learning-curve PNG and a GIF of the trained policy."""

from __future__ import annotations

from pathlib import Path

import jax

from envs import render
from qmarl_jax.config import TrainConfig
from qmarl_jax.metrics import HEADLINE


def learning_curve(history: list[dict], config: TrainConfig, path: Path) -> Path:
    """Plot the scenario's headline metric (and the team return) against batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = HEADLINE[config.scenario]
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


def policy_gif(trainer, runner, path: Path, seed: int = 0) -> Path:
    """Render one episode of the trained policy (other teams by their controllers)."""
    from qmarl_jax.policy import make_policy

    policy = make_policy(trainer, tuple(t.params for t in runner.teams))
    states, length = render.record_episode(
        trainer.env, trainer.env_params, policy.act, jax.random.PRNGKey(seed)
    )
    frames = [render.frame(trainer.env, s) for s in render.unstack(states, int(length))]
    return render.save_gif(frames, path)
