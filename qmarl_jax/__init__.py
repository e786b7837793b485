"""qmarl-jax: Q-MARL (ego-graph message passing with action ensembling) in JAX.

Entry points: ``make_config`` (validated settings and presets), ``make_train`` (the whole run as one
pure jitted function), ``loop.train`` (the host loop with logs, checkpoints and resume),
``evaluate.evaluate_run`` (win/draw/loss, scores and intervals) and ``load_policy`` (a trained run
as a jitted ``act(key, state)`` at any number of agents).
"""

from qmarl_jax.config import TrainConfig, make_config
from qmarl_jax.policy import Policy, load_policy
from qmarl_jax.train import Trainer, make_train

__all__ = ["Policy", "TrainConfig", "Trainer", "load_policy", "make_config", "make_train"]
