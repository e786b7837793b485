"""Export a run's latest parameters as a policy directory: ``config.json`` and
``policy.msgpack``, without the optimiser state (about 40% of a checkpoint's bytes).

    python -m experiments.export_policy --run RUN --out DIR

A policy directory is read wherever a run's latest parameters are: ``experiments.evaluate --run
DIR`` (the same numbers as the run's), ``load_policy(DIR)``, ``--init-from DIR`` and
``--opponent DIR``. It cannot be resumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from experiments.common import write_json
from qmarl_jax.checkpoint import POLICY_FILE, save_policy
from qmarl_jax.loop import load_runner, require_one_run


@dataclasses.dataclass
class Args:
    """Export settings: a run's latest parameters into a policy directory."""

    run: str
    """A training run directory (one seed of a seed set: its ``seed_S`` directory)."""
    out: str
    """The policy directory to write (created)."""
    json: str | None = None
    """Also write what was exported (source, batch, bytes) as JSON here."""


def main(args: Args) -> dict:
    require_one_run("run", args.run)
    trainer, runner = load_runner(args.run)
    params = tuple(team.params for team in runner.teams)
    path = save_policy(args.out, trainer.config, params, int(runner.batch))
    out = {"run": args.run, "out": args.out, "batch": int(runner.batch),
           "bytes": path.stat().st_size}  # fmt: skip
    print(f"{args.run} (batch {out['batch']}) -> {Path(args.out) / POLICY_FILE} "
          f"({out['bytes']:,} bytes)")  # fmt: skip
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
