#!/usr/bin/env bash
# Stress check for the matmul pool (issue 10): runs the README's demo training back to back, several copies
# at once, with extra CPU load, each under a time limit; a copy that exceeds it counts as a hang.
# Usage: tools/stress/demo-hang.sh [rounds=5] [parallel=3] [limit_s=900] [busy_loaders=1]
# Prints one line per run and a summary "N passed, N failed"; exits 1 if any run hung or failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
parallel=${2:-3}
limit=${3:-900}
loaders=${4:-1}
work=$(mktemp -d /tmp/tuna-stress.XXXXXX)
node tools/build.mjs >/dev/null
loader_pids=()
for ((l = 0; l < loaders; l++)); do
  # A CPU hog that also allocates and frees memory (the suspected trigger: pauses from outside the process).
  node -e 'let a=[];for(;;){a.push(new Float64Array(1<<16));if(a.length>512)a=[];}' &
  loader_pids+=($!)
done
trap 'kill "${loader_pids[@]}" 2>/dev/null' EXIT
passed=0
failed=0
for ((r = 1; r <= rounds; r++)); do
  pids=()
  for ((p = 1; p <= parallel; p++)); do
    out="$work/r$r-p$p"
    ( start=$(date +%s)
      timeout --signal=KILL "$limit" node bin/tuna.js demo --output_dir "$out" >"$out.log" 2>&1
      rc=$?
      echo "$rc $(( $(date +%s) - start ))" >"$out.rc" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  for ((p = 1; p <= parallel; p++)); do
    read -r rc secs <"$work/r$r-p$p.rc"
    if [[ $rc == 0 ]]; then
      passed=$((passed + 1)); what="ok    $(grep -o 'after fine-tuning: *[0-9.]*%' "$work/r$r-p$p.log")"
    elif [[ $rc == 137 ]]; then
      failed=$((failed + 1)); what="HUNG (killed after ${limit} s)"
    else
      failed=$((failed + 1)); what="FAILED exit $rc: $(tail -n 2 "$work/r$r-p$p.log" | tr '\n' ' ')"
    fi
    echo "round $r copy $p: ${secs}s $what"
  done
done
echo "logs in $work"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
