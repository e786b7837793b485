"""Where does a trained Battle policy lose? Its games paired with the reference rules' games on
the same start states.

    python -m experiments.battle_losses --run RUN --episodes 1000 --json F
    python -m experiments.battle_losses --run RUN --references strike2 rollout pack --json F

Plays the run's latest team-0 policy (its ensembled actions, sampled and greedy) and each of
``references`` (``experiments.battle_reference``'s controllers) against the scripted team from
the same ``episodes`` start states: game ``e`` starts where ``battle_reference`` starts it, from
key ``e`` of ``split(PRNGKey(seed), episodes)``. Prints and saves:

* each player's win / draw / loss and terminal reward x100, with 95% intervals;
* each reference's paired difference from the sampled policy (the mean per-game terminal reward
  difference x100 and its interval: pairing takes the start states' share out of the noise);
* how the greedy policy and each reference do on the games the sampled policy loses: a
  reference that wins them shows they were winnable from their start;
* how many games the sampled and the greedy policy both lose, against the count expected if
  their losses were independent: a start the policy cannot win is lost both ways, a loss to
  the dice of one game mostly is not.

``per_game`` holds every player's outcome (+1 / 0 / -1) per game.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import tyro

from envs.base import require
from experiments.battle_reference import REFERENCES, outcomes, reference_policy, summarise_outcomes
from experiments.common import episode_keys, machine, require_battle_run, write_json
from qmarl_jax import metrics as metrics_lib
from qmarl_jax.evaluate import evaluation_config, paired_difference
from qmarl_jax.loop import load_runner
from qmarl_jax.rollout import collect
from qmarl_jax.train import Trainer


@dataclasses.dataclass
class Args:
    """Loss-analysis settings: a Battle policy's games paired with the reference rules' games."""

    run: str
    """A Battle training run directory that learns team 0 alone (its latest checkpoint plays)."""
    episodes: int = 1000
    """Start states, each played once by every player."""
    references: tuple[str, ...] = ("strike2", "rollout")
    """Reference controllers to pair with the policy (``experiments.battle_reference``)."""
    batch: int = 250
    """The policy's games per jitted batch (the last batch is padded, its extra games dropped)."""
    seed: int = 0
    json: str | None = None


def start_states(env, env_params, keys: jax.Array):
    """The ``(obs, states)`` that ``experiments.common.play_episodes`` starts its games from
    for ``keys [E, 2]`` (``episode_keys``' reset keys), leading axis E."""
    reset_keys = jax.vmap(lambda key: episode_keys(key)[0])(keys)
    return env.batch_reset(reset_keys, env_params)


def policy_outcomes(trainer: Trainer, params, keys: jax.Array, greedy: bool, seed: int):
    """Team 0's outcome (+1 / 0 / -1) per game with the policy ``params`` against the scripted
    team from ``start_states(keys)`` -> ``int32[E]``. ``trainer.config.games_per_batch`` games
    are played per jitted batch; batch ``b`` acts with ``fold_in(PRNGKey(seed + 1), b)``."""
    games, episodes = trainer.config.games_per_batch, keys.shape[0]
    padded = -(-episodes // games) * games
    keys = keys[np.minimum(np.arange(padded), episodes - 1)]

    @jax.jit
    def play(batch_keys, act_key):
        start = start_states(trainer.env, trainer.env_params, batch_keys)
        traj = collect(trainer.actor, (params,), act_key, trainer.env_params, greedy, start)
        values = metrics_lib.episode_values("battle", traj, trainer.teams, 0)
        return (values["win"] - values["loss"]).astype(np.int32)

    act_key = jax.random.PRNGKey(seed + 1)
    chunks = [play(keys[b : b + games], jax.random.fold_in(act_key, b // games))
              for b in range(0, padded, games)]  # fmt: skip
    return np.concatenate([np.asarray(c) for c in chunks])[:episodes]


def rates(outcome: np.ndarray) -> dict[str, float]:
    """``{win, draw, loss}`` shares of ``outcome int[E]`` (0.0 each for no games)."""
    if outcome.size == 0:
        return {"win": 0.0, "draw": 0.0, "loss": 0.0}
    return {"win": float(np.mean(outcome > 0)), "draw": float(np.mean(outcome == 0)),
            "loss": float(np.mean(outcome < 0))}  # fmt: skip


def loss_analysis(per_game: dict[str, np.ndarray], references: tuple[str, ...]) -> dict:
    """The paired summaries of ``per_game`` outcomes (``policy_sampled``, ``policy_greedy`` and
    each reference, ``int[E]`` over the same games): each reference's paired difference from the
    sampled policy (terminal reward x100), the others' rates on the sampled policy's lost games,
    and the games both policy modes lose against the count independence would give."""
    sampled, greedy = per_game["policy_sampled"], per_game["policy_greedy"]
    lost = sampled < 0
    reward = lambda o: {"terminal_reward": 100.0 * np.asarray(o, np.float64)}
    return {
        "paired_vs_policy": {
            name: paired_difference(reward(per_game[name]), reward(sampled))["terminal_reward"]
            for name in references
        },
        "on_policy_losses": {
            "games": int(lost.sum()),
            **{name: rates(per_game[name][lost]) for name in ("policy_greedy", *references)},
        },
        "lost_both_modes": {
            "games": int(np.sum(lost & (greedy < 0))),
            "if_independent": float(lost.sum() * np.mean(greedy < 0)),
        },
    }


def main(args: Args) -> dict:
    require(args.episodes >= 1, "episodes", args.episodes, "must be >= 1")
    require(args.batch >= 1, "batch", args.batch, "must be >= 1")
    for name in args.references:
        require(name in REFERENCES, "references", name, f"choose from: {', '.join(REFERENCES)}")
    require_battle_run(args.run)
    trained, runner = load_runner(args.run)
    config = evaluation_config(trained.config, min(args.batch, args.episodes))
    trainer = Trainer(config)
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.episodes)
    params = runner.teams[0].params
    per_game = {
        f"policy_{mode}": policy_outcomes(trainer, params, keys, mode == "greedy", args.seed)
        for mode in ("sampled", "greedy")
    }
    for name in args.references:
        policy = reference_policy(trainer.env, name)
        per_game[name] = np.asarray(outcomes(trainer.env, trainer.env_params, policy, keys))
    players = {name: summarise_outcomes(name, outcome) for name, outcome in per_game.items()}
    analysis = loss_analysis(per_game, args.references)
    lost, both = analysis["on_policy_losses"], analysis["lost_both_modes"]
    print(
        f"on the {lost['games']} games the sampled policy loses: "
        + ", ".join(f"{name} wins {lost[name]['win']:.3f}" for name in lost if name != "games")
        + f"; both policy modes lose {both['games']} (independent: {both['if_independent']:.1f})"
    )
    settings = {k: v for k, v in dataclasses.asdict(args).items() if k != "json"}
    result = {**settings, "trained_batches": int(runner.batch), "players": players, **analysis,
              "per_game": {k: v.tolist() for k, v in per_game.items()}, **machine()}  # fmt: skip
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
