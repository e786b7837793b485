import os
import subprocess
import sys
import tempfile

# Set before JAX starts; subprocesses and notebook kernels that tests launch inherit them.
# Tests run on CPU with one device unless a test sets its own flags in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Identical programs compiled by several tests (or both xdist workers) compile once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "qmarl-jax-test-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

# The suite is mostly XLA compiling many small programs that then run for milliseconds, so it
# asks XLA:CPU for cheap code generation: -O0, and the older loop emitters instead of the MLIR
# fusion emitters, which together compile a tiny training batch 2.5x faster than XLA's defaults
# (`python -m experiments.bench_compile`; docs/NOTEBOOK.md, "The test suite's time"). The
# programs compute the same things, only slower (float rounding can differ; no test depends on it).
OPTIMIZATION_FLAG = "--xla_backend_optimization_level=0"
EMITTER_FLAG = "--xla_cpu_use_fusion_emitters=false"  # newer XLA only


def xla_accepts(flag: str) -> bool:
    """Whether this jaxlib's XLA knows ``flag``: an unknown XLA flag aborts the process when
    the backend starts, so it is tried in a child process (about a second, once: xdist workers
    and test subprocesses inherit the result through XLA_FLAGS)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    return subprocess.run(probe, env=env, capture_output=True).returncode == 0


def with_fast_compile(flags: str) -> str:
    """``flags`` plus the two flags above, each unless already set (the emitter flag only where
    this XLA accepts it)."""
    named = {flag.split("=")[0] for flag in flags.split()}
    missing = lambda flag: flag.split("=")[0] not in named
    extra = [OPTIMIZATION_FLAG] if missing(OPTIMIZATION_FLAG) else []
    if missing(EMITTER_FLAG) and xla_accepts(EMITTER_FLAG):
        extra.append(EMITTER_FLAG)
    return " ".join([flags, *extra]).strip()


os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))
