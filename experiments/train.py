"""Train Q-MARL: ``make train SCENARIO=battle`` or

    python -m experiments.train --scenario jungle [--preset paper] [--algo qmarl_ppo] [...]
    python -m experiments.train --resume runs/jungle-20261125-120000

Every field of ``qmarl_jax.config.TrainConfig`` is a flag (``--help`` lists them with their
documentation). Prints the run directory at the end.

``--seeds N`` trains seeds ``--seed`` ... ``--seed + N - 1`` in one vmapped program, a seed set
(``qmarl_jax.loop.train_seed_set``): ``RUN_DIR/seed_<S>`` is the run of seed ``S``, which every
tool that takes a run directory takes. ``--resume`` continues a seed set as it does a run, and
``--init-from`` a seed set starts each seed from the run of its own seed there (one stage of a
recipe after another).
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
    front.add_argument("--seeds", type=int, default=None)
    known, rest = front.parse_known_args(argv)

    from qmarl_jax import loop

    if known.deterministic:
        loop.enable_determinism()
    import tyro

    from qmarl_jax.checkpoint import load_config
    from qmarl_jax.config import preset_config, require_preset_fields

    try:
        seed_set = known.seeds is not None
        if known.resume:
            seeds = loop.seed_set_seeds(known.resume)
            seed_set = seeds is not None
            if known.seeds is not None and not seed_set:
                raise ValueError(f"--seeds={known.seeds}: {known.resume} is a single run, not "
                                 "a seed set; resume it without --seeds")  # fmt: skip
            base = load_config(loop.seed_dir(known.resume, seeds[0]) if seed_set else known.resume)
        else:
            base = preset_config(known.scenario, known.preset)
        config = tyro.cli(type(base), default=base, args=rest,
                          prog="python -m experiments.train")  # fmt: skip
        if not known.resume:
            require_preset_fields(known.preset, config)
        if seed_set:
            train, extra = loop.train_seed_set, {"seeds": known.seeds}
        else:
            train, extra = loop.train, {}
        run_dir = train(config, run_dir=known.run_dir, resume=known.resume,
                        progress=not known.no_progress, **extra)  # fmt: skip
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
