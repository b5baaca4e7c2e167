#!/usr/bin/env bash
# Errors name where they come from: bad experiment declarations, steps and Lua errors give the
# experiment's file:line; bad settings give the settings file's file:line; bad --set and
# options say which. usage: errors_test.sh UPSTREAM_EXE SOURCE_DIR
set -u
exe=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg=$src/tests/experiment/upstream.cfg
d=$src/tests/experiment/bad
fails=0
. "$src/tests/experiment/expect.sh"
sets=(--set results="$tmp/results" --set plots="$tmp/plots" --set cache="$tmp/cache" --quiet)
exp() { "$exe" run "$@" --config "$cfg" "${sets[@]}"; }

expect 1 "misspelt\.lua:4: experiment: unknown field 'sorce_layers' \(did you mean 'source_layers'\?\)" -- exp "$d/misspelt.lua"
expect 1 "step_field\.lua:6: attribute: unknown field 'promt' \(did you mean 'prompt'\?\)" -- exp "$d/step_field.lua"
expect 1 "wrong_type\.lua:4: experiment: field 'target_layer' must be integer, got string" -- exp "$d/wrong_type.lua"
expect 1 "runtime\.lua:6: attempt to perform arithmetic on a nil value \(field 'no_such_field'\)" -- exp "$d/runtime.lua"
expect 1 "binding\.lua:9: bad argument .*spec.latents\[2\] = 99999 is past the SAE's width: 256 latents, indices 0-255" -- exp "$d/binding.lua"
expect 1 "latent\.lua:8: steer: latents\[2\] = 99999 is past the SAE's width: 256 latents, indices 0-255" -- exp "$d/latent.lua"
expect 1 "no_sae\.lua:5: SAE 'nosuch' is not in the settings' registry" -- exp "$d/no_sae.lua"

# Settings: libconfig's syntax errors and the schema's checks both give file:line.
expect 1 "syntax\.cfg:[34]: syntax error" -- "$exe" run "$src/experiments/example.lua" --config "$d/syntax.cfg" --quiet
expect 1 "unknown_key\.cfg:4: modles: unknown setting \(did you mean 'models'\?\)" -- \
  "$exe" run "$src/experiments/example.lua" --config "$d/unknown_key.cfg" --quiet
expect 1 "wrong_type\.cfg:5: models\.tiny\.path: must be string, got number" -- \
  "$exe" run "$src/experiments/example.lua" --config "$d/wrong_type.cfg" --quiet
expect 1 "neuronpedia_type\.cfg:6: saes\.x\.neuronpedia: must be string, got number" -- \
  "$exe" run "$src/experiments/example.lua" --config "$d/neuronpedia_type.cfg" --quiet
expect 1 "experiment_section\.cfg:6: experiments\.example\.source_layers: must be integers or integer" -- \
  "$exe" run "$src/experiments/example.lua" --config "$d/experiment_section.cfg" --quiet
expect 1 "--set target_layer: must be integer" -- exp "$src/experiments/example.lua" --set target_layer=three
expect 1 "settings file .*nosuch\.cfg does not exist" -- "$exe" run "$src/experiments/example.lua" --config "$tmp/nosuch.cfg"
UPSTREAM_CONFIG=$d/unknown_key.cfg expect 1 "unknown_key\.cfg:4: " -- "$exe" run "$src/experiments/example.lua" --quiet

# --set and options.
expect 1 "--set nosuch: not a param, field or prompt set of experiment 'example', nor a setting; its params: alphas, batch" -- \
  exp "$src/experiments/example.lua" --set nosuch=1
expect 1 "--set topk: .*\(did you mean 'top_k'\?\)" -- exp "$src/experiments/example.lua" --set topk=5
expect 1 "--set thraeds: .*\(did you mean 'threads'\?\)" -- exp "$src/experiments/example.lua" --set thraeds=1
expect 1 "--set models\.nosuch\.path: .*" -- exp "$src/experiments/example.lua" --set models.nosuch.path=1
# --set values are checked against the param's default before anything runs.
expect 1 "--set top_k=abc: must be an integer, like the default 5" -- exp "$src/experiments/example.lua" --set top_k=abc
expect 1 "--set alphas=-1,x: must be a list of numbers \(entry 2, 'x', is not one\), like the default -4,-2,0,2,4" -- \
  exp "$src/experiments/example.lua" --set alphas=-1,x
# Layers name the model's count; an SAE's missing layer names the layers it has; a prompt set or
# file names the user's line.
expect 1 "layers\.lua:7: attribute: source layer 9 is not a layer of model 'tiny' \(4 layers: 0-3\)" -- exp "$d/layers.lua"
expect 1 "layers\.lua:8: SAE 'fixture' has no layer 2; it has layer 1" -- env WHICH=sae "$exe" run "$d/layers.lua" --config "$cfg" "${sets[@]}"
expect 1 "prompt_file\.lua:5: experiment: prompts\.extra: cannot read .*/bad/no_such_prompts\.txt: No such file or directory" -- \
  exp "$d/prompt_file.lua"
expect 1 "layers\.lua:9: no prompt set 'case' \(did you mean 'cases'\?\); the experiment declares cases" -- \
  env WHICH=set "$exe" run "$d/layers.lua" --config "$cfg" "${sets[@]}"
expect 1 "--set threads: must be integer" -- exp "$src/experiments/example.lua" --set threads=many
expect 1 "--set name: the experiment's name cannot be overridden" -- exp "$src/experiments/example.lua" --set name=x
expect 1 "model 'nosuch' is neither in the settings' registry \(tiny(, organism)?|organism, tiny\)" -- \
  exp "$src/experiments/example.lua" --model nosuch
expect 2 "--set takes KEY=VALUE" -- "$exe" run "$src/experiments/example.lua" --set novalue
expect 2 "unknown option '--frobnicate'" -- "$exe" run "$src/experiments/example.lua" --frobnicate
expect 2 "--run-id must be a plain name" -- "$exe" run "$src/experiments/example.lua" --run-id ../x
expect 0 "usage: upstream run" -- "$exe" run --help

# A message for the user comes alone; an error at a code position (a bug) brings its stack,
# and UPSTREAM_TRACEBACK=1 brings it always.
lacks "stack traceback" -- exp "$src/experiments/example.lua" --set nosuch=1
lacks "stack traceback" -- exp "$d/no_sae.lua"
expect 1 "stack traceback:" -- exp "$d/runtime.lua"
UPSTREAM_TRACEBACK=1 expect 1 "stack traceback:" -- exp "$src/experiments/example.lua" --set nosuch=1

# The bindings' option tables: a misspelt field raises with a suggestion at the user's line.
ok() { WHICH=$1 "$exe" run "$d/option_keys.lua" --config "$cfg" "${sets[@]}"; }
expect 1 "option_keys\.lua:7: .*spec: unknown field 'max_new_tokes' \(did you mean 'max_new_tokens'\?\)" -- ok grid
expect 1 "option_keys\.lua:9: .*spec\.interventions\[1\]\.items\[1\]: unknown field 'pont' \(did you mean 'point'\?\)" -- ok item
expect 1 "option_keys\.lua:12: .*opts: unknown field 'socre' \(did you mean 'score'\?\)" -- ok attribute
expect 1 "option_keys\.lua:13: .*opts: unknown field 'hook' \(did you mean 'hooks'\?\)" -- ok run

# A run that fails says so in its manifest: status "failed" and the message (no Lua stack).
exp "$d/latent.lua" --run-id failed_run >/dev/null 2>&1
m=$tmp/results/bad/failed_run/manifest.json
grep -q '"status": "failed"' "$m" || { echo "FAIL failed run's manifest: $(grep status "$m")"; fails=$((fails + 1)); }
grep -q '"error": ".*latent\.lua:8: steer: latents\[2\] = 99999 is past' "$m" ||
  { echo "FAIL failed run's manifest error: $(grep '"error"' "$m")"; fails=$((fails + 1)); }
grep -q 'stack traceback' "$m" && { echo "FAIL failed run's manifest carries a stack"; fails=$((fails + 1)); }

# Outputs land where the user is: under the working directory without a settings file, and
# beside a settings file named by --config or $UPSTREAM_CONFIG; never in the source tree.
mkdir -p "$tmp/work" "$tmp/cfgdir" "$tmp/home"
printf 'local X = require("upstream").experiment{name = "where_test"}\nX:finish()\n' > "$tmp/work/mini.lua"
printf 'threads = 1;\n' > "$tmp/cfgdir/upstream.cfg"
(cd "$tmp/work" && HOME="$tmp/home" "$exe" run mini.lua --quiet) || { echo "FAIL default-location run"; fails=$((fails + 1)); }
ls "$tmp"/work/results/where_test/*/manifest.json >/dev/null 2>&1 && ls -d "$tmp"/work/plots/where_test/* >/dev/null 2>&1 ||
  { echo "FAIL outputs not under the working directory"; fails=$((fails + 1)); }
(cd "$tmp/work" && HOME="$tmp/home" "$exe" run mini.lua --quiet --config "$tmp/cfgdir/upstream.cfg") &&
  (cd "$tmp/work" && HOME="$tmp/home" UPSTREAM_CONFIG="$tmp/cfgdir/upstream.cfg" "$exe" run mini.lua --quiet) ||
  { echo "FAIL --config run"; fails=$((fails + 1)); }
[ "$(ls "$tmp"/cfgdir/results/where_test 2>/dev/null | wc -l)" -eq 2 ] ||
  { echo "FAIL outputs not beside the named settings file"; fails=$((fails + 1)); }
[ -e "$src/results/where_test" ] || [ -e "$src/plots/where_test" ] &&
  { echo "FAIL outputs went to the source tree"; fails=$((fails + 1)); }

[ "$fails" -eq 0 ] && echo "errors test passed"
exit $((fails > 0))
