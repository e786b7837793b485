#!/usr/bin/env bash
# GPU numbers for the README (issue 5): `make bench` without the env part, then the 10,000-agent
# default on a 4-size budget ladder. Runs on a bare CUDA machine whose image has
# jax/flax/optax/chex/orbax; the other dependencies travel as wheels in .whl/ (README, "Scaling out").
#   OUT=bench/gpu bash experiments/gpu_bench.sh
set -u
OUT=${OUT:-bench/gpu}
mkdir -p "$OUT"
source experiments/gpu_env.sh
# Each row is saved as soon as it is measured, so a run cut short keeps what it has (an H100
# needed more than 400 s for the whole sweep).
timeout "${SCALING_S:-480}" python3 -m experiments.bench_scaling --skip-env \
  --density-update-chunks 10 --json "$OUT/results_gpu.json" --plot "$OUT/scaling_gpu.png"
# The one-piece update (the accelerator default) on 4 budget sizes, the ladder auto gives a
# chunked update there: not re-measured since session 8's H200 (4 sizes compile in about 48 s).
timeout "${LADDER_S:-240}" python3 -m experiments.bench_train --num-agents 10000 --repeats 5 \
  --budget-buckets 4 --json "$OUT/train_10000_ladder4.json"
ls -l "$OUT"
