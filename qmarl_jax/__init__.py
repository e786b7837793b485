"""qmarl-jax: Q-MARL (ego-graph message passing with action ensembling) in JAX.

Entry points: ``make_config`` (validated settings and presets), ``make_train`` (the whole run as one
pure jitted function) and ``loop.train`` (the host loop with logs, checkpoints and resume).
"""

from qmarl_jax.config import TrainConfig, make_config
from qmarl_jax.train import Trainer, make_train

__all__ = ["TrainConfig", "Trainer", "make_config", "make_train"]
