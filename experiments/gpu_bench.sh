#!/usr/bin/env bash
# GPU numbers for the README (issue 5): `make bench` without the env part, then the 10,000-agent
# default against the CPU's 8-level budget ladder. Runs on a bare CUDA machine whose image has
# jax/flax/optax/chex/orbax; the other dependencies travel as wheels in .whl/ (README, "Scaling out").
#   OUT=bench/gpu bash experiments/gpu_bench.sh
set -u
OUT=${OUT:-bench/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# Each row is saved as soon as it is measured, so a run cut short keeps what it has (an H100
# needed more than 400 s for the whole sweep).
timeout "${SCALING_S:-480}" python3 -m experiments.bench_scaling --skip-env \
  --density-update-chunks 10 --json "$OUT/results_gpu.json" --plot "$OUT/scaling_gpu.png"
# The ladder variant compiles 8 budget sizes (about 95 s on an H200).
timeout "${LADDER_S:-240}" python3 -m experiments.bench_train --num-agents 10000 --repeats 5 \
  --budget-buckets 8 --json "$OUT/train_10000_ladder8.json"
ls -l "$OUT"
