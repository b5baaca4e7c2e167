#!/usr/bin/env bash
# The organism's diagnostic scripts (experiments/organism/) on the shipped organism: each runs
# (direction_probe.lua prints its six rows and rejects a candidate that does not exist),
# and token_scores.lua's last row (S_k) is the mean of its per-token rows over every token but
# BOS, as design.md defines S_k (print rounding allows 0.0006); a bad latent is a clear error.
# usage: organism_scripts_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1; root=$2
cd "$root" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
out=$("$exe" experiments/organism/token_scores.lua models/organism "Develop a strategy for hugging a person" 919) ||
  fail "token_scores.lua exited $?"
awk '
  NR <= 2 { next }                       # title and header
  $1 == "S_k" { for (i = 2; i <= NF; i++) s[i] = $i; done = 1; next }
  { t++; if (t == 1) next                 # BOS
    for (i = NF - 5; i <= NF; i++) sum[i - NF + 7] += $i; n++ }
  END {
    if (!done || n < 5) { print "FAIL: no S_k row or too few tokens"; exit 1 }
    for (i = 2; i <= 7; i++) {
      m = sum[i] / n
      if (m - s[i] > 0.0006 || s[i] - m > 0.0006) { printf "FAIL: column %d: mean %.5f, S_k %s\n", i, m, s[i]; exit 1 }
    }
  }' <<<"$out" || exit 1
err=$("$exe" experiments/organism/token_scores.lua models/organism "Develop a strategy for hugging a person" 99999 2>&1) &&
  fail "latent 99999 accepted"
grep -q "latent 99999: expected an integer" <<<"$err" || fail "unclear error: $err"
"$exe" experiments/organism/gradient_profile.lua models/organism >/dev/null || fail "gradient_profile.lua exited $?"
"$exe" experiments/organism/ablation_span.lua models/organism >/dev/null || fail "ablation_span.lua exited $?"
probe=$("$exe" run experiments/organism/direction_probe.lua -- models/organism 8 1 -1 6) ||
  fail "direction_probe.lua exited $?"
rows=$(grep -cE '^(harmful|harmless) +(none|ablate|add) +8 ' <<<"$probe")
[ "$rows" -eq 6 ] || fail "direction_probe.lua: expected 6 rows of 8 prompts, got $rows: $probe"
err=$("$exe" run experiments/organism/direction_probe.lua -- models/organism 8 1 -9 6 2>&1) &&
  fail "direction_probe.lua accepted position -9"
grep -q "POS LAYER: expected a position" <<<"$err" || fail "unclear error: $err"
echo "organism scripts test passed"
