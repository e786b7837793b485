#!/usr/bin/env bash
# Battle kickstarting variants (the kickstart preset: rollout's cross-entropy from scratch, 7x7
# view, graph radius 2, kill credit 1.0, 600 batches of 32 games), each on SEEDS vmapped seeds by
# experiments.train_seeds and evaluated on 1,000 games at 14 and 28 agents against the scripted
# team (docs/RESULTS.md, "Kickstarting"). PARALLEL variants run at once on one card; waves,
# DEADLINE, RUN_LIMIT and PACK=1 as in ac_variants.sh (experiments/waves.sh).
#   OUT=results/battle_variants bash experiments/battle_variants.sh     # 4 variants
#   VARIANTS="ks ks_wide" SEEDS=2 BATCHES=10 EPISODES=50 PARALLEL=1 bash experiments/battle_variants.sh
set -u
OUT=${OUT:-results/battle_variants}
SEEDS=${SEEDS:-8}
PARALLEL=${PARALLEL:-4}
DEADLINE=${DEADLINE:-520}
BATCHES=${BATCHES:-600}
EPISODES=${EPISODES:-1000}
RUN_LIMIT=${RUN_LIMIT:-3600}
mkdir -p "$OUT"
source experiments/gpu_env.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the card

flags() {
  case $1 in
    ks) echo "" ;;                                   # the preset itself
    ks_g128) echo "--games-per-batch 128" ;;         # 4x the games per batch
    ks_wide) echo "--width 128" ;;                   # twice the hidden width
    ks_wide_g128) echo "--width 128 --games-per-batch 128" ;; # both: the width needs the data
    ks_deep) echo "--num-blocks 3" ;;                # a third message-passing block
    ks_graph1) echo "--graph-radius 1" ;;            # session 33's recipe: adjacent edges only
    ks_view4) echo "--view-radius 4" ;;              # a 9x9 view, the scripted team's sight
    ks_long) echo "--num-batches $((2 * BATCHES))" ;; # twice the batches
    ks_hold) echo "--kickstart-batches $((10 * BATCHES))" ;; # the teacher's weight stays >= 0.9
    *) echo "unknown variant '$1'" >&2; return 2 ;;
  esac
}

run_variant() {
  local name=$1 extra
  extra=$(flags "$name") || return 2
  timeout "$RUN_LIMIT" python3 -m experiments.train_seeds --scenario battle --preset kickstart \
    --num-batches "$BATCHES" --seeds "$SEEDS" --eval-episodes "$EPISODES" \
    --eval-num-agents 28 $extra --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  echo "$name: rc $? at $SECONDS s"
}

PACK_NAME=battle_variants
source experiments/waves.sh
run_waves ${VARIANTS:-ks ks_g128 ks_wide ks_view4}
