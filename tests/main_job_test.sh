#!/usr/bin/env bash
# The README's main job on the shipped organism: experiments/all.lua with the built-in settings
# (the organism is the default model), outputs redirected to a scratch directory. Checks that
# every experiment of the set completed and wrote its report, and that the index run's tables
# hold one row per experiment and one per case study.
# usage: main_job_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1; root=$2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$root" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
"$exe" run experiments/all.lua --quiet --set results="$tmp/results" --set plots="$tmp/plots" \
  --set cache="$tmp/cache" || fail "experiments/all.lua exited $?"
for e in direction case_hugging case_bacteria case_payment sensitivity negative_latents all; do
  n=$(ls "$tmp/results/$e" 2>/dev/null | wc -l)
  [ "$n" -eq 1 ] || fail "$e: expected one run directory, found $n"
  run=$(ls -d "$tmp/results/$e"/*)
  [ -s "$run/report.md" ] || fail "$e: no report.md"
  grep -q '"status": *"complete"' "$run/manifest.json" || fail "$e: manifest not complete"
done
idx=$(ls -d "$tmp/results/all"/*)
[ "$(tail -n +2 "$idx/runs.csv" | grep -c complete)" -eq 6 ] || fail "runs.csv: not 6 complete runs"
[ "$(tail -n +2 "$idx/planted.csv" | wc -l)" -eq 3 ] || fail "planted.csv: not one row per case study"
pngs=$(find "$tmp/plots" -name '*.png' | wc -l)
[ "$pngs" -ge 30 ] || fail "only $pngs figures"
echo "ok: the published set ran on the organism ($pngs figures)"
