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
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.base import require
from qmarl_jax import graph, nmp, rollout, sharding
from qmarl_jax.checkpoint import (
    Checkpointer,
    check_compatible,
    is_policy_dir,
    latest_batch,
    load_config,
    load_policy_params,
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
        if seed_set_seeds(run_dir) is not None:
            raise ValueError(f"{run_dir} is a seed set: resume it with train_seed_set "
                             "(python -m experiments.train --resume DIR does)")  # fmt: skip
        if is_policy_dir(run_dir):
            raise ValueError(f"{run_dir} is a policy directory (parameters without their optimiser "
                             f"state): it cannot be resumed; start a run from it with "
                             f"--init-from {run_dir}")  # fmt: skip
        saved = load_config(run_dir)
        if config is not None:
            check_compatible(saved, config)
        config = config or saved
    elif config is None:
        raise ValueError("give a config or a run directory to resume")
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
    _host_loop([config], [run_dir], resume is not None, progress, finish)
    return run_dir


#: Marks a seed set's directory and lists its seeds (``train_seed_set``).
SEED_SET_FILE = "seeds.json"


def seed_dir(root: str | Path, seed: int) -> Path:
    """The run directory of ``seed`` inside the seed set ``root``."""
    return Path(root) / f"seed_{seed}"


def seed_set_seeds(run_dir: str | Path) -> list[int] | None:
    """The seeds of a seed-set directory, None for any other directory."""
    path = Path(run_dir) / SEED_SET_FILE
    return json.loads(path.read_text())["seeds"] if path.exists() else None


def require_one_run(field: str, run_dir: str | Path) -> None:
    """Refuse a seed-set directory where one run's (or a policy) directory is needed, naming the
    config or command-line ``field``."""
    seeds = seed_set_seeds(run_dir)
    require(seeds is None, field, str(run_dir),
            f"is a seed set (seeds {seeds}): give one seed's directory, RUN/seed_S")  # fmt: skip


def finished(run_dir: str | Path) -> bool:
    """Whether a run, or every run of a seed set, has its last batch checkpointed (a policy
    directory: its parameters are of the run's last batch)."""
    seeds = seed_set_seeds(run_dir)
    runs = [Path(run_dir)] if seeds is None else [seed_dir(run_dir, s) for s in seeds]
    return all(
        (run / "config.json").exists() and latest_batch(run) == load_config(run).num_batches
        for run in runs
    )


def train_seed_set(
    config: TrainConfig | None = None,
    seeds: int | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    finish: bool = True,
) -> Path:
    """Train the runs of seeds ``config.seed`` ... ``config.seed + seeds - 1`` in one vmapped
    program, and return the seed set's directory.

    Each seed is written to ``run_dir/seed_<S>`` exactly as ``train`` writes a run (config,
    checkpoints, metrics, TensorBoard, curve and GIF), so every tool that takes a run directory
    takes it, and seed ``S`` is the run ``train`` makes with ``seed=S`` (its state starts from
    ``PRNGKey(S)``), up to the float rounding of batched kernels. The set shares one program:
    one ego-graph budget (calibrated on ``config.seed``'s starts and pinned in every seed's
    config), and at each budget-ladder switch one size, the largest any seed needs
    (``graph.one_size_across``). Its seeds are split over ``config.num_devices`` devices (0:
    the most that split them evenly), the games of each seed on one. A chunk whose graphs
    overflowed in any seed is rerun for all with grown budgets; a non-finite loss in any seed
    stops all at the last good checkpoint.

    Args:
      config: the runs' config; with ``resume`` it may be None or differ from the saved one
        only in ``num_batches`` / ``batches_per_chunk``.
      seeds: how many seeds (>= 1); not with ``resume``.
      run_dir: where to write (default ``runs/<scenario>-<time>``).
      resume: a seed set to continue (a kill between two seeds' saves is rolled back to the
        batch every seed has).
      progress: show a progress bar (of the mean over seeds).
      finish: write each seed's learning-curve PNG and policy GIF at the end.

    ``config.init_from`` may name one run (every seed starts from it) or a seed set (each seed
    from the run of its own seed, e.g. the seed set of an earlier stage).

    Raises:
      ValueError: a bad ``seeds``, ``num_devices`` or ``init_from`` (named, before anything is
        written), or an incompatible config on resume.
      NonFiniteLoss: a loss became NaN/inf in some seed.
    """
    if resume is not None:
        run_dir = Path(resume)
        seed_list = seed_set_seeds(run_dir)
        if seed_list is None:
            raise ValueError(f"{run_dir} is not a seed set (no {SEED_SET_FILE}); resume a "
                             "single run with train")  # fmt: skip
        require(seeds is None or seeds == len(seed_list), "seeds", seeds,
                f"the seed set {run_dir} holds seeds {seed_list}")  # fmt: skip
        configs = []
        for seed in seed_list:
            saved = load_config(seed_dir(run_dir, seed))
            if config is not None:
                # Budgets left to calibration keep the ones pinned when the set started.
                kept = [k for k in ("node_budget", "edge_budget") if getattr(config, k) is None]
                requested = dataclasses.replace(
                    config, seed=seed, init_from=saved.init_from,
                    **{k: getattr(saved, k) for k in kept},
                )  # fmt: skip
                check_compatible(saved, requested)
                saved = requested
            configs.append(saved)
    else:
        if config is None:
            raise ValueError("give a config or a seed set to resume")
        require(seeds is not None and seeds >= 1, "seeds", seeds, "must be >= 1")
        configs = seed_set_configs(config, seeds)
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)

    def write_marker() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = run_dir / SEED_SET_FILE
        tmp = marker.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"seeds": [c.seed for c in configs]}) + "\n")
        tmp.replace(marker)

    run_dirs = [seed_dir(run_dir, c.seed) for c in configs]
    _host_loop(configs, run_dirs, resume is not None, progress, finish, stacked=True,
               checked=write_marker)  # fmt: skip
    return run_dir


def seed_set_trainer(config: TrainConfig, seeds: int) -> Trainer:
    """The trainer of a seed set of ``seeds`` seeds: on ``sharding.seeds_mesh`` (the seeds
    split over ``config.num_devices`` devices, 0 = the most that split them evenly)."""
    return Trainer(config, sharding.seeds_mesh(seeds, config.num_devices))


def seed_set_configs(config: TrainConfig, seeds: int) -> list[TrainConfig]:
    """Every seed's config of a fresh seed set: ``config`` with its own seed and ``init_from``,
    and the budgets of ``config.seed``'s calibration pinned."""
    nodes, edges = rollout.budgets(config, envs.make_env(config.env_config))
    shared = dataclasses.replace(config, node_budget=nodes, edge_budget=edges)
    sources = None if config.init_from is None else seed_set_seeds(config.init_from)
    configs = []
    for seed in range(config.seed, config.seed + seeds):
        init_from = config.init_from
        if sources is not None:
            require(seed in sources, "init_from", init_from,
                    f"the seed set of seeds {sources} has no seed {seed}")  # fmt: skip
            init_from = str(seed_dir(init_from, seed))
        configs.append(dataclasses.replace(shared, seed=seed, init_from=init_from))
    return configs


class _RunFiles:
    """What the host loop keeps in one run directory: the orbax checkpoints, ``metrics.jsonl``
    and the TensorBoard scalars."""

    def __init__(self, run_dir: Path, config: TrainConfig):
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run_dir, config)
        self.run_dir = run_dir
        self.checkpointer = Checkpointer(run_dir)
        self.history: list[dict] = []
        self.board = None

    def open(self, done: int) -> None:
        """Read the history up to batch ``done`` and open the TensorBoard writer."""
        from qmarl_jax.logs import TensorBoard

        self.history = _read_history(self.run_dir / "metrics.jsonl", done)
        self.board = TensorBoard(self.run_dir / "tensorboard")

    def record(self, runner: RunnerState, rows: list[dict]) -> None:
        """Checkpoint ``runner`` and append ``rows`` to the metrics."""
        self.checkpointer.save(int(runner.batch), runner)
        self.history.extend(rows)
        _write_history(self.run_dir / "metrics.jsonl", self.history)
        self.board.write(rows)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
        self.checkpointer.close()


def _host_loop(
    configs: list[TrainConfig],
    run_dirs: list[Path],
    resuming: bool,
    progress: bool,
    finish: bool,
    stacked: bool = False,
    checked: Callable[[], None] = lambda: None,
) -> None:
    """The chunk loop of ``train`` (one run) and ``train_seed_set`` (``stacked``: the runs'
    states stacked on a leading seeds axis and trained by one vmapped program). ``checked`` is
    called once the configs have passed every check, before anything is written."""
    make_trainer = (lambda c: seed_set_trainer(c, len(configs))) if stacked else Trainer
    trainer = make_trainer(configs[0])
    # init_from is checked before anything is written; a resumed run has its own checkpoint.
    starts = [None if resuming else init_params(c, trainer) for c in configs]
    checked()
    files = [_RunFiles(d, c) for d, c in zip(run_dirs, configs, strict=True)]
    saved = [f.checkpointer.latest_batch() if resuming else None for f in files]
    # A kill between two seeds' saves leaves them a chunk apart: go back to the common batch.
    common = None if None in saved else min(saved)
    runners = []
    for f, config, start in zip(files, configs, starts, strict=True):
        runner = trainer.init(jax.random.PRNGKey(config.seed))
        if common is not None:
            f.checkpointer.drop_after(common)
            runner = f.checkpointer.restore(runner, batch=common)
        else:  # batch 0 is a good checkpoint too: a run that fails at once can still resume
            if resuming:  # killed before every seed had saved batch 0: all start again
                f.checkpointer.drop_after(-1)
            start = start if start is not None else init_params(config, trainer)
            if start is not None:
                teams = zip(runner.teams, start, strict=True)
                runner = runner.replace(teams=tuple(t.replace(params=p) for t, p in teams))
            f.checkpointer.save(0, runner)
        runners.append(runner)
    done = common or 0
    if stacked:
        runner = sharding.shard_seeds(stack_runs(runners), trainer.mesh)
    else:
        runner = sharding.replicate(runners[0], trainer.mesh)
    chunk = chunk_program(trainer, stacked)
    stack = len(files) if stacked else None

    from qmarl_jax.logs import ProgressBar

    bar = ProgressBar(configs[0].num_batches, done, enabled=progress)
    for f in files:
        f.open(done)
    try:
        while done < configs[0].num_batches:
            size = min(configs[0].batches_per_chunk, configs[0].num_batches - done)
            start = time.perf_counter()
            next_runner, metrics = jax.block_until_ready(chunk(runner, size))
            seconds = time.perf_counter() - start
            per_run = [_chunk_rows(m, done, seconds) for m in _per_run(metrics, stack)]
            if configs[0].grow_budgets and any(_overflowed(rows) for rows in per_run):
                # Dropping nodes changes the learning problem: rerun the chunk from its saved
                # start with larger budgets (a recompile), so no node is ever lost in training.
                configs = [grown_budgets(c, trainer) for c in configs]
                for f, config in zip(files, configs, strict=True):
                    save_config(f.run_dir, config)
                trainer = make_trainer(configs[0])
                chunk = chunk_program(trainer, stacked)
                bar.write(f"ego-graph budget overflow: budgets raised to "
                          f"{configs[0].node_budget} nodes / {configs[0].edge_budget} edges, "
                          f"rerunning batches {done + 1}-{done + size}")  # fmt: skip
                continue
            for f, rows in zip(files, per_run, strict=True):
                if any(row["nonfinite"] > 0 for row in rows):
                    bad = next(row["batch"] for row in rows if row["nonfinite"] > 0)
                    raise NonFiniteLoss(
                        f"non-finite loss at batch {bad}; stopped. The last good checkpoint "
                        f"(batch {done}) is kept in {f.run_dir}; lower the learning rate and "
                        "resume or restart."
                    )
            runner = next_runner
            for f, run_state, rows in zip(files, _per_run(runner, stack), per_run, strict=True):
                f.record(run_state, rows)
            done += size
            bar.update(_mean_rows(per_run), HEADLINE)
    except KeyboardInterrupt:
        bar.close()
        where = run_dirs[0].parent if stacked else run_dirs[0]
        print(f"\ninterrupted: batch {done} is saved; resume with --resume {where}")
        return
    finally:
        for f in files:
            f.close()
    bar.close()
    if finish:
        from qmarl_jax.report import learning_curve, policy_gif

        for f, config, run_state in zip(files, configs, _per_run(runner, stack), strict=True):
            learning_curve(f.history, config, f.run_dir / "curve.png")
            policy_gif(trainer, run_state, f.run_dir / "policy.gif")


def stack_runs(runners: list[RunnerState]) -> RunnerState:
    """Runner states of one config stacked on a new leading seeds axis (``chunk_program``'s
    ``stacked`` input)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *runners)


def chunk_program(trainer: Trainer, stacked: bool):
    """``(runner, size) -> (runner, metrics [size])``, jitted; ``stacked`` maps it over a
    leading seeds axis of ``runner`` (and of the metrics), split over the trainer's
    ``seed_set_trainer`` mesh."""
    if not stacked:
        return jax.jit(trainer.run_batches, static_argnums=1)

    def run_seeds(runner: RunnerState, size: int):
        one_seed = lambda one: trainer.run_batches(one, size)
        # Each budget-ladder switch runs every seed on the size the fullest one needs.
        return graph.vmap_one_size(one_seed, sharding.SEEDS, sharding.SEEDS)(runner)

    return jax.jit(run_seeds, static_argnums=1)


def _per_run(tree, stack: int | None) -> list:
    """``[tree]``, or with ``stack`` runs stacked on its leading axis, each run's slice."""
    if stack is None:
        return [tree]
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(stack)]


def _mean_rows(per_run: list[list[dict]]) -> list[dict]:
    """Each batch's metrics averaged over the runs (what the progress bar shows)."""
    return [
        {k: float(np.mean([rows[i][k] for rows in per_run])) for k in per_run[0][i]}
        for i in range(len(per_run[0]))
    ]


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
        raise ValueError(f"{field}: the run has no checkpoint and is not a policy directory")
    _, runner = load_runner(source)
    params = tuple(team.params for team in runner.teams)
    key = jax.random.PRNGKey(config.seed)
    if saved.critic_input != config.critic_input:  # the fresh parameters give the shapes too
        wanted = trainer.init(key).teams
        params = tuple(with_critic_input(p, t.params) for p, t in zip(params, wanted, strict=True))
    else:
        wanted = jax.eval_shape(trainer.init, key).teams
    shapes = lambda trees: [jax.tree.map(lambda x: (x.shape, x.dtype), t) for t in trees]
    if shapes(t.params for t in wanted) != shapes(params):
        differ = [
            f"{name}: {getattr(saved, name)!r} there, {getattr(config, name)!r} here"
            for name in (f.name for f in dataclasses.fields(TrainConfig))
            if name != "init_from" and getattr(saved, name) != getattr(config, name)
        ]
        raise ValueError(f"{field}: its network has other parameter shapes; the configs "
                         f"differ in {'; '.join(differ)}")  # fmt: skip
    return params


def with_critic_input(source: dict, fresh: dict) -> dict:
    """``source``'s parameters for the critic input of ``fresh``: the ``team`` summary's layers
    (``nmp.TEAM_CONTEXT_MODULES``) are ``fresh``'s (added, or dropped where ``fresh`` has none);
    every other parameter is ``source``'s."""
    kept = {k: v for k, v in source["params"].items() if k not in nmp.TEAM_CONTEXT_MODULES}
    added = {k: v for k, v in fresh["params"].items() if k in nmp.TEAM_CONTEXT_MODULES}
    return {**source, "params": {**kept, **added}}


def load_runner(run_dir: str | Path) -> tuple[Trainer, RunnerState]:
    """The trainer and the latest checkpointed state of a run (or of a policy directory).

    The checkpoint is restored into the shapes of ``trainer.init`` (traced, not run: nothing is
    initialised or compiled just to be overwritten), on the default device; the trainer runs on
    that device too, whatever ``num_devices`` the run trained with (a seed of a seed set, or a
    run whose games do not split over the devices visible here). A policy directory gives its
    parameters and batch; the rest of its state (optimiser, schedules, key) is zeros.
    """
    config = load_config(Path(run_dir))
    trainer = Trainer(config, sharding.make_mesh(1))
    shapes = jax.eval_shape(trainer.init, jax.random.PRNGKey(config.seed))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    if is_policy_dir(run_dir):
        params, batch = load_policy_params(run_dir, tuple(t.params for t in shapes.teams))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        teams = tuple(t.replace(params=p) for t, p in zip(zeros.teams, params, strict=True))
        runner = zeros.replace(teams=teams, batch=jnp.asarray(batch, zeros.batch.dtype))
        return trainer, jax.device_put(runner, device)
    like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
    checkpointer = Checkpointer(Path(run_dir))
    runner = checkpointer.restore(like)
    checkpointer.close()
    return trainer, runner
