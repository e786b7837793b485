#!/usr/bin/env bash
# qmarl_ac learner variants on Jungle tiny (the wide_view preset: 5x5 view, 1,200 batches of 32
# games; entropy bonus 0.1), each on SEEDS vmapped seeds by experiments.train_seeds and evaluated
# on 1,000 games at 4 and 8 agents (docs/RESULTS.md). PARALLEL variants run at once (one GPU holds
# several: tiny programs leave it mostly idle); a wave starts only when the time the last one
# took still fits before DEADLINE seconds (experiments/waves.sh), and each run is stopped after
# RUN_LIMIT seconds, so a cut call keeps whole results (and packs them).
#   OUT=results/ac_variants bash experiments/ac_variants.sh          # 6 variants
#   VARIANTS="ts ts_all" SEEDS=3 PARALLEL=1 bash experiments/ac_variants.sh
#   (BATCHES and EPISODES shorten a smoke run; PACK=1 packs the JSONs and logs into one
#   $OUT/ac_variants.tgz, for a device call that returns only a few files)
set -u
OUT=${OUT:-results/ac_variants}
SEEDS=${SEEDS:-8}
PARALLEL=${PARALLEL:-3}
DEADLINE=${DEADLINE:-520}
BATCHES=${BATCHES:-1200}
EPISODES=${EPISODES:-1000}
RUN_LIMIT=${RUN_LIMIT:-3600}
mkdir -p "$OUT"
source experiments/gpu_env.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the card

TWO_TIMESCALE="--lr 0.01 --actor-lr-scale 0.1"  # session 7's steadiest qmarl_ac setting
ALL="--ac-estimator all_actions"
BEST="$TWO_TIMESCALE $ALL --ac-steps 4"  # with entropy 0.7 (ts_all_steps4_ent07): wide_view_ac
LONG="--num-batches $((2 * ${BATCHES:-1200}))"  # the *_long variants: twice the batches
flags() {
  case $1 in
    ts) echo "$TWO_TIMESCALE" ;;
    ts_all) echo "$TWO_TIMESCALE $ALL" ;;
    ts_steps4) echo "$TWO_TIMESCALE --ac-steps 4" ;;
    ts_all_steps4) echo "$BEST" ;;
    ts_all_steps8) echo "$TWO_TIMESCALE $ALL --ac-steps 8" ;;
    ts_all_steps16) echo "$TWO_TIMESCALE $ALL --ac-steps 16" ;;
    ts_all_steps4_ent005) echo "$BEST --entropy-coef 0.05" ;;
    ts_all_steps4_view3) echo "$BEST --view-radius 1" ;;
    all_steps4) echo "$ALL --ac-steps 4" ;;
    ts_all_steps4_dueling) echo "$BEST --q-head dueling" ;;
    ts_all_steps4_ent02) echo "$BEST --entropy-coef 0.2" ;;
    ts_all_steps4_ent03) echo "$BEST --entropy-coef 0.3" ;;
    ts_all_steps4_ent04) echo "$BEST --entropy-coef 0.4" ;;
    ts_all_steps4_ent05) echo "$BEST --entropy-coef 0.5" ;;
    ts_all_steps4_ent07) echo "$BEST --entropy-coef 0.7" ;;
    ts_all_steps8_ent07) echo "$TWO_TIMESCALE $ALL --ac-steps 8 --entropy-coef 0.7" ;;
    ts_all_steps4_ent07_actor02) echo "--lr 0.01 --actor-lr-scale 0.2 $ALL --ac-steps 4 --entropy-coef 0.7" ;;
    ts_all_steps4_ent10) echo "$BEST --entropy-coef 1.0" ;;
    ts_all_steps4_ent03_long) echo "$BEST --entropy-coef 0.3 $LONG" ;;
    ts_all_steps4_ent05_long) echo "$BEST --entropy-coef 0.5 $LONG" ;;
    ts_all_steps4_lam08) echo "$BEST --td-lambda 0.8" ;;
    ts_all_steps4_lam095) echo "$BEST --td-lambda 0.95" ;;
    *) echo "unknown variant '$1'" >&2; return 2 ;;
  esac
}

run_variant() {
  local name=$1 extra
  extra=$(flags "$name") || return 2
  timeout "$RUN_LIMIT" python3 -m experiments.train_seeds --scenario jungle --preset wide_view \
    --algo qmarl_ac --entropy-coef 0.1 --num-batches "$BATCHES" --seeds "$SEEDS" \
    --eval-episodes "$EPISODES" --eval-num-agents 8 $extra \
    --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  echo "$name: rc $? at $SECONDS s"
}

PACK_NAME=ac_variants
source experiments/waves.sh
run_waves ${VARIANTS:-ts ts_all_steps4 ts_all ts_steps4 all_steps4 ts_all_steps4_dueling}
