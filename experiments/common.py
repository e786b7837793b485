"""Small helpers shared by the experiment entry points (episodes of fixed controllers, timing,
memory, JSON output)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from envs.base import require
from qmarl_jax.checkpoint import load_config
from qmarl_jax.config import TrainConfig


def add_world_size_arguments(parser) -> None:
    """``--num-agents`` and ``--density`` of the scripts that play a run in a resized world."""
    parser.add_argument(
        "--num-agents",
        type=int,
        default=None,
        help="play at another scale (nearest preset's density)",
    )
    parser.add_argument(
        "--density",
        type=float,
        default=None,
        help="with --num-agents: agents per cell of the resized world",
    )


@dataclasses.dataclass
class ReferenceArgs:
    """Settings of a reference-policy script (``experiments.*_reference``)."""

    preset: str = "tiny"
    """Scenario preset (tiny = the paper's sizes)."""
    episodes: int = 2000
    seed: int = 0
    json: str | None = None


def require_planner_settings(args) -> None:
    """Refuse bad planner settings of a reference script's ``args`` (``lookahead_candidates``,
    ``lookahead_horizon``, ``lookahead_episodes`` out of ``episodes``) before anything is played.
    """
    for name in ("lookahead_candidates", "lookahead_horizon"):
        require(getattr(args, name) >= 1, name, getattr(args, name), "must be >= 1")
    require(0 <= args.lookahead_episodes <= args.episodes, "lookahead_episodes",
            args.lookahead_episodes, f"must be in 0..episodes ({args.episodes})")  # fmt: skip


def save_references(args: ReferenceArgs, rows: dict) -> dict:
    """The result of a reference-policy script (``rows`` per reference, every setting of
    ``args`` and the machine), written to ``args.json`` when given -> the result."""
    settings = {k: v for k, v in dataclasses.asdict(args).items() if k != "json"}
    result = {**settings, "references": rows, **machine()}
    write_json(args.json, result)
    return result


def require_battle_run(run: str) -> TrainConfig:
    """Refuse a run that is not Battle learning team 0 alone, naming the field, from its saved
    config (before anything is restored or compiled) -> that config."""
    saved = load_config(Path(run))
    require(saved.scenario == "battle", "run", run,
            f"is a {saved.scenario} run; choose a Battle run")  # fmt: skip
    teams = saved.learning_teams
    allowed = f"learns teams {teams}; choose a run that learns team 0 alone"
    require(teams == (0,), "run", run, allowed)
    return saved


def episode_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(reset_key, steps_key)`` of the episode that ``play_episodes`` plays from ``key``."""
    reset_key, steps_key = jax.random.split(key)
    return reset_key, steps_key


def play_episodes(env, params, act: Callable, keys: jax.Array):
    """One episode of ``env.config.max_steps`` steps (no reset) per key, every agent moved by
    ``act(key, state) -> int32[N]`` -> ``(start, final, rewards float32[E, N] summed over the
    steps)``, jitted and vmapped over ``keys [E, 2]``. Each key splits into a reset key and one
    key per step, which splits into ``act``'s key and the env step's."""

    def episode(key):
        reset_key, steps_key = episode_keys(key)
        _, start = env.reset(reset_key, params)

        def body(carry, key):
            state, total = carry
            act_key, step_key = jax.random.split(key)
            actions = act(act_key, state)
            _, state, reward, _, _, _ = env.step_no_reset(step_key, state, actions, params)
            return (state, total + reward), None

        steps = jax.random.split(steps_key, env.config.max_steps)
        zero = jnp.zeros(env.num_agents, jnp.float32)
        (final, total), _ = jax.lax.scan(body, (start, zero), steps)
        return start, final, total

    return jax.jit(jax.vmap(episode))(keys)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def device_peak_mb() -> float | None:
    """Peak memory the first accelerator allocated, in MiB (None on CPU, which reports none)."""
    stats = jax.devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def machine() -> dict[str, Any]:
    """Where a benchmark ran: JAX backend, device kind, CPU count, host."""
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax_version": jax.__version__,
    }


def time_compiled(run: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Call ``run`` once (compile + warm-up), then ``repeats`` timed calls.

    Returns:
      ``(first_call_seconds, [seconds per timed call])``; outputs are blocked on.
    """
    start = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return first, times


def write_json(path: str | None, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` (atomically), if a path is given."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(target)


def run_module(module: str, *flags: str, failures: list | None = None) -> list[dict]:
    """Run ``python -m module ... --json tmp`` in a fresh process and return its rows.

    With ``failures``, a failing run (e.g. out of memory) is recorded there with the end of its
    error output instead of stopping the benchmark.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, "-m", module, *flags, "--json", str(out)]
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            if failures is None:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
            error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
            failures.append({"command": " ".join(command[1:-2]), "error": error})
            print(f"FAILED: {' '.join(command[1:-2])}: {error}", file=sys.stderr)
            return []
        rows = json.loads(out.read_text())
    return rows if isinstance(rows, list) else [rows]
