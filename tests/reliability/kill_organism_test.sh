#!/usr/bin/env bash
# Real kills of the organism trainer: `upstream organism build --smoke` (a short recipe) is
# started as a child process and killed with SIGKILL at seeded random moments, then rerun to
# the end; every file the build makes (model, tokenizer, direction, SAE, organism.json) must
# equal those of a build never killed, bit for bit. Training resumes from its checkpoint
# (work/train.state, written atomically every 2 steps here); other stages rerun when their
# output is missing.
# usage: kill_organism_test.sh UPSTREAM_BINARY SOURCE_DIR [TRIALS [SEED]]
set -u
exe=$1 src=$2 trials=${3:-5} seed=${4:-20261207}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
spec=$src/experiments/organism/refusal.lua
sets=(--set train.steps=16 --set train.checkpoint_every=2 --set train.eval_every=8 --set train.batch=8
      --set sae.steps=20)
start() { "$exe" organism build "$spec" --out "$tmp/$1" --smoke --quiet "${sets[@]}" >/dev/null 2>&1 & pid=$!; }
outputs="config.json model.safetensors tokenizer.json direction.safetensors organism.json sae/layer_1/params.npz"

"$exe" organism build "$spec" --out "$tmp/ref" --smoke --quiet "${sets[@]}" || { echo "FAIL: the reference build failed"; exit 1; }

# Kill moments: once a seeded stage's file appears (a training checkpoint means mid-training),
# plus a seeded 0-0.5 s; each trial kills twice, the second at a later point than the first.
events=(tokenizer.json work/train.state work/train.state model.safetensors direction.safetensors)
for i in $(seq 1 "$trials"); do
  kills=0
  read -r e1 e2 d1 d2 < <(awk -v s="$seed" -v i="$i" -v n="${#events[@]}" 'BEGIN { srand(s + i);
    a = int(rand() * (n - 1)); b = a + 1 + int(rand() * (n - 1 - a)); printf "%d %d %.3f %.3f\n", a, b, rand() / 2, rand() / 2 }')
  for k in 1 2; do
    if [ "$k" -eq 1 ]; then ev=${events[$e1]} d=$d1; else ev=${events[$e2]} d=$d2; fi
    start "b$i"
    while kill -0 "$pid" 2>/dev/null && [ ! -e "$tmp/b$i/$ev" ]; do sleep 0.01; done
    sleep "$d"
    kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
    wait "$pid" 2>/dev/null
  done
  stages=$(ls "$tmp/b$i" 2>/dev/null | tr '\n' ' ')
  "$exe" organism build "$spec" --out "$tmp/b$i" --smoke --quiet "${sets[@]}" || { bad "trial $i: the rerun failed"; continue; }
  resumed=$(grep -c "resum" "$tmp/b$i/build.log")
  echo "trial $i: $kills kills (left: $stages), log mentions resuming $resumed times"
  for f in $outputs; do
    cmp -s "$tmp/ref/$f" "$tmp/b$i/$f" || bad "trial $i: $f differs from the build never killed"
  done
  [ -e "$tmp/b$i/work/train.state" ] && bad "trial $i: the training checkpoint was left behind"
done

[ "$fails" -eq 0 ] && echo "organism kill test passed ($trials trials, seed $seed)"
exit $((fails > 0))
