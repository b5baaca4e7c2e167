#!/usr/bin/env bash
# The organism's diagnostic scripts (experiments/organism/) on the shipped organism: each runs
# (direction_probe.lua prints its six rows and rejects a candidate that does not exist),
# and token_scores.lua's last row (S_k) is the mean of its per-token rows over every token but
# BOS, as docs/method.md §6 defines S_k (print rounding allows 0.0006); a bad latent is a clear error.
# token_latents.lua lists latents active at a token, largest activation first, whose RG equals
# cos(d, g)·|g| (decoder rows have norm 1; 3-decimal printing allows 0.002) and token_scores'
# RG for the same latent and token; a token not in the prompt is a clear error.
# concept_oracle.lua prints one row per layer below the objective's (0..4 on the shipped
# organism), each with the three case studies and ranks among its concepts; bad arguments
# and a directory that is not an organism are clear errors, and `upstream organism eval` says so
# with one prefix.
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
prompt="Develop a strategy for hugging a person"
lat=$("$exe" experiments/organism/token_latents.lua models/organism "$prompt" " hugging") ||
  fail "token_latents.lua exited $?"
awk '
  NR == 2 { g = $4 }
  NR <= 4 { next }
  { n++
    if ($4 <= 0 || (n > 1 && $4 > prev)) { print "FAIL: activations not positive and descending: " $0; bad = 1; exit 1 }
    prev = $4
    d = $6 * g - $7; if (d < 0) d = -d
    if (d > 0.002) { printf "FAIL: latent %s: RG %s but cos(d,g)*|g| = %.4f\n", $1, $7, $6 * g; bad = 1; exit 1 } }
  END { if (bad) exit 1; if (n < 3 || g <= 0) { print "FAIL: too few active latents or no |g|"; exit 1 } }' <<<"$lat" || exit 1
k=$(awk 'NR == 5 { print $1 }' <<<"$lat")
rg_here=$(awk 'NR == 5 { print $7 }' <<<"$lat")
rg_there=$("$exe" experiments/organism/token_scores.lua models/organism "$prompt" "$k" | awk '$1 == "hugging" { print $2 }')
awk -v a="$rg_here" -v b="$rg_there" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b != "" && d <= 0.001) }' ||
  fail "latent $k at hugging: token_latents RG $rg_here, token_scores RG $rg_there"
err=$("$exe" experiments/organism/token_latents.lua models/organism "$prompt" " hug" 2>&1) && fail "token \" hug\" accepted"
grep -q 'TOKEN  hug: expected a position' <<<"$err" || fail "unclear error: $err"
"$exe" experiments/organism/gradient_profile.lua models/organism >/dev/null || fail "gradient_profile.lua exited $?"
"$exe" experiments/organism/ablation_span.lua models/organism >/dev/null || fail "ablation_span.lua exited $?"
probe=$("$exe" run experiments/organism/direction_probe.lua -- models/organism 8 1 -1 6) ||
  fail "direction_probe.lua exited $?"
rows=$(grep -cE '^(harmful|harmless) +(none|ablate|add) +8 ' <<<"$probe")
[ "$rows" -eq 6 ] || fail "direction_probe.lua: expected 6 rows of 8 prompts, got $rows: $probe"
err=$("$exe" run experiments/organism/direction_probe.lua -- models/organism 8 1 -9 6 2>&1) &&
  fail "direction_probe.lua accepted position -9"
grep -q "POS LAYER: expected a position" <<<"$err" || fail "unclear error: $err"
oracle=$("$exe" experiments/organism/concept_oracle.lua models/organism 300) || fail "concept_oracle.lua exited $?"
n=$(sed -n 1p <<<"$oracle" | awk '{ print $3 }')
awk -v n="$n" '
  /^layer / { layers = layers $2 " "
    if (split($0, cs, " [|] ") != 3) { print "FAIL: not three case studies: " $0; bad = 1; exit 1 }
    while (match($0, /(intimacy|biohazard|money_transfer) [0-9]+ /)) {
      split(substr($0, RSTART, RLENGTH), f, " ")
      if (f[2] < 1 || f[2] > n) { print "FAIL: rank " f[2] " outside 1.." n; bad = 1; exit 1 }
      $0 = substr($0, RSTART + RLENGTH); ranks++ } }
  END { if (bad) exit 1
        if (layers != "0 1 2 3 4 " || ranks != 15) { print "FAIL: layers " layers ", ranks " ranks; exit 1 } }' <<<"$oracle" ||
  exit 1
err=$("$exe" experiments/organism/concept_oracle.lua models/organism 0 2>&1) && fail "concept_oracle.lua accepted 0 prompts"
grep -q "N_PROMPTS: expected a positive integer" <<<"$err" || fail "unclear error: $err"
err=$("$exe" experiments/organism/concept_oracle.lua models/organism 5 last 2>&1) && fail "concept_oracle.lua accepted last"
grep -q "POSITIONS: expected all or instruction" <<<"$err" || fail "unclear error: $err"
err=$("$exe" experiments/organism/concept_oracle.lua "$root/experiments" 2>&1) && fail "concept_oracle.lua accepted a non-organism"
grep -q "experiments has no organism.json: not a built organism" <<<"$err" || fail "unclear error: $err"
# The organism command's own errors carry one prefix ("upstream organism: ", not "...: organism: ").
err=$("$exe" organism eval "$root/experiments" 2>&1) && fail "organism eval accepted a non-organism"
[[ $err == "upstream organism: $root/experiments has no organism.json: not a built organism"* ]] ||
  fail "organism eval's error: $err"
echo "organism scripts test passed"
