"""Run a trained policy at any scale and render it (decentralised inference).

    python -m experiments.rollout --run RUN_DIR --num-agents 10000 --out big.gif

Loads the run's latest parameters with ``qmarl_jax.load_policy`` into an environment of about
``--num-agents`` agents (the nearest preset's density), plays one episode (one jitted scan), prints
the episode's metrics and writes a GIF: the whole grid at 1 pixel per cell when it is larger than
``--max-pixels``, or a ``--crop ROWS COLS`` window.
"""

from __future__ import annotations

import argparse
import sys
import time

from experiments.common import machine, write_json


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.rollout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--num-agents", type=int, default=None)
    parser.add_argument("--out", default="rollout.gif", help="GIF path")
    parser.add_argument(
        "--crop",
        type=int,
        nargs=2,
        default=None,
        metavar=("ROWS", "COLS"),
        help="draw only the top-left ROWS x COLS cells",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=512,
        help="largest image side before cells shrink to one pixel",
    )
    parser.add_argument("--ensemble", default=None)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write timings and metrics here")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import jax
    import numpy as np

    from envs import render
    from qmarl_jax.evaluate import check_choices
    from qmarl_jax.policy import load_policy

    try:
        check_choices(None, args.ensemble)
        start = time.perf_counter()
        policy = load_policy(args.run, args.num_agents, args.ensemble, args.greedy)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    env = policy.env
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    states, length = jax.block_until_ready(
        render.record_episode(env, policy.env_params, policy.act, jax.random.PRNGKey(args.seed))
    )
    play_s = time.perf_counter() - start
    cfg = env.config
    rows, cols = args.crop or (cfg.height, cfg.width)
    crop = (0, 0, min(rows, cfg.height), min(cols, cfg.width))
    cell_px = max(1, args.max_pixels // max(crop[2], crop[3]))
    frames = [render.frame(env, s, cell_px=cell_px, crop=crop)
              for s in render.unstack(states, int(length))]  # fmt: skip
    path = render.save_gif(frames, args.out)
    alive = np.asarray(states.grid.alive[int(length) - 1])
    summary = {
        "run": args.run, "num_agents": env.num_agents, "grid": [cfg.height, cfg.width],
        "steps": int(length) - 1, "alive_at_end": int(alive.sum()),
        "build_s": build_s, "compile_and_play_s": play_s, "gif": str(path),
        "machine": machine(),
    }  # fmt: skip
    print(
        f"{env.num_agents} agents on {cfg.height}x{cfg.width}: {summary['steps']} steps, "
        f"{summary['alive_at_end']} alive at the end; episode {play_s:.1f} s (incl. compile); "
        f"wrote {path} ({len(frames)} frames)"
    )
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
