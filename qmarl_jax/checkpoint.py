"""Orbax checkpoints of a run, with its config stored beside the weights.

Layout of a run directory::

    config.json          the TrainConfig (plus the qmarl-jax version)
    checkpoints/<batch>/ orbax checkpoints of the RunnerState (written to a temporary directory
                         and renamed when complete: a killed save never corrupts the latest one)
    metrics.jsonl        one line per batch

Loading with an incompatible config raises an error naming the fields that differ.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from qmarl_jax.config import TrainConfig, config_from_dict

#: Fields a resumed run may change: its length, its chunking, its devices, and the ego-graph
#: budgets (padding only: the training loop grows them on overflow).
RESUMABLE_FIELDS = ("num_batches", "batches_per_chunk", "num_devices", "node_budget",
                    "edge_budget")  # fmt: skip
CONFIG_FILE = "config.json"


def save_config(run_dir: Path, config: TrainConfig) -> None:
    """Write ``config.json`` atomically."""
    path = Path(run_dir) / CONFIG_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    tmp.replace(path)


def load_config(run_dir: Path) -> TrainConfig:
    """The config stored in a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a qmarl-jax run directory")
    return config_from_dict(json.loads(path.read_text()), source=str(path))


def check_compatible(saved: TrainConfig, requested: TrainConfig) -> None:
    """Raise if ``requested`` cannot continue a run made with ``saved``."""
    differ = [
        f"{f.name}: saved {getattr(saved, f.name)!r}, requested {getattr(requested, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE_FIELDS and getattr(saved, f.name) != getattr(requested, f.name)
    ]
    if differ:
        raise ValueError(
            "incompatible config for this checkpoint (only "
            f"{', '.join(RESUMABLE_FIELDS)} may change on resume): " + "; ".join(differ)
        )


def latest_batch(run_dir: Path) -> int | None:
    """The batch of the latest checkpoint under ``run_dir`` (None: no checkpoint)."""
    checkpointer = Checkpointer(run_dir)
    try:
        return checkpointer.latest_batch()
    finally:
        checkpointer.close()


class Checkpointer:
    """Saves and restores RunnerStates under ``run_dir/checkpoints`` (keeps the latest two)."""

    def __init__(self, run_dir: Path):
        options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints",
                                             options=options)  # fmt: skip

    def save(self, batch: int, state: Any) -> None:
        """Write the checkpoint of ``batch`` (atomic: temporary directory, then rename)."""
        self.manager.save(batch, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()

    def latest_batch(self) -> int | None:
        return self.manager.latest_step()

    def drop_after(self, batch: int) -> None:
        """Delete the checkpoints of batches after ``batch`` (a run going back to it)."""
        for step in self.manager.all_steps():
            if step > batch:
                self.manager.delete(step)

    def restore(self, like: Any, batch: int | None = None) -> Any:
        """The state saved at ``batch`` (default: the latest), shaped like ``like``."""
        batch = self.latest_batch() if batch is None else batch
        if batch is None:
            raise FileNotFoundError("no checkpoint to restore")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(batch, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.close()
