#!/usr/bin/env bash
# Real kills of a steering run: experiments/example.lua on the tiny checkpoint is started as a
# child process and killed with SIGKILL at seeded random moments, then rerun to the end. The
# final tables must equal those of a run never killed, bit for bit, and the rerun must compute
# exactly the cells the kills left missing (no finished cell recomputed). Then two runs share
# one cache directory at the same time: both finish with the reference tables and the cache
# holds every cell once, each a valid file.
# usage: kill_grid_test.sh UPSTREAM_BINARY SOURCE_DIR [TRIALS [SEED]]
set -u
exe=$1 src=$2 trials=${3:-5} seed=${4:-20261207}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
# batch=1: a rerun forms the same batches whatever a kill left (other batch sizes agree to
# float rounding only; docs/lua-api.md "Determinism").
args=(--config "$src/tests/experiment/upstream.cfg" --quiet --set batch=1 --set n_cases=1
      --set alphas="$(seq -s, -10 10)" --set controls=16)
cmd() { # cmd CACHE RUN_ID: the command line of one run, outputs under $tmp, in the array c
  c=("$exe" run "$src/experiments/example.lua" "${args[@]}" --set results="$tmp/results" --set plots="$tmp/plots"
     --set cache="$tmp/$1" --run-id "$2")
}
run() { cmd "$@"; "${c[@]}"; }
# start CACHE RUN_ID: upstream itself in the background (not a subshell: the kill must reach it)
start() { cmd "$@"; "${c[@]}" >/dev/null 2>&1 & pid=$!; }
cells() { find "$tmp/$1/grid" -name '*.json' 2>/dev/null | wc -l; }
computed() { grep -o '"computed": [0-9]*' "$tmp/results/example/$1/manifest.json" | awk '{n += $2} END {print n + 0}'; }
same_tables() { # same_tables RUN_ID: every CSV equals the reference run's
  local t
  for t in $(cd "$tmp/results/example/ref" && ls *.csv); do
    cmp -s "$tmp/results/example/ref/$t" "$tmp/results/example/$1/$t" || { bad "$1: $t differs from the run never killed"; return; }
  done
}

t0=$(date +%s.%N)
run cache_ref ref || { echo "FAIL: the reference run failed"; exit 1; }
t_ref=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
total=$(cells cache_ref)
echo "reference run: $total cells in ${t_ref}s"

for i in $(seq 1 "$trials"); do
  cache=cache_$i kills=0
  # Two kills per trial: the first at a seeded moment in the first half of the reference run's
  # time (it may land before the grid starts), the second once the cache reaches a seeded
  # number of cells between what the first left and the total (mid-grid).
  r1=$(awk -v s="$seed" -v i="$i" 'BEGIN { srand(s + 10 * i); print rand(), rand() }')
  start "$cache" "t${i}_k1"
  sleep "$(awk -v r="${r1% *}" -v t="$t_ref" 'BEGIN { printf "%.3f", r * t / 2 }')"
  kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
  wait "$pid" 2>/dev/null
  have=$(cells "$cache")
  target=$(awk -v r="${r1#* }" -v h="$have" -v n="$total" 'BEGIN { printf "%d", h + 1 + r * (n - h - 2) }')
  start "$cache" "t${i}_k2"
  while kill -0 "$pid" 2>/dev/null && [ "$(cells "$cache")" -lt "$target" ]; do sleep 0.01; done
  kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
  wait "$pid" 2>/dev/null
  before=$(cells "$cache")
  run "$cache" "t${i}_final" >/dev/null 2>&1 || { bad "trial $i: the rerun failed"; continue; }
  got=$(computed "t${i}_final")
  echo "trial $i: $kills kills, $before of $total cells cached, the rerun computed $got"
  [ "$got" -eq $((total - before)) ] || bad "trial $i: the rerun computed $got cells, not the $((total - before)) missing"
  [ "$(cells "$cache")" -eq "$total" ] || bad "trial $i: the cache holds $(cells "$cache") cells, not $total"
  grep -q '"status": "complete"' "$tmp/results/example/t${i}_final/manifest.json" || bad "trial $i: rerun not complete"
  same_tables "t${i}_final"
done

# Two runs at once on one cache directory.
start cache_shared s1; p1=$pid
start cache_shared s2; p2=$pid
wait "$p1" || bad "shared cache: run s1 failed"
wait "$p2" || bad "shared cache: run s2 failed"
same_tables s1
same_tables s2
[ "$(cells cache_shared)" -eq "$total" ] || bad "shared cache: $(cells cache_shared) cells, not $total"
python3 - "$tmp/cache_shared/grid" <<'PY' || bad "shared cache: a cell file does not parse"
import json, pathlib, sys
for p in pathlib.Path(sys.argv[1]).rglob("*.json"):
    json.loads(p.read_text())
PY

[ "$fails" -eq 0 ] && echo "kill test passed ($trials trials, seed $seed)"
exit $((fails > 0))
