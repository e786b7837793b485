import os
import tempfile

# Set before JAX starts; subprocesses and notebook kernels that tests launch inherit them.
# Tests run on CPU with one device unless a test sets its own flags in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Identical programs compiled by several tests (or both xdist workers) compile once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "qmarl-jax-test-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
# The suite is mostly LLVM compiling many small programs that then run for milliseconds. At -O0
# a Battle training chunk compiles in 9.2 s instead of 16.6 s (README, "Two commands"). The
# programs compute the same things (float rounding can differ from -O3's; no test depends on
# it), only slower, which the few long-training tests feel.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"])
)
