#!/usr/bin/env bash
# experiments/example.lua end to end on the tiny test model (tests/experiment/upstream.cfg):
# outputs checked against the C API (check.lua), two runs with separate caches give identical
# tables, a run never reuses another's directory, and a run stopped part-way resumes from the
# grid cache with the same tables.
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
