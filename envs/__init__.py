"""Pure-JAX grid worlds of Q-MARL: Jungle, Battle and Deception (no learning code here)."""

from envs.base import GridConfig, GridEnv, Observation
from envs.registry import PRESETS, SCENARIOS, make, make_config, make_env, sized_config

__all__ = [
    "PRESETS",
    "SCENARIOS",
    "GridConfig",
    "GridEnv",
    "Observation",
    "make",
    "make_config",
    "make_env",
    "sized_config",
]
