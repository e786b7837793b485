"""How much ensembling can change a trained policy's actions: each agent's own ego-graph against
the ensemble over every ego-graph holding it.

    python -m experiments.ensemble_disagreement --run RUN_DIR --games 8 --json out.json
    python -m experiments.ensemble_disagreement --run RUN_DIR --num-agents 400 --density 0.16

Plays ``--games`` games with the run's policy (its own ensemble mode, sampled actions) and at every
step compares each alive agent's action distribution from its own ego-graph (``--ensemble none``)
with the ``mean_prob`` ensemble (``qmarl_jax.ensemble.disagreement``): the mean total-variation
distance, over all agent-steps and over those whose agent sits in two or more ego-graphs, its 99th
percentile and maximum, and how often the two distributions' most likely actions differ.
Ensembling can only change play where they differ; whether that helps is the evaluation's
question (``python -m experiments.evaluate --run RUN_DIR --ensemble mean_prob|none``).
"""

from __future__ import annotations

import argparse
import sys

from experiments.common import add_world_size_arguments, machine, write_json


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ensemble_disagreement",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--games", type=int, default=8, help="games played (one batch)")
    add_world_size_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the summary here")
    return parser.parse_args(argv)  # fmt: skip


def measure(run_dir, games: int = 8, num_agents=None, density=None, seed: int = 0) -> dict:
    """Disagreement statistics of the run's first learned team over ``games`` games.

    Returns a dict of floats: ``agent_steps`` (alive agent-steps counted), ``multi_graph_share``
    (share of them whose agent sits in two or more ego-graphs), ``mean_votes``, ``tv_mean``,
    ``tv_mean_multi`` (over the multi-graph agent-steps), ``tv_p99``, ``tv_max``,
    ``argmax_differs`` (share of agent-steps).
    """
    import jax
    import numpy as np

    from qmarl_jax.algos.common import per_node
    from qmarl_jax.ensemble import disagreement
    from qmarl_jax.evaluate import evaluation_config
    from qmarl_jax.loop import load_runner
    from qmarl_jax.rollout import collect, team_batch
    from qmarl_jax.train import Trainer

    if games < 1:
        raise ValueError(f"invalid games={games}; must be >= 1")
    trained, runner = load_runner(run_dir)
    config = evaluation_config(trained.config, games, num_agents, None, None, density)
    trainer = Trainer(config)
    params = tuple(team.params for team in runner.teams)
    team, n = config.learning_teams[0], trainer.env.num_agents

    @jax.jit
    def play(key):
        traj = collect(trainer.actor, params, key, trainer.env_params)
        batch = team_batch(traj, 0, team, trainer.teams)
        logits = trainer.heads.logits(params[0], batch.features, batch.graphs)  # [T+1, E, B, A]
        weight = per_node(batch.team_member, batch.graphs.nodes["agent"]).astype(bool)
        per_step = jax.vmap(jax.vmap(lambda lg, g, w: disagreement(lg, g, n, w)))
        tv, differs, votes = per_step(logits, batch.graphs, weight)
        counted = batch.alive & batch.live[..., None] & batch.team_member & (votes > 0)
        return tv, differs, votes, counted

    tv, differs, votes, counted = map(np.asarray, play(jax.random.PRNGKey(seed)))
    if not counted.any():
        raise ValueError("no agent of the learned team was alive at any step: nothing to measure")
    tv, differs, votes = tv[counted], differs[counted], votes[counted]
    multi = votes >= 2
    return {
        "agent_steps": int(counted.sum()),
        "multi_graph_share": float(multi.mean()),
        "mean_votes": float(votes.mean()),
        "tv_mean": float(tv.mean()),
        "tv_mean_multi": float(tv[multi].mean()) if multi.any() else 0.0,
        "tv_p99": float(np.percentile(tv, 99)),
        "tv_max": float(tv.max()),
        "argmax_differs": float(differs.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        stats = measure(args.run, args.games, args.num_agents, args.density, args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, value in stats.items():
        print(f"  {name:<18} {value:.6g}")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    write_json(args.json, {**settings, **stats, **machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
