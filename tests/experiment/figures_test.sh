#!/usr/bin/env bash
# Figures (issue 20): a misspelt field in a figure spec or a ready-made figure's options fails
# at the experiment's line, naming the field and the one meant; the ready-made figures name
# the attribution's score and label tokens legibly (figures_exp.lua checks those itself).
# usage: figures_test.sh UPSTREAM_EXE SOURCE_DIR
set -u
exe=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
e=$src/tests/experiment/figures_exp.lua
fails=0
. "$src/tests/experiment/expect.sh"
exp() { "$exe" run "$e" --config "$src/tests/experiment/upstream.cfg" --set results="$tmp/results" \
  --set plots="$tmp/plots" --set cache="$tmp/cache" --quiet "$@"; }

expect 1 "figures_exp\.lua:17: plot\.matrix: unknown field 'row_label' \(did you mean 'row_labels'\?\)" -- exp --set case=matrix_key
expect 1 "figures_exp\.lua:19: plot\.lines: series\[1\]: unknown field 'colour'" -- exp --set case=lines_key
expect 1 "figures_exp\.lua:23: plot_tokens: unknown field 'tokns' \(did you mean 'tokens'\?\)" -- exp --set case=tokens_key
expect 1 "figures_exp\.lua:25: plot_dose: unknown field 'metirc' \(did you mean 'metric'\?\)" -- exp --set case=dose_key
expect 1 "figures_exp\.lua:26: plot_ranking: unknown field 'nmae' \(did you mean 'name'\?\)" -- exp --set case=ranking_key
expect 0 "" -- exp
[ "$fails" -eq 0 ] && echo "figures: all checks passed"
exit $((fails > 0))
