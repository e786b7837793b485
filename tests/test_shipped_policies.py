"""The policy directories shipped in ``docs/results/policies``: each is indexed, loads with
today's code, chains to the stage it was trained from, and still plays the way it was
evaluated (a change to the observation, the network or the environment that the saved
parameters no longer fit shows here as a policy that stops winning)."""

import re
from pathlib import Path

import jax
import pytest

from qmarl_jax import load_policy
from qmarl_jax.checkpoint import latest_batch, load_config
from qmarl_jax.evaluate import evaluate_run

POLICIES = Path(__file__).resolve().parents[1] / "docs" / "results" / "policies"
SHIPPED = sorted(p for p in POLICIES.iterdir() if p.is_dir())
ROOT = POLICIES.parents[2]


def indexed_batches() -> dict[str, int]:
    """policy name -> the batches its row of the policies README gives."""
    rows = re.findall(
        r"^\| \[`(\w+)`\]\(\w+\) \| .*? \| (\d+)", (POLICIES / "README.md").read_text(), re.M
    )
    return {name: int(batches) for name, batches in rows}


def test_every_shipped_policy_is_indexed_with_the_batches_it_holds():
    assert SHIPPED, "no policy directories shipped"
    index = indexed_batches()
    assert set(index) == {p.name for p in SHIPPED}
    for path in SHIPPED:
        assert latest_batch(path) == index[path.name], path.name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_loads_and_chains_to_the_stage_it_continues(path):
    config = load_config(path)
    if config.init_from is not None:
        parent = ROOT / config.init_from
        assert parent in SHIPPED, f"{path.name} continues {config.init_from}, not shipped"
        assert load_config(parent).width == config.width
    policy = load_policy(path, greedy=True)
    _, state = policy.env.reset(jax.random.key(0), policy.env_params)
    actions = policy.act(jax.random.key(1), state)
    assert actions.shape == (policy.env.num_agents,)
    assert int(actions.min()) >= 0 and int(actions.max()) < policy.env.num_actions
    # Greedy play ignores the key.
    assert actions.tolist() == policy.act(jax.random.key(2), state).tolist()


def test_a_shipped_stage_3_still_beats_the_scripted_team():
    """Evaluated at +84.8 greedy over 1,000 games (battle_w128_kickstart.json); the scripted
    team's own mirror match is 0, the `pack` rule -3.6 and `strike` +71.5."""
    summary = evaluate_run(POLICIES / "battle_kickstart_w128_seed1_stage3", episodes=32,
                           greedy=True, seed=3)  # fmt: skip
    assert summary["metrics"]["terminal_reward"]["mean"] > 50
