"""The ``team`` critic input: the world summary against a plain loop, its isolation between the
worlds of a batch, its config checks, and runs started from an ``ego`` critic's run."""

import jax
import numpy as np
import pytest

from qmarl_jax import loop, nmp
from qmarl_jax.algos import common
from qmarl_jax.config import make_config
from qmarl_jax.train import Trainer

SMALL = dict(games_per_batch=4, max_steps=8, width=16, num_blocks=1, batches_per_chunk=2)


def summaries_by_loop(hidden, world, side):
    """``nmp.team_summaries`` written as loops over worlds, sides and agents."""
    num_agents, width = hidden.shape
    out = np.zeros((num_agents, 2 * width + 2), np.float32)
    for w in range(num_agents):
        members = [i for i in range(num_agents) if world[i] == w]
        for s in (nmp.LEARNING_SIDE, nmp.OTHER_SIDE):
            counted = [i for i in members if side[i] == s]
            if counted:
                out[w, s * width : (s + 1) * width] = np.mean(hidden[counted], axis=0)
                out[w, 2 * width + s] = len(counted) / len(members)
    return out


def test_team_summaries_match_a_plain_loop():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(12, 3)).astype(np.float32)
    world = np.repeat(np.arange(3), 4).astype(np.int32)
    side = rng.integers(0, 3, size=12).astype(np.int32)
    side[8:] = nmp.NOT_COUNTED  # world 2: nobody alive
    side[4:8] = nmp.LEARNING_SIDE  # world 1: no other side
    got = np.asarray(nmp.team_summaries(hidden, world, side))
    np.testing.assert_allclose(got, summaries_by_loop(hidden, world, side), rtol=1e-6, atol=1e-6)
    assert np.all(got[3:] == 0)  # world numbers past the last world


def battle_batch(config, games=2):
    """``(trainer, params, features [games, N, F], graphs, sides int32[games, N])`` of fresh
    Battle starts, with every agent alive."""
    trainer = Trainer(config)
    params = trainer.init(jax.random.PRNGKey(0)).teams[0].params
    keys = jax.random.split(jax.random.PRNGKey(1), games)
    obs, state = jax.vmap(trainer.env.reset, in_axes=(0, None))(keys, trainer.env_params)
    graphs, _ = trainer.actor.build_graphs(state.grid, 0)
    member = np.asarray(trainer.actor.team_of_agent == 0)
    sides = np.where(member, nmp.LEARNING_SIDE, nmp.OTHER_SIDE).astype(np.int32)
    return trainer, params, obs.features, graphs, np.tile(sides, (games, 1))


def test_the_team_critic_reads_its_own_world_only():
    config = make_config("battle", critic_input="team", **SMALL)
    trainer, params, features, graphs, sides = battle_batch(config)
    # The layer that adds the summary starts at zeros (``test_a_team_critic_run_starts_...``).
    kernel = params["params"]["context_in"]["kernel"]
    assert not np.any(kernel)
    params["params"]["context_in"]["kernel"] = jax.random.normal(
        jax.random.PRNGKey(2), kernel.shape
    )
    values = lambda f, s: np.asarray(trainer.heads.values(params, f, graphs, s))
    both = values(features, sides)
    # The other world's observations and deaths do not move a world's values ...
    other_world = features.at[1].multiply(-3.0)
    dead_there = sides.copy()
    dead_there[1, :3] = nmp.NOT_COUNTED
    np.testing.assert_allclose(values(other_world, dead_there)[0], both[0], rtol=1e-5, atol=1e-6)
    # ... a death in its own world does (the shares change), and only there.
    enemy = int(np.flatnonzero(sides[0] == nmp.OTHER_SIDE)[0])
    dead_here = sides.copy()
    dead_here[0, enemy] = nmp.NOT_COUNTED
    moved = values(features, dead_here)
    assert np.max(np.abs(moved[0] - both[0])) > 1e-4
    np.testing.assert_array_equal(moved[1], both[1])


def test_critic_sides_mark_the_learning_team_the_others_and_the_dead():
    alive = np.array([[[True, True, False, True]]])
    batch = common.TeamBatch(
        features=None, graphs=None, actions=None, node_logp=None, reward=None, terminated=None,
        alive=alive, live=np.array([[True]]), team_member=np.array([True, False, True, False]),
    )  # fmt: skip
    got = np.asarray(common.critic_sides(batch))
    want = [nmp.LEARNING_SIDE, nmp.OTHER_SIDE, nmp.NOT_COUNTED, nmp.OTHER_SIDE]
    np.testing.assert_array_equal(got[0, 0], want)


def test_critic_input_is_checked_by_name():
    with pytest.raises(ValueError, match=r"'critic_input'='global'; choose one of: ego, team"):
        make_config("battle", critic_input="global")
    with pytest.raises(ValueError, match=r"'critic_input'='team'.*only for algo='qmarl_ppo'"):
        make_config("battle", algo="qmarl_ac", critic_input="team")


def test_a_team_critic_run_starts_from_an_ego_critic_run(tmp_path):
    source_config = make_config("battle", num_batches=2, seed=1, **SMALL)
    source = loop.train(source_config, run_dir=tmp_path / "ego", progress=False, finish=False)
    _, trained = loop.load_runner(source)
    config = make_config("battle", num_batches=2, critic_input="team", critic_warmup=1,
                         init_from=str(source), **SMALL)  # fmt: skip
    run = loop.train(config, run_dir=tmp_path / "team", progress=False, finish=False)
    trainer, end = loop.load_runner(run)
    start = loop.init_params(config, trainer)[0]["params"]
    for name, tree in trained.teams[0].params["params"].items():
        jax.tree.map(np.testing.assert_array_equal, start[name], tree)
    fresh = trainer.init(jax.random.PRNGKey(config.seed)).teams[0].params["params"]
    for name in nmp.TEAM_CONTEXT_MODULES:
        jax.tree.map(np.testing.assert_array_equal, start[name], fresh[name])
    # Its values start as the ego critic's: the summary enters through zeros.
    _, _, features, graphs, sides = battle_batch(config)
    ego = Trainer(source_config)
    np.testing.assert_allclose(
        np.asarray(trainer.heads.values({"params": start}, features, graphs, sides)),
        np.asarray(ego.heads.values(trained.teams[0].params, features, graphs)),
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    metrics = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    assert len(metrics) >= 1 and int(end.batch) == 2
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(end.teams))
    # And back: an ego critic from the team critic's run drops the summary's layers.
    back = make_config("battle", num_batches=1, init_from=str(run), **SMALL)
    ego_start = loop.init_params(back, Trainer(back))[0]["params"]
    assert not set(nmp.TEAM_CONTEXT_MODULES) & set(ego_start)
    critic = end.teams[0].params["params"]["critic"]
    jax.tree.map(np.testing.assert_array_equal, ego_start["critic"], critic)
