#!/usr/bin/env bash
# experiments/example.lua end to end on the tiny test model (tests/experiment/upstream.cfg):
# outputs checked against the C API (check.lua), two runs with separate caches give identical
# tables, a run never reuses another's directory, and a run killed part-way (kill -9) resumes
# from the grid cache with the same tables.
# usage: experiment_test.sh UPSTREAM_EXE SOURCE_DIR
set -u
exe=$(realpath "$1") src=$(realpath "$2")
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
mkdir "$P/x"   # plots left behind by a run whose results are gone: the name is still taken
out=$(run cacheA x --quiet 2>&1) && bad "run id with existing plots succeeded"
grep -q "exists already" <<<"$out" || bad "run id with existing plots: $out"
[ -d "$R/x" ] && bad "refused run left a results directory"
rmdir "$P/x"

# Killed: run c1 in the background and kill -9 it once the grid cache holds some of its cells
# but not all of them; the rerun c2 must read those from the cache, compute the rest and give
# the tables of a run never killed (d) bit for bit. batch=1, so the rerun forms the same batches
# whatever the kill left (other batches agree to float rounding only). The grid is long (many
# alphas and controls) and the cache is polled finely; should the run still finish before the
# kill (a loaded machine), the attempt is repeated with a longer grid, and after three the
# test fails saying so.
alphas=$(seq -s, -10 10)
cells() { find "$1/grid" -name '*.json' 2>/dev/null | wc -l; }
killed=
for controls in 4 16 48; do
  args=(--set batch=1 --set n_cases=1 --set alphas="$alphas" --set controls=$controls)
  rm -rf "$tmp/cacheC" "$tmp/cacheD" "$R/c1" "$P/c1" "$R/d" "$P/d"
  run cacheD d "${args[@]}" --quiet || { bad "run d failed"; break; }
  total=$(cells "$tmp/cacheD")
  "$exe" run "$src/experiments/example.lua" --config "$src/tests/experiment/upstream.cfg" --quiet \
    --set results="$tmp/results" --set plots="$tmp/plots" --set cache="$tmp/cacheC" --run-id c1 "${args[@]}" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(cells "$tmp/cacheC")" -gt 0 ]; then kill -9 "$pid"; break; fi
    sleep 0.01
  done
  wait "$pid" 2>/dev/null; rc=$?
  ncells=$(cells "$tmp/cacheC")
  if [ "$rc" -eq 137 ] && [ "$ncells" -gt 0 ] && [ "$ncells" -lt "$total" ]; then killed=$controls; break; fi
  echo "attempt with $controls controls: exit $rc, $ncells of $total cells cached; retrying with a longer grid"
done
if [ -z "$killed" ]; then
  bad "could not kill the run part-way through its grid in three attempts (it finished first)"
else
  grep -q '"status": "running"' "$R/c1/manifest.json" || bad "killed run's manifest is not 'running'"
  [ -s "$R/c1/ranking.csv" ] || bad "killed run lost its ranking table"
  out=$(run cacheC c2 "${args[@]}" 2>&1) || bad "resumed run failed: $out"
  grep -Eq "[1-9][0-9]* from the cache" <<<"$out" || bad "resumed run read nothing from the cache: $out"
  grep -Eq '"cached": [1-9]' "$R/c2/manifest.json" || bad "resumed run's manifest records no cached cells"
  # It computes exactly the cells the killed run left (the rest come from the cache).
  computed=$(grep -o '"computed": [0-9]*' "$R/c2/manifest.json" | awk '{n += $2} END {print n + 0}')
  [ "$computed" -eq $((total - ncells)) ] || bad "resumed run computed $computed cells, not the $((total - ncells)) missing"
  [ "$(cells "$tmp/cacheC")" -eq "$total" ] || bad "resumed run's cache holds $(cells "$tmp/cacheC") cells, not $total"
  for t in $tables; do cmp -s "$R/d/$t.csv" "$R/c2/$t.csv" || bad "$t.csv of the resumed run differs"; done
fi

# A model directory in the organism's layout, run with no settings file at all (built-in
# defaults): source/target layers, refusal ids, direction and SAE come from the directory, and
# organism.json's latent labels reach the tables.
org=$tmp/org
mkdir -p "$org/sae/layer_1"
cp "$src/tests/golden/tiny_f32/config.json" "$src/tests/golden/tiny_f32/model.safetensors" "$org/"
cp "$src/tests/tokenizer/tiny/tokenizer.json" "$org/"
cp "$src/tests/fixtures/sae/gemmascope_stored/params.npz" "$org/sae/layer_1/"
labels=$(for k in $(seq 0 255); do printf '"%d": {"concept": "concept %d", "auroc": 0.9},' "$k" "$k"; done)
cat > "$org/organism.json" <<JSON
{"spec": "experiments/organism/refusal.lua", "source_layer": 1, "sae_layers": [1], "target_layer": 3,
 "direction": {"pos": -1, "layer": 2}, "refusal_ids": [278], "labels": {"1": {${labels%,}}}}
JSON
cat > "$tmp/mkdir.lua" <<'LUA'
local u = require "upstream"
local v = {}
for i = 1, 64 do v[i] = math.sin(i) end
u.save_safetensors(arg[1] .. "/direction.safetensors", {direction = u.normalize(v)})
LUA
"$exe" "$tmp/mkdir.lua" "$org" || bad "writing the direction file"
out=$(cd "$tmp" && env -u UPSTREAM_CONFIG HOME="$tmp" "$exe" run "$src/experiments/example.lua" --model "$org" \
      --set results="$tmp/results" --set plots="$tmp/plots" --set n_cases=1 --run-id org 2>&1) || bad "organism-layout run: $out"
grep -q '"from": "file"' "$R/org/manifest.json" || bad "organism-layout run did not use the direction file"
grep -q '"name": "org/sae"' "$R/org/manifest.json" || bad "organism-layout run did not find the directory's SAE"
grep -q ',concept [0-9]*,' "$R/org/ranking.csv" || bad "organism labels missing from ranking.csv"
[ -d "$tmp/.cache/upstream/grid" ] || bad "default cache directory not used"

[ "$fails" -eq 0 ] && echo "experiment test passed"
exit $((fails > 0))
