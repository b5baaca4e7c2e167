#!/usr/bin/env bash
# docs/tutorial.md runs as written: every script marked `<!-- tutorial: NAME -->` is extracted
# from the code block after the mark and run on the organism from a scratch working directory
# (outputs must land there), then the claims the text makes about its results are checked.
# usage: tutorial_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1 src=$2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
work=$tmp/work; mkdir -p "$work" "$tmp/home"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Extract: the first ```lua block after each mark.
awk -v dir="$work" '
  /^<!-- tutorial: .* -->$/ { name = $3; want = 1; next }
  want && /^```lua$/ { out = dir "/" name; printf "" > out; inside = 1; want = 0; next }
  inside && /^```$/ { inside = 0; close(out); next }
  inside { print >> out }
' "$src/docs/tutorial.md"
scripts=$(cd "$work" && ls *.lua 2>/dev/null)
[ "$(echo $scripts | wc -w)" -eq 4 ] || fail "expected 4 tutorial scripts, found: $scripts"

for s in $scripts; do
  (cd "$work" && HOME="$tmp/home" "$exe" run "$s" --quiet) > "$tmp/$s.log" 2>&1 || { fail "$s: $(cat "$tmp/$s.log")"; continue; }
done
# The command-line variant the text shows.
(cd "$work" && HOME="$tmp/home" "$exe" run hug.lua --quiet --set top_k=12 --set alphas=-16,0,16) > "$tmp/set.log" 2>&1 ||
  fail "hug.lua with --set: $(cat "$tmp/set.log")"
(cd "$work" && HOME="$tmp/home" "$exe" run hug.lua --quiet --set topk=5 2>&1) | grep -q "did you mean 'top_k'" ||
  fail "--set topk: no suggestion"

run_dir() { ls -d "$work/results/$1"/* 2>/dev/null | head -1; }
for e in hug scores steer_direction projection; do
  d=$(run_dir $e)
  [ -n "$d" ] && grep -q '"status": "complete"' "$d/manifest.json" || fail "$e: no complete run under the working directory"
  [ -n "$(ls "$work/plots/$e"/*/*.png 2>/dev/null)" ] || fail "$e: no figure under the working directory"
done

# The claims in the text.
d=$(run_dir hug)
head -1 "$d/ranking.csv" | grep -q "score_kind" || fail "hug: ranking has no score_kind column"
grep -q ',~' "$d/ranking.csv" || fail "hug: no top-token latent names (~a/b/c) in the ranking"
[ "$(ls "$work/plots/hug"/*/ | head -100 | wc -l)" -ge 4 ] || fail "hug: fewer than four figures"
d=$(run_dir scores)
grep -q '^1,gradient,cosine,1,1$' "$d/agreement.csv" || fail "scores: gradient and cosine do not agree exactly: $(cat "$d/agreement.csv")"
awk -F, '$2 == "gradient" && $3 == "activation" && $4 >= 0.5 { bad = 1 } END { exit bad }' "$d/agreement.csv" ||
  fail "scores: activation agrees with gradient, the text says it does not"
d=$(run_dir steer_direction)
head -1 "$d/steering.csv" | grep -q ',at,' || fail "steer_direction: no at column"
grep -q 'blocks\.6\.hook_resid_pre' "$d/steering.csv" || fail "steer_direction: not added at the direction's hook"
# A harmless prompt (p3, p4) refuses at the largest alpha; a harmful one (p1, p2) stops refusing at the smallest.
python3 - "$d/steering.csv" <<'PY' || fail "steer_direction: the direction does not move refusal as the text says"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
vec = [r for r in rows if r["kind"] == "vector"]
top = max(float(r["alpha"]) for r in vec); low = min(float(r["alpha"]) for r in vec)
ok_add = any(r["prompt"] in ("p3", "p4") and float(r["alpha"]) == top and r["refused"] == "true" for r in vec)
ok_remove = any(r["prompt"] in ("p1", "p2") and float(r["alpha"]) == low and r["refused"] == "false" for r in vec)
sys.exit(0 if ok_add and ok_remove else 1)
PY
[ -e "$src/results/hug" ] || [ -e "$src/results/scores" ] && fail "tutorial outputs went to the source tree"

[ "$fails" -eq 0 ] && echo "tutorial test passed"
exit $((fails > 0))
