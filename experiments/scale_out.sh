#!/usr/bin/env bash
# Learning at scale (README "Scaling out"): train Jungle and Battle with N agents in one world
# (one game per batch: N agents give N ego-graph samples per step), each stage under its own time
# limit and stopped by SIGINT, so a cut run keeps its saved checkpoints and its metrics. Each run
# directory is packed into $OUT/<run>.tgz; evaluate them anywhere with experiments.evaluate
# (--num-agents 4 / 14 for the paper's sizes). On a bare CUDA machine the dependencies the image
# lacks travel as wheels in .whl/ (experiments/gpu_env.sh).
#   OUT=results/scale N=10000 bash experiments/scale_out.sh           # 12 minutes on an H200
#   STAGES="adaptive" OUT=results/scale bash experiments/scale_out.sh   # one of them (3 minutes)
set -u
OUT=${OUT:-results/scale}
N=${N:-10000}
RUNS=${RUNS:-/tmp/scale_runs}
mkdir -p "$OUT" "$RUNS"
source experiments/gpu_env.sh

# train NAME SECONDS ARGS...: one run, stopped by SIGINT after SECONDS, packed into $OUT/NAME.tgz.
train() {
  local name=$1 seconds=$2
  shift 2
  local start=$SECONDS
  timeout -s INT -k 30 "$seconds" python3 -m experiments.train --run-dir "$RUNS/$name" \
    --no-progress --num-agents "$N" --games-per-batch 1 "$@"
  echo "$name: rc $? after $((SECONDS - start)) s"
  tar czf "$OUT/$name.tgz" -C "$RUNS" "$name"
}

# Jungle's wide_view recipe at N agents: plain; with a third of its learning rate and the PPO early
# stop (target_kl); with rsl_rl's KL-adaptive learning rate (desired_kl). At 1,000 agents the plain
# recipe collapsed near batch 90 (docs/RESULTS.md, "Learning at scale"). Budgets start at what
# 1,000 agents grew to (x N / 1,000), so clustering agents cost fewer recompiles. Battle with the
# early stop.
JUNGLE="--scenario jungle --preset wide_view --node-budget $((N * 16 / 10)) --edge-budget $((N * 21 / 10))"
STEADY="--lr 0.001 --target-kl 0.02"
for stage in ${STAGES:-steady plain battle adaptive}; do
  case $stage in
    steady) train "jungle-$N-steady" 210 $JUNGLE $STEADY ;;
    plain) train "jungle-$N-plain" 150 $JUNGLE ;;
    battle) train "battle-$N-steady" 180 --scenario battle $STEADY ;;
    adaptive) train "jungle-$N-dkl01" 170 $JUNGLE --desired-kl 0.01 ;;
    *) echo "unknown stage '$stage'; choose from: steady plain battle adaptive" >&2; exit 2 ;;
  esac
done
ls -l "$OUT"
