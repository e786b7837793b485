"""Losses of the learners: each algorithm is a loss over the shared rollout (no training loops)."""

from qmarl_jax.algos import common, qmarl_ac, qmarl_pg, qmarl_ppo

__all__ = ["common", "qmarl_ac", "qmarl_pg", "qmarl_ppo"]
