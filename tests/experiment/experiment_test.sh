#!/usr/bin/env bash
# experiments/example.lua end to end on the tiny test model (tests/experiment/upstream.cfg):
# outputs checked against the C API (check.lua), two runs with separate caches give identical
# tables, a run never reuses another's directory, and a run stopped part-way resumes from the
# grid cache with the same tables.
# usage: experiment_test.sh UPSTREAM_EXE SOURCE_DIR
set -u
exe=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
run() { # run CACHE RUN_ID [extra args]: the example with everything under $tmp
  local cache=$1 id=$2; shift 2
  "$exe" run "$src/experiments/example.lua" --config "$src/tests/experiment/upstream.cfg" \
    --set results="$tmp/results" --set plots="$tmp/plots" --set cache="$tmp/$cache" --run-id "$id" "$@"
}
R=$tmp/results/example P=$tmp/plots/example
tables="prompts ranking tokens steering summary direction_selection"

run cacheA a --quiet || bad "run a failed"
"$exe" "$src/tests/experiment/check.lua" "$src" "$R/a" "$P/a" || bad "check.lua on run a"

# Determinism: a second run computing everything afresh gives the same bytes.
run cacheB b --quiet || bad "run b failed"
for t in $tables; do cmp -s "$R/a/$t.csv" "$R/b/$t.csv" || bad "$t.csv differs between two runs"; done

# A run never overwrites another.
out=$(run cacheA a --quiet 2>&1) && bad "reusing run id a succeeded"
grep -q "exists already" <<<"$out" || bad "reused run id: $out"
"$exe" run "$src/experiments/example.lua" --config "$src/tests/experiment/upstream.cfg" --quiet \
  --set results="$tmp/results" --set plots="$tmp/plots" --set cache="$tmp/cacheA" || bad "default run id 1"
"$exe" run "$src/experiments/example.lua" --config "$src/tests/experiment/upstream.cfg" --quiet \
  --set results="$tmp/results" --set plots="$tmp/plots" --set cache="$tmp/cacheA" || bad "default run id 2"
n=$(ls "$R" | wc -l)
[ "$n" -eq 4 ] || bad "expected 4 run directories, found $n: $(ls "$R")"

# Interrupted: the grid (batches of 4 cells) stops after 4 computed cells, as a killed run would;
# what was written stays. The resumed run forms the same batches, so its tables equal those of
# a run never stopped (d) bit for bit (a run with other batches agrees to float rounding only).
out=$(UPSTREAM_STOP_AFTER_CELLS=4 run cacheC c1 --set batch=4 2>&1) && bad "stopped run exited 0"
grep -q "interrupted" <<<"$out" || bad "stopped run: $out"
grep -q '"status": "running"' "$R/c1/manifest.json" || bad "stopped run's manifest is not 'running'"
[ -s "$R/c1/ranking.csv" ] || bad "stopped run lost its ranking table"
ncells=$(find "$tmp/cacheC/grid" -name '*.json' | wc -l)
[ "$ncells" -ge 4 ] || bad "stopped run cached $ncells cells"
out=$(run cacheC c2 --set batch=4 2>&1) || bad "resumed run failed: $out"
run cacheD d --set batch=4 --quiet || bad "run d failed"
grep -Eq "[1-9][0-9]* from the cache" <<<"$out" || bad "resumed run read nothing from the cache: $out"
grep -Eq '"cached": [1-9]' "$R/c2/manifest.json" || bad "resumed run's manifest records no cached cells"
for t in $tables; do cmp -s "$R/d/$t.csv" "$R/c2/$t.csv" || bad "$t.csv of the resumed run differs"; done

[ "$fails" -eq 0 ] && echo "experiment test passed"
exit $((fails > 0))
