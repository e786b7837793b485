"""Scripted controllers on hand-built states, and rendering of frames and GIFs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import envs
from envs import core, render
from envs.opponents import make_controller, nearest_in_window, step_toward
from experiments import render as render_cli


def test_nearest_in_window_prefers_chebyshev_then_euclid():
    window = core.window_displacements(2)
    mask = np.zeros((1, len(window)), bool)
    for target in ([2, 2], [-1, 1], [0, -2]):
        mask[0, np.flatnonzero((window == target).all(-1))] = True
    found, offset = nearest_in_window(jnp.asarray(mask), window)
    assert bool(found[0]) and offset[0].tolist() == [-1, 1]
    found, _ = nearest_in_window(jnp.zeros((1, len(window)), bool), window)
    assert not bool(found[0])


def test_step_toward_takes_the_longer_axis_then_the_other_when_blocked():
    env, _ = envs.make("battle", height=6, width=6, num_agents=2)
    state = env.state_from(jnp.array([[2, 2], [5, 5]]))
    action = step_toward(env.spec, state.grid, jnp.array([[3, 1], [0, 0]]))
    assert action.tolist() == [core.DOWN, core.STAY]
    blocked = env.state_from(jnp.array([[2, 2], [3, 2]]))  # the cell below is taken
    action = step_toward(env.spec, blocked.grid, jnp.array([[3, 1], [0, 0]]))
    assert action.tolist() == [core.RIGHT, core.STAY]


def test_battle_scripted_moves_toward_the_nearest_enemy_and_holds_when_adjacent():
    env, params = envs.make("battle", height=10, width=10, num_agents=4)
    # Team 0 = agents 0, 1; team 1 = agents 2, 3.
    state = env.state_from(jnp.array([[0, 0], [5, 5], [0, 3], [5, 6]]))
    actions = make_controller("scripted", env)(jax.random.key(0), state, params)
    assert actions[0] == core.RIGHT  # enemy 2 is three cells to the right
    assert actions[1] == core.STAY and actions[3] == core.STAY  # adjacent: engaged


def test_jungle_scripted_walks_to_food_and_stays_beside_it():
    env, params = envs.make("jungle", height=7, width=7, num_agents=2)
    state = env.state_from(jnp.array([[6, 3], [3, 2]]), jnp.array([[3, 3]]))
    actions = make_controller("scripted", env)(jax.random.key(0), state, params)
    assert actions.tolist() == [core.UP, core.STAY]


def test_deception_adversary_heads_for_the_landmark_home_agents_crowd():
    env, params = envs.make(
        "deception", height=9, width=9, num_home=2, num_adversaries=1, num_landmarks=2
    )
    # Home agents gather at the decoy (0,8); the adversary at (4,4) sees both landmarks.
    state = env.state_from(jnp.array([[0, 7], [1, 8], [4, 4]]), jnp.array([[8, 0], [0, 8]]))
    actions = make_controller("scripted", env)(jax.random.key(0), state, params)
    assert actions[2] in (core.UP, core.RIGHT)


def test_deception_adversary_out_of_sight_does_not_follow_the_target_on_ties():
    """With no landmark in sight and no home agent near any, the adversary's choice must not
    depend on which landmark is the target (targets come first in ``state.landmarks``)."""
    env, params = envs.make(
        "deception", height=9, width=9, num_home=2, num_adversaries=1, num_landmarks=2,
        sight_radius=1,
    )  # fmt: skip
    positions = jnp.array([[8, 0], [8, 1], [4, 4]])
    controller = make_controller("scripted", env)
    chosen = []
    for landmarks in ([[0, 0], [8, 8]], [[8, 8], [0, 0]]):  # the target first: either one
        state = env.state_from(positions, jnp.array(landmarks))
        chosen.append(int(controller(jax.random.key(0), state, params)[2]))
    assert chosen[0] == chosen[1] and chosen[0] in (core.UP, core.LEFT)


@pytest.mark.parametrize("kind", ["random", "scripted"])
@pytest.mark.parametrize("scenario", list(envs.SCENARIOS))
def test_controllers_give_valid_actions_under_jit(scenario, kind):
    env, params = envs.make(scenario, "n100")
    _, state = jax.jit(env.reset)(jax.random.key(0), params)
    actions = jax.jit(make_controller(kind, env))(jax.random.key(1), state, params)
    assert actions.shape == (env.num_agents,) and actions.dtype == jnp.int32
    assert np.all((np.asarray(actions) >= 0) & (np.asarray(actions) < env.num_actions))


def test_unknown_controller_is_refused():
    env, _ = envs.make("battle")
    with pytest.raises(ValueError, match="unknown controller 'smart'; choose one of: random"):
        make_controller("smart", env)


def test_frame_draws_teams_items_and_targets_where_they_are():
    env, _ = envs.make("deception", height=4, width=5)
    state = env.state_from(jnp.array([[0, 0], [0, 1], [3, 4]]), jnp.array([[2, 2], [1, 3]]))
    image = render.frame(env, state, cell_px=10)
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8

    def centre(row, col):
        return tuple(image[row * 10 + 5, col * 10 + 5])

    assert centre(0, 0) == render.TEAM_COLOURS[0] and centre(0, 1) == render.TEAM_COLOURS[0]
    assert centre(3, 4) == render.TEAM_COLOURS[1]
    assert centre(2, 2) == render.TARGET_COLOUR and centre(1, 3) == render.ITEM_COLOUR
    assert centre(3, 0) == render.BACKGROUND


def test_render_command_writes_a_gif_of_the_whole_episode(tmp_path):
    out = render_cli.main(render_cli.Args(scenario="jungle", out=str(tmp_path / "j.gif")))
    gif = Image.open(out)
    assert gif.n_frames >= 2 and gif.size == (480, 480)
