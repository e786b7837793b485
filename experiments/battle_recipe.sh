#!/usr/bin/env bash
# Battle's best recipe (docs/RESULTS.md, "Each agent's own rollouts as Battle's teacher") on SEEDS
# seeds, each stage one seed set (`experiments.train --seeds`): stage1 the `kickstart` preset,
# stage2 and stage3 the `kickstart_finetune` preset started from the stage before (each seed
# from its own seed). The stages in EVAL (default the last) are evaluated once finished, as the
# issue measures them: 1,000 games against the scripted team, sampled and greedy, at 14 and 28
# agents, the mean over the seeds (OUT/<stage>_<setting>.json).
#
# Rerun the same command to go on: a finished stage or evaluation is skipped and a cut stage
# resumed. With DEADLINE (seconds after the start) a stage still training then gets SIGINT: it
# keeps its last saved chunk and exits cleanly, so a device call's time limit never cuts a save.
#   OUT=runs/recipe FLAGS="--width 128 --games-per-batch 128" DEADLINE=540 bash experiments/battle_recipe.sh
#   OUT=/tmp/r SEEDS=2 BATCHES=2 EPISODES=4 FLAGS="--games-per-batch 2" bash experiments/battle_recipe.sh
set -u
OUT=${OUT:-runs/battle_recipe}
SEEDS=${SEEDS:-3}
FLAGS=${FLAGS:-}        # extra TrainConfig flags for every stage, e.g. --width 128
BATCHES=${BATCHES:-}    # batches per stage (default: the presets', 600 / 300 / 300)
EPISODES=${EPISODES:-1000}
DEADLINE=${DEADLINE:-0} # 0: none
EVAL=${EVAL:-stage3}    # stages to evaluate, e.g. "stage1 stage2 stage3"
mkdir -p "$OUT"
source experiments/gpu_env.sh

finished() { python3 -c "import sys; from qmarl_jax import loop; sys.exit(not loop.finished('$1'))"; }

# Run "$@" until DEADLINE (SIGINT then, SIGKILL 60 s later); false when no time is left.
limited() {
  if [ "$DEADLINE" -eq 0 ]; then "$@"; return; fi
  local left=$((DEADLINE - SECONDS))
  [ "$left" -gt 30 ] || { echo "deadline: not starting $*"; return 1; }
  timeout -s INT -k 60 "$left" "$@"
}

stage() {  # stage NAME FROM PRESET
  local dir=$OUT/$1 from=$2 preset=$3
  if [ -f "$dir/seeds.json" ]; then
    finished "$dir" && return 0
    limited python3 -m experiments.train --resume "$dir" --no-progress
  else
    local init=() batches=()
    [ -n "$from" ] && init=(--init-from "$OUT/$from")
    [ -n "$BATCHES" ] && batches=(--num-batches "$BATCHES")
    # shellcheck disable=SC2086  # FLAGS is a list of flags
    limited python3 -m experiments.train --scenario battle --preset "$preset" --seeds "$SEEDS" \
      --run-dir "$dir" --no-progress "${init[@]}" "${batches[@]}" $FLAGS
  fi
  finished "$dir"
}

evaluate() {  # evaluate STAGE: sampled, greedy, at 14 and 28 agents
  local name args
  for name in sampled greedy sampled_28 greedy_28; do
    [ -f "$OUT/$1_$name.json" ] && continue
    args=(--run "$OUT/$1" --episodes "$EPISODES" --json "$OUT/$1_$name.json")
    case $name in greedy*) args+=(--greedy) ;; esac
    case $name in *_28) args+=(--num-agents 28) ;; esac
    limited python3 -m experiments.evaluate "${args[@]}" >"$OUT/$1_$name.log" 2>&1 || return 1
    tail -n 5 "$OUT/$1_$name.log"
  done
}

step() {  # step NAME FROM PRESET: the stage, then its evaluation when NAME is in EVAL
  stage "$@" || return 1
  case " $EVAL " in *" $1 "*) evaluate "$1" ;; esac
}

step stage1 "" kickstart && step stage2 stage1 kickstart_finetune &&
  step stage3 stage2 kickstart_finetune
status=$?
echo "recipe in $OUT: $( [ $status -eq 0 ] && echo finished || echo 'not finished; rerun to go on') at $SECONDS s"
exit $status
