"""Average the parameters of several runs of one network into one policy directory (a "model
soup": ``qmarl_jax.policy.average_params``).

    python -m experiments.average_policies --runs A B [C ...] --out DIR [--weights 1 1 2]

Each of ``A B ...`` is a run directory (its latest checkpoint), one seed of a seed set
(``RUN/seed_S``) or a policy directory. They must agree on every field that decides what the
parameters read and how they act, and on what the critic reads
(``qmarl_jax.checkpoint.PARAMETER_FIELDS``: the scenario, the view, the ego-graphs, the network,
the learning teams, ``critic_input``); the error names each field that
differs, before anything is loaded. Training-only fields (rewards, learning rates, games per
batch, seeds) may differ: the usual soup averages fine-tunes of one starting point made with
different settings or seeds.

``DIR`` is a policy directory, read wherever a run is (``experiments.evaluate --run DIR``,
``load_policy``, ``--init-from``): ``config.json`` is the first run's, its batch the largest of
the runs', and ``average.json`` lists the runs and their weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tyro

from envs.base import require
from experiments.common import write_json
from qmarl_jax.checkpoint import (
    PARAMETER_FIELDS,
    POLICY_FILE,
    acting_differences,
    load_config,
    save_policy,
)
from qmarl_jax.loop import load_runner, require_one_run
from qmarl_jax.policy import average_params

SOURCES_FILE = "average.json"


@dataclasses.dataclass
class Args:
    """Averaging settings: runs of one network, their weights and the policy directory to write."""

    runs: tuple[str, ...]
    """Two or more run or policy directories of one network."""
    out: str
    """The policy directory to write (created)."""
    weights: tuple[float, ...] | None = None
    """One positive weight per run (default: equal)."""
    json: str | None = None
    """Also write what was averaged (runs, weights, batch, bytes) as JSON here."""


def check(args: Args) -> None:
    """Refuse bad settings and runs that do not act alike, reading only their configs."""
    require(len(args.runs) >= 2, "runs", list(args.runs), "needs two or more directories")
    if args.weights is not None:
        require(len(args.weights) == len(args.runs), "weights", list(args.weights),
                f"needs one weight per run ({len(args.runs)})")  # fmt: skip
        require(min(args.weights) > 0, "weights", list(args.weights), "must all be > 0")
    sources = {Path(run).resolve() for run in args.runs}
    require(Path(args.out).resolve() not in sources, "out", args.out, "must not be one of --runs")
    for run in args.runs:
        require_one_run("runs", run)
    first = load_config(Path(args.runs[0]))
    for run in args.runs[1:]:
        differ = acting_differences(first, load_config(Path(run)), PARAMETER_FIELDS)
        require(not differ, "runs", run,
                f"has another network than {args.runs[0]} ({'; '.join(differ)})")  # fmt: skip


def main(args: Args) -> dict:
    check(args)
    loaded = [load_runner(run) for run in args.runs]
    by_team = zip(*(tuple(team.params for team in runner.teams) for _, runner in loaded),
                  strict=True)  # fmt: skip
    params = tuple(average_params(trees, args.weights) for trees in by_team)
    batch = max(int(runner.batch) for _, runner in loaded)
    path = save_policy(args.out, loaded[0][0].config, params, batch)
    weights = list(args.weights or [1.0] * len(args.runs))
    out = {"runs": list(args.runs), "weights": weights, "out": args.out, "batch": batch,
           "bytes": path.stat().st_size}  # fmt: skip
    (Path(args.out) / SOURCES_FILE).write_text(json.dumps(out, indent=2) + "\n")
    print(f"mean of {len(args.runs)} runs (weights {weights}) -> {Path(args.out) / POLICY_FILE} "
          f"({out['bytes']:,} bytes)")  # fmt: skip
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
