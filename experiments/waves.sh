# Sourced by the variant scripts (ac_variants.sh, battle_variants.sh): run_waves NAME... calls the
# caller's `run_variant NAME` for PARALLEL names at once; a wave starts only when the time the last
# one took still fits before DEADLINE seconds, so a cut device call keeps whole results. Then it
# prints each log's summary lines and, with PACK=1, packs $OUT's JSONs and logs into one
# $OUT/$PACK_NAME.tgz (for a device call that returns only a few files).
run_waves() {
  local wave=0 start
  while [ $# -gt 0 ]; do
    if [ $((SECONDS + wave * 6 / 5)) -gt "$DEADLINE" ]; then
      echo "skipped (no time for another wave): $*"
      break
    fi
    start=$SECONDS
    for _ in $(seq "$PARALLEL"); do
      [ $# -gt 0 ] || break
      run_variant "$1" &
      shift
    done
    wait
    wave=$((SECONDS - start))
  done
  for log in "$OUT"/*.log; do
    echo "== $log"
    grep "evaluation\|last 50\|Error" "$log"
  done
  if [ -n "${PACK:-}" ]; then
    (cd "$OUT" && tar czf "$PACK_NAME.tgz" ./*.json ./*.log && rm -f ./*.json ./*.log)
  fi
}
