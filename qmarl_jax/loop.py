"""The thin host loop: runs jitted chunks of batches and does all the I/O between them.

Per chunk: progress bar with live metrics, one JSONL line and TensorBoard scalars per batch, an
atomic orbax checkpoint. A chunk whose ego-graphs overflowed the node or edge budget is rerun
with larger budgets (``grow_budgets``). At the end: a learning-curve PNG and a GIF of the trained
policy.
``resume`` continues a run and gives the same numbers as an uninterrupted one (every batch is a
pure function of the checkpointed state). Ctrl-C exits cleanly after the last saved chunk; a
non-finite loss stops the run with a clear message and keeps the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import jax
import numpy as np

from qmarl_jax import sharding
from qmarl_jax.checkpoint import (
    Checkpointer,
    check_compatible,
    latest_batch,
    load_config,
    save_config,
)
from qmarl_jax.config import TrainConfig
from qmarl_jax.train import RunnerState, Trainer

#: Factor on both ego-graph budgets when a chunk overflowed them (``TrainConfig.grow_budgets``).
BUDGET_GROWTH = 1.5

#: Metrics shown in the progress bar, when present.
HEADLINE = ("score", "win", "terminal_reward", "home_reward", "return/team0", "total_loss")


class NonFiniteLoss(RuntimeError):
    """Training met a non-finite loss; the run directory keeps the last good checkpoint."""


def enable_determinism() -> None:
    """Ask XLA for deterministic kernels (GPU); CPU results are deterministic already."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()


def new_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    """A fresh ``root/<scenario>-<YYYYmmdd-HHMMSS>[-k]`` path, unique on disk; not created here."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{config.scenario}-{stamp}"
    suffix = 1
    while path.exists():
        path = Path(root) / f"{config.scenario}-{stamp}-{suffix}"
        suffix += 1
    return path


def _read_history(path: Path, upto_batch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["batch"] <= upto_batch]


def _write_history(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(path)


def _chunk_rows(metrics: dict, first_batch: int, seconds: float) -> list[dict]:
    host = jax.device_get(metrics)
    count = len(next(iter(host.values())))
    return [
        {"batch": first_batch + i + 1, "seconds": seconds / count,
         **{k: float(np.asarray(v)[i]) for k, v in host.items()}}
        for i in range(count)
    ]  # fmt: skip


def train(
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    finish: bool = True,
) -> Path:
    """Train (or resume) a run and return its directory.

    Args:
      config: the run's config; with ``resume`` it may be None (the saved config is used) or
        differ from the saved one only in ``num_batches`` / ``batches_per_chunk``.
      run_dir: where to write (default ``runs/<scenario>-<time>``).
      resume: a run directory to continue.
      progress: show a progress bar.
      finish: write the learning-curve PNG and the policy GIF at the end.

    Raises:
      NonFiniteLoss: a loss became NaN/inf (the last good checkpoint is kept).
    """
    if resume is not None:
        run_dir = Path(resume)
        saved = load_config(run_dir)
        if config is not None:
            check_compatible(saved, config)
        config = config or saved
    elif config is None:
        raise ValueError("give a config or a run directory to resume")
    trainer = Trainer(config)
    # init_from is checked before anything is written; a resumed run has its own checkpoint.
    start_params = init_params(config, trainer) if resume is None else None
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)

    checkpointer = Checkpointer(run_dir)
    runner = trainer.init(jax.random.PRNGKey(config.seed))
    done = 0
    if resume is not None and checkpointer.latest_batch() is not None:
        runner = checkpointer.restore(runner)
        done = int(runner.batch)
    else:  # batch 0 is a good checkpoint too: a run that fails at once can still resume
        if start_params is None:
            start_params = init_params(config, trainer)
        if start_params is not None:
            teams = zip(runner.teams, start_params, strict=True)
            runner = runner.replace(teams=tuple(t.replace(params=p) for t, p in teams))
        checkpointer.save(0, runner)
    runner = sharding.replicate(runner, trainer.mesh)
    history_path = run_dir / "metrics.jsonl"
    history = _read_history(history_path, done)
    chunk = jax.jit(trainer.run_batches, static_argnums=1)

    from qmarl_jax.logs import ProgressBar, TensorBoard

    bar = ProgressBar(config.num_batches, done, enabled=progress)
    board = TensorBoard(run_dir / "tensorboard")
    try:
        while done < config.num_batches:
            size = min(config.batches_per_chunk, config.num_batches - done)
            start = time.perf_counter()
            next_runner, metrics = jax.block_until_ready(chunk(runner, size))
            rows = _chunk_rows(metrics, done, time.perf_counter() - start)
            if config.grow_budgets and _overflowed(rows):
                # Dropping nodes changes the learning problem: rerun the chunk from its saved
                # start with larger budgets (a recompile), so no node is ever lost in training.
                config = grown_budgets(config, trainer)
                save_config(run_dir, config)
                trainer = Trainer(config)
                chunk = jax.jit(trainer.run_batches, static_argnums=1)
                bar.write(f"ego-graph budget overflow: budgets raised to {config.node_budget} "
                          f"nodes / {config.edge_budget} edges, rerunning batches {done + 1}-"
                          f"{done + size}")  # fmt: skip
                continue
            if any(row["nonfinite"] > 0 for row in rows):
                bad = next(row["batch"] for row in rows if row["nonfinite"] > 0)
                raise NonFiniteLoss(
                    f"non-finite loss at batch {bad}; stopped. The last good checkpoint (batch "
                    f"{done}) is kept in {run_dir}; lower the learning rate and resume or restart."
                )
            runner, done = next_runner, int(next_runner.batch)
            checkpointer.save(done, runner)
            history.extend(rows)
            _write_history(history_path, history)
            board.write(rows)
            bar.update(rows, HEADLINE)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: batch {done} is saved; resume with --resume {run_dir}")
        return run_dir
    finally:
        board.close()
        checkpointer.close()
    bar.close()
    if finish:
        from qmarl_jax.report import learning_curve, policy_gif

        learning_curve(history, config, run_dir / "curve.png")
        policy_gif(trainer, runner, run_dir / "policy.gif")
    return run_dir


def _overflowed(rows: list[dict]) -> bool:
    return any(
        value > 0
        for row in rows
        for name, value in row.items()
        if name.endswith(("_overflow_nodes", "_overflow_edges"))
    )


def grown_budgets(config: TrainConfig, trainer: Trainer) -> TrainConfig:
    """``config`` with both ego-graph budgets fixed at ``BUDGET_GROWTH`` x the trainer's."""
    actor = trainer.actor
    return dataclasses.replace(
        config,
        node_budget=math.ceil(BUDGET_GROWTH * actor.node_budget),
        edge_budget=math.ceil(BUDGET_GROWTH * actor.edge_budget),
    )


def init_params(config: TrainConfig, trainer: Trainer) -> tuple[dict, ...] | None:
    """The learning teams' starting parameters from the latest checkpoint of
    ``config.init_from`` (None when it is not set).

    Raises:
      FileNotFoundError: ``init_from`` is not a run directory.
      ValueError: it has no checkpoint, other learning teams, or parameters of other shapes
        (the message lists the config fields in which the two runs differ).
    """
    if config.init_from is None:
        return None
    source = Path(config.init_from)
    saved = load_config(source)
    field = f"invalid config field 'init_from'={config.init_from!r}"
    if saved.learning_teams != config.learning_teams:
        raise ValueError(f"{field}: its learning teams are {saved.learning_teams}, this run's "
                         f"{config.learning_teams}")  # fmt: skip
    if latest_batch(source) is None:
        raise ValueError(f"{field}: the run has no checkpoint")
    _, runner = load_runner(source)
    shapes = lambda teams: [jax.tree.map(lambda x: (x.shape, x.dtype), t.params) for t in teams]
    wanted = jax.eval_shape(trainer.init, jax.random.PRNGKey(config.seed)).teams
    if shapes(wanted) != shapes(runner.teams):
        differ = [
            f"{name}: {getattr(saved, name)!r} there, {getattr(config, name)!r} here"
            for name in (f.name for f in dataclasses.fields(TrainConfig))
            if name != "init_from" and getattr(saved, name) != getattr(config, name)
        ]
        raise ValueError(f"{field}: its network has other parameter shapes; the configs "
                         f"differ in {'; '.join(differ)}")  # fmt: skip
    return tuple(team.params for team in runner.teams)


def load_runner(run_dir: str | Path) -> tuple[Trainer, RunnerState]:
    """The trainer and the latest checkpointed state of a run.

    The checkpoint is restored into the shapes of ``trainer.init`` (traced, not run: nothing is
    initialised or compiled just to be overwritten), on the default device.
    """
    config = load_config(Path(run_dir))
    trainer = Trainer(config)
    shapes = jax.eval_shape(trainer.init, jax.random.PRNGKey(config.seed))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
    checkpointer = Checkpointer(Path(run_dir))
    runner = checkpointer.restore(like)
    checkpointer.close()
    return trainer, runner
