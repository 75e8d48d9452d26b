# Sourced by scripts/gpu-check and scripts/gpu-train-check from the repository root, after OUT is set:
# PY and DEBATE (the CLI) from $PYTHON and $DEBATE, else the project's venv, else python3; `require_cuda NAME`
# exits unless torch sees a CUDA GPU and writes OUT/machine.json; `step NAME SECONDS COMMAND...` runs a command
# with a time limit, logs it to $OUT/NAME.log and records its exit code and seconds in $OUT/steps.tsv.
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
else PY=$PYTHON; fi
if [ -z "${DEBATE:-}" ]; then
  if [ -x .venv/bin/debate ]; then DEBATE=.venv/bin/debate; else DEBATE="$PY -m ui.cli"; fi
fi

require_cuda() {
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "$1: torch sees no CUDA GPU; this script is for a machine with one" >&2; exit 2; }
  "$PY" -c 'import json, torch; from debate.precision import describe; print(json.dumps({"torch": torch.__version__, **describe()}))' \
    > "$OUT/machine.json" 2>&1
}

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
