"""Conformance of every registered scenario: jit, shapes, dtypes, determinism, vmap, traces."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs

CASES = [(s, p) for s in envs.SCENARIOS for p in ("tiny", "n100")]


def random_actions(key, env, batch=()):
    return jax.random.randint(key, (*batch, env.num_agents), 0, env.num_actions)


def rollout(env, params, step, key, state, steps, batch=()):
    outputs = []
    for _ in range(steps):
        key, action_key, step_key = jax.random.split(key, 3)
        step_keys = jax.random.split(step_key, batch[0]) if batch else step_key
        out = step(step_keys, state, random_actions(action_key, env, batch), params)
        state = out[1]
        outputs.append(out)
    return outputs


@pytest.mark.parametrize(("scenario", "preset"), CASES)
def test_reset_and_step_shapes_dtypes_finite_and_one_trace(scenario, preset):
    env, params = envs.make(scenario, preset, max_steps=6)
    n, k = env.num_agents, env.max_degree
    chex.clear_trace_counter()  # the counter is keyed by function, shared by parametrized cases

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, actions, params):
        return env.step(key, state, actions, params)

    obs, state = jax.jit(env.reset)(jax.random.key(0), params)
    outputs = rollout(env, params, step, jax.random.key(1), state, steps=8)  # crosses a reset
    for obs, _, reward, terminated, truncated, info in outputs:
        chex.assert_shape(obs.features, (n, env.obs_dim))
        chex.assert_type(obs.features, jnp.float32)
        chex.assert_shape([obs.neighbours, obs.neighbour_mask], (n, k))
        chex.assert_type([obs.neighbours, obs.neighbour_mask], [jnp.int32, jnp.bool_])
        chex.assert_shape([obs.alive, obs.team, reward], (n,))
        chex.assert_type(reward, jnp.float32)
        chex.assert_shape([terminated, truncated], ())
        chex.assert_type([terminated, truncated], [jnp.bool_, jnp.bool_])
        chex.assert_tree_all_finite((obs.features, reward))
        chex.assert_trees_all_equal_shapes_and_dtypes(info["final_observation"], obs)
        np.testing.assert_array_equal(obs.team, env.teams)
    assert any(bool(o[3] | o[4]) for o in outputs), "an episode should have ended in 8 steps"


@pytest.mark.parametrize(("scenario", "preset"), CASES)
def test_same_key_same_result(scenario, preset):
    env, params = envs.make(scenario, preset)
    step = jax.jit(env.step)

    def run():
        _, state = jax.jit(env.reset)(jax.random.key(5), params)
        return rollout(env, params, step, jax.random.key(6), state, steps=3)

    chex.assert_trees_all_equal(run(), run())


@pytest.mark.parametrize("scenario", list(envs.SCENARIOS))
def test_vmap_and_batch_step_equal_a_python_loop(scenario):
    # Jungle with 1 hp ends episodes at different steps in different envs (partial resets).
    overrides = {"start_hp": 1} if scenario == "jungle" else {"max_steps": 3}
    env, params = envs.make(scenario, "tiny", **overrides)
    num_envs = 4
    reset_keys = jax.random.split(jax.random.key(0), num_envs)
    _, states = env.batch_reset(reset_keys, params)
    single_step = jax.jit(env.step)
    vmapped_step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    batch_step = jax.jit(env.batch_step)
    loop_states = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(num_envs)]
    vmap_states = batch_states = states
    key = jax.random.key(1)
    ended = np.zeros(num_envs, bool)
    for _ in range(5):
        key, action_key, step_key = jax.random.split(key, 3)
        actions = random_actions(action_key, env, (num_envs,))
        keys = jax.random.split(step_key, num_envs)
        looped = [single_step(keys[i], loop_states[i], actions[i], params) for i in range(num_envs)]
        loop_states = [out[1] for out in looped]
        vmapped = vmapped_step(keys, vmap_states, actions, params)
        batched = batch_step(keys, batch_states, actions, params)
        vmap_states, batch_states = vmapped[1], batched[1]
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *looped)
        chex.assert_trees_all_close(vmapped, stacked)
        chex.assert_trees_all_close(batched, stacked)
        ended |= np.asarray(stacked[3] | stacked[4])
    assert ended.any()
