"""Registry and config validation: every bad setting is refused with a message naming the field."""

import pytest

import envs


@pytest.mark.parametrize(
    ("args", "overrides", "message"),
    [
        (("chess",), {}, "unknown scenario 'chess'; choose one of: battle, deception, jungle"),
        (("battle", "huge"), {}, "unknown battle preset 'huge'; choose one of: n100, n10k, n1k"),
        (("jungle",), {"food": 3}, "unknown jungle field(s) ['food']; choose one of:"),
        (("jungle",), {"height": 0}, "invalid config field 'height'=0: must be >= 2"),
        (("battle",), {"width": -3}, "invalid config field 'width'=-3"),
        (("battle",), {"num_agents": 0}, "'num_agents'=0"),
        (("jungle",), {"max_steps": 0}, "invalid config field 'max_steps'=0: must be >= 1"),
        (("jungle",), {"view_radius": 0}, "invalid config field 'view_radius'=0: must be >= 1"),
        (("battle",), {"graph_radius": 0}, "invalid config field 'graph_radius'=0"),
        (("jungle",), {"num_agents": 25}, "needs 26 cells but the 5x5 grid has 25"),
        (("jungle",), {"num_food": 0}, "invalid config field 'num_food'=0: must be >= 1"),
        (("jungle",), {"start_hp": 0}, "invalid config field 'start_hp'=0"),
        (("battle",), {"num_agents": 7}, "must be even (two teams of equal size)"),
        (("battle",), {"kill_threshold": 9}, "'kill_threshold'=9: must be in 1..8"),
        (("deception",), {"num_agents": 5}, "is derived as num_home + num_adversaries = 3"),
        (("deception",), {"num_targets": 3}, "'num_landmarks'=2: must be >= num_targets=3"),
        (("deception",), {"num_adversaries": 0}, "'num_adversaries'=0: must be >= 1"),
        (("deception",), {"num_home": 40}, "needs 43 cells but the 6x6 grid has 36"),
        (("deception",), {"landmark_sight": -1}, "'landmark_sight'=-1: must be >= 0"),
        (("deception",), {"landmark_slots": 0}, "'landmark_slots'=0: must be >= 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(args, overrides, message):
    with pytest.raises(ValueError) as error:
        envs.make(*args, **overrides)
    assert message in str(error.value)


def test_unknown_field_lists_the_allowed_fields():
    with pytest.raises(ValueError, match="num_food") as error:
        envs.make("jungle", foo=1)
    assert "max_steps" in str(error.value) and "view_radius" in str(error.value)


@pytest.mark.parametrize("scenario", list(envs.SCENARIOS))
def test_every_preset_builds(scenario):
    for preset in envs.PRESETS[scenario]:
        env, params = envs.make(scenario, preset)
        assert env.num_agents >= 3
        assert int(params.max_steps) == env.config.max_steps


@pytest.mark.parametrize(
    ("scenario", "num_agents", "side"),
    [("battle", 10000, 354), ("jungle", 10000, 500), ("jungle", 2000, 223), ("battle", 28, 14)],
)
def test_sized_config_keeps_the_nearest_preset_density(scenario, num_agents, side):
    config = envs.sized_config(scenario, num_agents)
    assert config.num_agents == num_agents
    assert (config.height, config.width) == (side, side)


def test_sized_config_scales_proportional_counts():
    config = envs.sized_config("deception", 2000)
    assert (config.num_home, config.num_adversaries) == (1500, 500)
    assert (config.num_landmarks, config.num_targets) == (800, 200)
    assert envs.sized_config("jungle", 2000).num_food == 500
    assert envs.sized_config("battle", 99).num_agents == 100  # two equal teams
