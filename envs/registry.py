"""Scenario registry: ``make("battle", preset="tiny", **overrides) -> (env, params)``.

Presets (density = agents per cell; Jungle food = 1 per 4 agents; Deception = 3/4 home, 1/4
adversaries, 0.4 landmarks and 0.1 targets per agent; episode length in steps):

======  ===============================  =====================  ============================
preset  Jungle                           Battle                 Deception
======  ===============================  =====================  ============================
tiny    5x5, 4 agents, 1 food, 30        10x10, 7 vs 7, 30      6x6, 2 home + 1 adv, 2 lm, 25
n100    50x50, 100 (4%), 25 food, 30     36x36, 100 (7.7%), 100  50x50, 75 + 25, 40 lm, 50
n1k     158x158, 1000 (4%), 250, 30      112x112, 1000 (8%), 100  158x158, 750 + 250, 400, 50
n10k    500x500, 10000 (4%), 2500, 30    354x354, 10000 (8%), 100  500x500, 7500 + 2500, 4000, 50
======  ===============================  =====================  ============================
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from envs.base import GridConfig, GridEnv
from envs.battle import Battle, BattleConfig
from envs.deception import Deception, DeceptionConfig
from envs.jungle import Jungle, JungleConfig

SCENARIOS: dict[str, tuple[type[GridEnv], type[GridConfig]]] = {
    "jungle": (Jungle, JungleConfig),
    "battle": (Battle, BattleConfig),
    "deception": (Deception, DeceptionConfig),
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "jungle": {
        "tiny": dict(height=5, width=5, num_agents=4, num_food=1, max_steps=30),
        "n100": dict(height=50, width=50, num_agents=100, num_food=25, max_steps=30),
        "n1k": dict(height=158, width=158, num_agents=1000, num_food=250, max_steps=30),
        "n10k": dict(height=500, width=500, num_agents=10000, num_food=2500, max_steps=30),
    },
    "battle": {
        "tiny": dict(height=10, width=10, num_agents=14, max_steps=30),
        "n100": dict(height=36, width=36, num_agents=100, max_steps=100),
        "n1k": dict(height=112, width=112, num_agents=1000, max_steps=100),
        "n10k": dict(height=354, width=354, num_agents=10000, max_steps=100),
    },
    "deception": {
        "tiny": dict(height=6, width=6, num_home=2, num_adversaries=1, num_landmarks=2,
                     num_targets=1, max_steps=25),
        "n100": dict(height=50, width=50, num_home=75, num_adversaries=25, num_landmarks=40,
                     num_targets=10, max_steps=50),
        "n1k": dict(height=158, width=158, num_home=750, num_adversaries=250, num_landmarks=400,
                    num_targets=100, max_steps=50),
        "n10k": dict(height=500, width=500, num_home=7500, num_adversaries=2500,
                     num_landmarks=4000, num_targets=1000, max_steps=50),
    },
}  # fmt: skip

#: Fields that scale in proportion to the agent count when a preset is resized.
_PROPORTIONAL = {
    "jungle": ("num_food",),
    "battle": (),
    "deception": ("num_home", "num_adversaries", "num_landmarks", "num_targets"),
}


def _choices(kind: str, allowed) -> str:
    return f"{kind}; choose one of: {', '.join(sorted(allowed))}"


def make_config(scenario: str, preset: str = "tiny", **overrides: Any) -> GridConfig:
    """The validated config of ``scenario`` at ``preset`` with ``overrides`` applied.

    Raises:
      ValueError: unknown scenario, preset or field (listing the allowed values), or an impossible
        setting (naming the field).
    """
    if scenario not in SCENARIOS:
        raise ValueError(_choices(f"unknown scenario {scenario!r}", SCENARIOS))
    if preset not in PRESETS[scenario]:
        raise ValueError(_choices(f"unknown {scenario} preset {preset!r}", PRESETS[scenario]))
    config_type = SCENARIOS[scenario][1]
    fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(_choices(f"unknown {scenario} field(s) {sorted(unknown)}", fields))
    return config_type(**{**PRESETS[scenario][preset], **overrides})


def make_env(config: GridConfig) -> GridEnv:
    """The environment for a config built by ``make_config``."""
    for env_type, config_type in SCENARIOS.values():
        if type(config) is config_type:
            return env_type(config)
    raise TypeError(f"no scenario has config type {type(config).__name__}")


def make(scenario: str, preset: str = "tiny", **overrides: Any):
    """``(env, params)`` for ``scenario`` at ``preset`` with config ``overrides``.

    Example: ``env, params = make("battle", "n1k", max_steps=200)``.
    """
    env = make_env(make_config(scenario, preset, **overrides))
    return env, env.default_params()


def nearest_preset(scenario: str, num_agents: int) -> str:
    """The preset whose agent count is nearest to ``num_agents`` on a log scale."""
    if scenario not in SCENARIOS:
        raise ValueError(_choices(f"unknown scenario {scenario!r}", SCENARIOS))
    if num_agents < 1:
        raise ValueError(f"invalid num_agents={num_agents}: must be >= 1")

    def log_gap(preset: str) -> float:
        return abs(math.log(make_config(scenario, preset).num_agents / num_agents))

    return min(PRESETS[scenario], key=log_gap)


def sized_config(
    scenario: str, num_agents: int, density: float | None = None, **overrides: Any
) -> GridConfig:
    """A config for about ``num_agents`` agents at the density of the nearest preset.

    The square grid side is ``round(sqrt(num_agents / density))`` (``density``: agents per cell,
    default the preset's); proportional counts (food, home/adversary split, landmarks, targets)
    keep the preset's ratios (at least 1 each). Battle rounds the agent count up to an even number.
    """
    preset = nearest_preset(scenario, num_agents)
    base = make_config(scenario, preset)
    if density is not None and not 0 < density <= 1:
        raise ValueError(f"invalid density={density}: must be in (0, 1] agents per cell")
    fields = dict(PRESETS[scenario][preset])
    scale = num_agents / base.num_agents
    for name in _PROPORTIONAL[scenario]:
        fields[name] = max(1, round(fields[name] * scale))
    if scenario == "deception":
        fields["num_targets"] = min(fields["num_targets"], fields["num_landmarks"])
    else:
        fields["num_agents"] = num_agents + (num_agents % 2 if scenario == "battle" else 0)
    side = max(2, round(math.sqrt(num_agents / (density or base.density))))
    fields.update(height=side, width=side)
    fields.update(overrides)
    return make_config(scenario, preset, **fields)
