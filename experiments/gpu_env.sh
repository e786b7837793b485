# Sourced by the GPU scripts (gpu_bench.sh, scale_out.sh, ac_variants.sh): on a bare CUDA machine
# whose image has jax/flax/optax/chex/orbax, install the other dependencies from the wheels in
# .whl/ (README, "Scaling out"), unbuffer Python and print the card.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
