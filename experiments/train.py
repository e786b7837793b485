"""Train Q-MARL: ``make train SCENARIO=battle`` or

    python -m experiments.train --scenario jungle [--preset paper] [--algo qmarl_ppo] [...]
    python -m experiments.train --resume runs/jungle-20261125-120000

Every field of ``qmarl_jax.config.TrainConfig`` is a flag (``--help`` lists them with their
documentation). Prints the run directory at the end.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No prefix matching: `--seed` (a TrainConfig flag) must not be read as a front flag.
    front = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    front.add_argument("--scenario", default="battle")
    front.add_argument("--preset", default="default")
    front.add_argument("--resume", default=None)
    front.add_argument("--run-dir", default=None)
    front.add_argument("--no-progress", action="store_true")
    front.add_argument("--deterministic", action="store_true")
    known, rest = front.parse_known_args(argv)

    from qmarl_jax import loop

    if known.deterministic:
        loop.enable_determinism()
    import tyro

    from qmarl_jax.checkpoint import load_config
    from qmarl_jax.config import preset_config, require_preset_fields

    try:
        if known.resume:
            base = load_config(known.resume)
        else:
            base = preset_config(known.scenario, known.preset)
        config = tyro.cli(type(base), default=base, args=rest,
                          prog="python -m experiments.train")  # fmt: skip
        if not known.resume:
            require_preset_fields(known.preset, config)
        run_dir = loop.train(config, run_dir=known.run_dir, resume=known.resume,
                             progress=not known.no_progress)  # fmt: skip
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except loop.NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
