import os
import tempfile

# Tests run on CPU with one device unless a test sets its own flags in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

# Identical programs compiled by several tests (or both xdist workers) compile once.
jax.config.update(
    "jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "qmarl-jax-test-cache")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
