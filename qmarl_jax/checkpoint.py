"""Orbax checkpoints of a run, with its config stored beside the weights.

Layout of a run directory::

    config.json          the TrainConfig (plus the qmarl-jax version)
    checkpoints/<batch>/ orbax checkpoints of the RunnerState (written to a temporary directory
                         and renamed when complete: a killed save never corrupts the latest one)
    metrics.jsonl        one line per batch

A **policy directory** (``experiments.export_policy``) holds a run's trained parameters alone:
``config.json`` and ``policy.msgpack`` (each learning team's parameters and the batch they were
trained to, without the optimiser state: about 40% of a checkpoint). Everything that reads a
run's latest parameters reads it too (``loop.load_runner``: evaluation, ``load_policy``,
``--init-from``); it cannot be resumed.

Loading with an incompatible config raises an error naming the fields that differ.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from qmarl_jax.config import TrainConfig, config_from_dict

#: Fields a resumed run may change: its length, its chunking, its devices, and the ego-graph
#: budgets (padding only: the training loop grows them on overflow).
RESUMABLE_FIELDS = ("num_batches", "batches_per_chunk", "num_devices", "node_budget",
                    "edge_budget")  # fmt: skip
#: Fields that decide what a policy's parameters read and how it acts (observation, ego-graphs,
#: network, learning teams): two runs' parameters mean the same only where these agree.
ACTING_FIELDS = ("scenario", "max_steps", "view_radius", "graph_radius", "landmark_sight",
                 "observe_time", "controllers", "algo", "depth", "max_nodes", "width",
                 "num_blocks", "n_rbf", "heads", "q_head")  # fmt: skip
#: Fields that decide the parameter tree: the acting fields and what the critic reads.
PARAMETER_FIELDS = (*ACTING_FIELDS, "critic_input")
CONFIG_FILE = "config.json"
POLICY_FILE = "policy.msgpack"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: a kill mid-write
    leaves the old file (or none), never a partial one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def save_config(run_dir: Path, config: TrainConfig) -> None:
    """Write ``config.json`` atomically."""
    write_atomically(
        Path(run_dir) / CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode()
    )


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


def acting_differences(
    a: TrainConfig, b: TrainConfig, fields: tuple[str, ...] = ACTING_FIELDS
) -> list[str]:
    """``"field: A vs B"`` for every one of ``fields`` (default ``ACTING_FIELDS``) where ``a``
    and ``b`` differ."""
    return [f"{name}: {getattr(a, name)!r} vs {getattr(b, name)!r}" for name in fields
            if getattr(a, name) != getattr(b, name)]  # fmt: skip


def latest_batch(run_dir: Path) -> int | None:
    """The batch of the latest checkpoint under ``run_dir``, or of a policy directory's
    parameters (None: neither)."""
    if is_policy_dir(run_dir):
        return _read_policy(run_dir)["batch"]
    checkpointer = Checkpointer(run_dir)
    try:
        return checkpointer.latest_batch()
    finally:
        checkpointer.close()


def is_policy_dir(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a policy directory (parameters only, see the module docstring)."""
    return (Path(run_dir) / POLICY_FILE).exists()


def save_policy(policy_dir: str | Path, config: TrainConfig, params_by_team: tuple,
                batch: int) -> Path:  # fmt: skip
    """Write a policy directory: ``config.json``, then ``policy.msgpack`` (written to a
    temporary file and renamed, so the file marks a complete directory).

    Args:
      policy_dir: where to write (created; must not hold a run's checkpoints).
      config: the config of the run the parameters come from.
      params_by_team: one parameter tree per learning team (``config.learning_teams``).
      batch: the batches they were trained for.
    """
    policy_dir = Path(policy_dir)
    if (policy_dir / "checkpoints").exists():
        raise ValueError(f"{policy_dir} holds a run's checkpoints: write the policy elsewhere")
    if len(params_by_team) != len(config.learning_teams):
        raise ValueError(f"{len(params_by_team)} parameter trees for learning teams "
                         f"{config.learning_teams}")  # fmt: skip
    policy_dir.mkdir(parents=True, exist_ok=True)
    teams = {str(i): serialization.to_state_dict(jax.device_get(p))
             for i, p in enumerate(params_by_team)}  # fmt: skip
    payload = serialization.msgpack_serialize({"batch": int(batch), "teams": teams})
    save_config(policy_dir, config)
    path = policy_dir / POLICY_FILE
    write_atomically(path, payload)
    return path


def _read_policy(policy_dir: str | Path) -> dict:
    return serialization.msgpack_restore((Path(policy_dir) / POLICY_FILE).read_bytes())


def load_policy_params(policy_dir: str | Path, like: tuple) -> tuple[tuple, int]:
    """A policy directory's ``(params_by_team, batch)``, each team's tree shaped like ``like``.

    Raises:
      ValueError: the file holds other teams or parameters of other shapes than ``like`` (a
        ``config.json`` edited after the export, or a policy of another version).
    """
    path = Path(policy_dir) / POLICY_FILE
    saved = _read_policy(policy_dir)
    teams = saved["teams"]
    if len(teams) != len(like):
        raise ValueError(f"{path} holds {len(teams)} learning teams; its config.json has "
                         f"{len(like)}")  # fmt: skip
    shape = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), tree)
    params = []
    for i, wanted in enumerate(like):
        try:
            team = serialization.from_state_dict(wanted, teams[str(i)])
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: team {i}'s parameters do not fit the network its "
                             f"config.json builds ({error})") from error  # fmt: skip
        if shape(team) != shape(wanted):
            raise ValueError(f"{path}: team {i}'s parameters have other shapes than the "
                             "network its config.json builds")  # fmt: skip
        params.append(team)
    return tuple(params), int(saved["batch"])


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
