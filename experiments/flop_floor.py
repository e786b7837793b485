"""The compute floor of a training batch: its FLOPs against this machine's dense-matmul speed.

    python -m experiments.flop_floor --num-agents 10000 --json bench/flop_floor_10000.json

Counts the floating-point operations of one ``bench_train`` batch from XLA's cost analysis of
its loop-free pieces (a whole-program count sees each loop body once): the update's gradient of
each time chunk and the acting network of each step, at the budget size the step or chunk runs
on (``TrainConfig.budget_buckets``: each size's pieces are analysed once and counted per use;
environment and ego-graph construction are integer work and left out). Then times a
chain of ``[rows, width] @ [width, width]`` products, the trunks' typical shape, on this
machine. ``floor_s_per_100_episodes`` is the time the batch's FLOPs would take at that speed:
no implementation of the same network and learner on this machine can beat it by more than
the share of the FLOPs that are not such products. qmarl_ac and mha (the chunked update).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import tyro

from experiments.bench_train import Args as BenchArgs
from experiments.bench_train import make_batch
from experiments.common import machine, write_json
from qmarl_jax import graph
from qmarl_jax.algos import common
from qmarl_jax.rollout import collect, team_batch


@dataclasses.dataclass
class Args(BenchArgs):
    """Floor settings (plus every ``bench_train`` setting)."""

    matmul_rows: int = 18500
    """Rows of the timed matrix product (about the node slots of one 10,000-agent step)."""
    matmul_chain: int = 100
    """Products per timed call."""


def cost_flops(fn, *args) -> float:
    """FLOPs of ``jit(fn)(*args)`` by XLA's cost analysis (loop bodies count once)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def matmul_flops_per_s(rows: int, width: int, chain: int, repeats: int) -> float:
    """Median FLOP/s of ``chain`` dependent ``[rows, width] @ [width, width]`` products (each
    followed by a tanh, so none can be skipped)."""
    x, w = jnp.ones((rows, width)), jnp.full((width, width), 1.0 / width)
    run = jax.jit(lambda x, w: jax.lax.fori_loop(0, chain, lambda _, y: jnp.tanh(y @ w), x))
    jax.block_until_ready(run(x, w))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(x, w))
        times.append(time.perf_counter() - start)
    return chain * 2 * rows * width * width / statistics.median(times)


def batch_flops(args: Args) -> dict:
    """FLOPs of one batch: ``{"update": ..., "acting": ..., "games": ...}``."""
    trainer, runner, _ = make_batch(args)
    if trainer.config.loss_kind != "ac":
        raise ValueError(f"invalid algo={args.algo!r}: choose qmarl_ac or mha")
    params = runner.teams[0].params
    collect_batch = jax.jit(lambda key: collect(trainer.actor, (params,), key, trainer.env_params))
    batch = team_batch(collect_batch(jax.random.PRNGKey(args.seed)), 0, 0, trainer.teams)
    chunks = common.time_chunks(batch, trainer.update_chunks)
    counts = common.loss_counts(batch)
    following = (jnp.zeros(batch.reward.shape[1:], jnp.float32),) * 2  # next V and return
    ladder, num_agents = trainer.actor.ladder, batch.num_agents

    def gradient(params, chunk, following):
        return trainer.sized_chunk_gradient(params, chunk, counts, following)

    def acting(params, features, graphs):
        return trainer.heads.logits(params, features, graphs)

    # The budget size each acting step and each update chunk runs on (graph.on_trimmed_graphs).
    size_of = jax.jit(jax.vmap(lambda g: graph.on_budget_ladder(
        ladder, *graph.budget_use(g, num_agents), lambda *size: jnp.int32(ladder.index(size))
    )))  # fmt: skip
    step_sizes = size_of(common.drop_last(batch.graphs)).tolist()
    chunk_sizes = size_of(chunks.graphs).tolist()
    update = acting_flops = 0.0
    first_chunk = jax.tree.map(lambda x: x[0], chunks)
    one_step = jax.tree.map(lambda x: x[:1], (batch.features, batch.graphs))
    for index, size in enumerate(ladder):
        if index in chunk_sizes:
            sized = graph.at_ladder_size(ladder, first_chunk.graphs, num_agents, size)
            chunk = common.with_graphs(first_chunk, sized)
            update += chunk_sizes.count(index) * cost_flops(gradient, params, chunk, following)
        if index in step_sizes:
            step = (one_step[0], graph.at_ladder_size(ladder, one_step[1], num_agents, size))
            acting_flops += step_sizes.count(index) * cost_flops(acting, params, *step)
    return {
        "update": update,
        "acting": acting_flops,
        "games": trainer.config.games_per_batch,
        "update_chunks": trainer.update_chunks,
        "ladder": [list(size) for size in ladder],
        "step_sizes": step_sizes,
    }


def main(args: Args) -> dict:
    flops = batch_flops(args)
    speed = matmul_flops_per_s(args.matmul_rows, args.width, args.matmul_chain, args.repeats)
    total = flops["update"] + flops["acting"]
    per_100 = 100 / flops["games"]
    row = {
        "scenario": args.scenario, "algo": args.algo, "num_agents": args.num_agents,
        "width": args.width, "depth": args.depth, "games_per_batch": flops["games"],
        "update_chunks": flops["update_chunks"], "budget_ladder": flops["ladder"],
        "step_budget_sizes": flops["step_sizes"],
        "update_gflop_per_batch": flops["update"] / 1e9,
        "acting_gflop_per_batch": flops["acting"] / 1e9,
        "matmul_gflop_per_s": speed / 1e9,
        "floor_s_per_100_episodes": total / speed * per_100, **machine(),
    }  # fmt: skip
    print(f"{args.algo} N={args.num_agents}: {total / 1e9:.1f} GFLOP per batch "
          f"(update {flops['update'] / 1e9:.1f}, acting {flops['acting'] / 1e9:.1f}); dense "
          f"matmul {speed / 1e9:.0f} GFLOP/s here -> at least "
          f"{row['floor_s_per_100_episodes']:.1f} s per 100 episodes")  # fmt: skip
    write_json(args.json, row)
    return row


if __name__ == "__main__":
    main(tyro.cli(Args))
