# Sourced by scripts/gpu-check and scripts/gpu-train-check: `step NAME SECONDS COMMAND...` runs a command with a
# time limit, logs it to $OUT/NAME.log and records its exit code and seconds in $OUT/steps.tsv.
step() {
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local start end rc ms
  start=$(date +%s%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  end=$(date +%s%N)
  ms=$(( (end - start) / 1000000 ))
  printf '%s\t%s\t%d.%03d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >> "$OUT/steps.tsv"
  [ "$rc" = 0 ] || echo "   $name exited $rc (124: over its limit); see $OUT/$name.log"
}
