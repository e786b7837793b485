"""Where a training batch spends its device time, grouped by the source scope of each kernel.

    python -m experiments.profile_train --num-agents 10000 --batches 3 --json prof.json

Compiles one batch (as ``experiments.bench_train`` does), traces ``--batches`` calls with
``jax.profiler``, reads the trace back with ``jax.profiler.ProfileData`` and maps every kernel
(GPU) or XLA op (CPU) to the ``op_name`` of its HLO instruction (the jax name stack: flax module
path, ``transpose(jvp(...))`` for the backward pass). Prints the ``--top`` scopes by time per batch
and writes every row to ``--json``. No TensorBoard needed. On GPU, XLA's command buffers (CUDA
graphs) would report a whole loop body as one op, so they are switched off while profiling
(``--keep-command-buffers`` keeps them, to time the real schedule).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import os
import re
import tempfile

import jax
import tyro
from jax.profiler import ProfileData

from experiments.bench_train import Args as BenchArgs
from experiments.bench_train import make_batch
from experiments.common import machine, write_json

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = ")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_PLUMBING = ("while", "body", "cond", "closed_call", "eval_jaxpr")
_COMPUTATION = re.compile(r"^%(\S+) \(.*\{$")


@dataclasses.dataclass
class Args(BenchArgs):
    """Profile settings (plus every ``bench_train`` setting)."""

    batches: int = 3
    """Batches traced (after one compile-and-warm-up call)."""
    top: int = 30
    """Scopes printed."""
    scope_depth: int = 8
    """Name-stack components kept per scope (the primitive name is always dropped)."""
    hlo: str | None = None
    """Also write the compiled module's optimised HLO text here (``.gz`` compresses it): the
    fusions behind unnamed kernels such as ``copy.27`` or ``loop_pad_fusion``."""
    keep_command_buffers: bool = False
    """GPU: keep XLA's command buffers (a loop body then shows as one op). Applies to the command
    line only: the flag must be set before the backend starts."""


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> jax ``op_name``; a fusion takes its fused root's name (ops with
    no name, e.g. layout copies, are left out and reported under their HLO name).

    Args:
      hlo_text: ``compiled.as_text()`` of an XLA module.
    """
    own, calls, roots = {}, {}, {}
    computation = None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name = match.group(1)
        called = _CALLS.search(line)
        op_name = _OP_NAME.search(line)
        called, op_name = called and called.group(1), op_name and op_name.group(1)
        if called:
            calls[name] = called
        if op_name:
            own[name] = op_name
            is_root = line.lstrip().startswith("ROOT")
            if computation is not None and (is_root or computation not in roots):
                roots[computation] = op_name
    names = dict(own)
    for name, called in calls.items():
        if roots.get(called):
            names.setdefault(name, roots[called])
    return names


def scope(op_name: str, depth: int) -> str:
    """``jit(f)/while/body/ActorCritic/dense/dot_general`` -> the scope without the jit wrapper,
    loop plumbing and primitive, cut to ``depth`` components."""
    if "/" not in op_name:  # an HLO op with no jax name
        return f"hlo:{op_name.rstrip('0123456789.')}"
    parts = [p for p in op_name.split("/")[1:-1] if p not in _PLUMBING]
    return "/".join(parts[:depth]) or "(top level)"


def device_events(profile: ProfileData) -> list[tuple[str, float]]:
    """``(hlo_op, duration_ms)`` of every kernel on the first GPU/TPU, else every XLA op on CPU."""
    planes = list(profile.planes)
    accelerators = [p for p in planes if p.name.startswith("/device:") and "CPU" not in p.name]
    events = []
    for plane in accelerators[:1] or [p for p in planes if p.name == "/host:CPU"]:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" in stats:
                    events.append((str(stats["hlo_op"]), event.duration_ns / 1e6))
    return events


def measure(args: Args) -> dict:
    """Profile ``args.batches`` compiled training batches -> device milliseconds per batch,
    kernels per batch and milliseconds per source op name (``ms_per_op_name``)."""
    trainer, runner, batch = make_batch(args)
    compiled = batch.lower(runner, 1).compile()
    hlo_text = compiled.as_text()
    names = op_names(hlo_text)
    if args.hlo:
        opener = gzip.open if args.hlo.endswith(".gz") else open
        with opener(args.hlo, "wt") as f:
            f.write(hlo_text)
    runner, _ = compiled(runner)
    jax.block_until_ready(runner)
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir):
            for _ in range(args.batches):
                runner, _ = compiled(runner)
            jax.block_until_ready(runner)
        (path,) = glob.glob(f"{log_dir}/**/*.xplane.pb", recursive=True)
        events = device_events(ProfileData.from_file(path))
    per_op = collections.defaultdict(float)
    for op, ms in events:
        per_op[names.get(op, op)] += ms / args.batches
    return {"num_agents": args.num_agents, "algo": args.algo,
            "update_chunks": trainer.update_chunks, "device_ms_per_batch": sum(per_op.values()),
            "kernels_per_batch": len(events) / args.batches,
            "ms_per_op_name": dict(per_op), **machine()}  # fmt: skip


def by_scope(ms_per_op_name: dict[str, float], depth: int) -> list[tuple[str, float]]:
    """Milliseconds per scope (see ``scope``), largest first."""
    totals = collections.defaultdict(float)
    for op_name, ms in ms_per_op_name.items():
        totals[scope(op_name, depth)] += ms
    return sorted(totals.items(), key=lambda item: -item[1])


def main(args: Args) -> dict:
    result = measure(args)
    print(f"{result['algo']} N={result['num_agents']} on {result['device']}: "
          f"{result['device_ms_per_batch']:.1f} ms of kernels per batch, "
          f"{result['kernels_per_batch']:.0f} kernels")  # fmt: skip
    total = result["device_ms_per_batch"]
    for depth in (1, args.scope_depth):
        print(f"-- by scope, {depth} name-stack component(s)")
        for name, ms in by_scope(result["ms_per_op_name"], depth)[: args.top]:
            print(f"{ms:9.3f} ms {100 * ms / total:5.1f}%  {name}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    if not cli_args.keep_command_buffers:  # before the backend starts
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_enable_command_buffer="
    main(cli_args)
