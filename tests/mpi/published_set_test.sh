#!/usr/bin/env bash
# The published set on the organism (experiments/all.lua) as one process and as 2 MPI ranks:
# every table and the chosen direction must be the same bytes (runs.csv aside: it holds the
# runs' times and directories); the 2-rank manifests record 2 ranks with their hosts; the
# job's output comes once (rank 0 alone speaks). Then `upstream steer` (a latent sweep with
# completions, batches of 4) prints the same table as 1 process and as 3 ranks.
# usage: published_set_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1 src=$2
. "$src/tests/mpi/common.sh"

mkdir -p "$tmp/one" "$tmp/two"
(cd "$tmp/one" && "$exe" run "$src/experiments/all.lua" --run-id r >out.txt 2>err.txt) || { cat "$tmp/one/err.txt"; echo "FAIL: one process"; exit 1; }
(cd "$tmp/two" && mpi_launch 2 "$exe" run "$src/experiments/all.lua" --run-id r >out.txt 2>err.txt) || { cat "$tmp/two/err.txt"; echo "FAIL: 2 ranks"; exit 1; }

n=0
for f in $(cd "$tmp/one" && find results -name '*.csv' -o -name '*.safetensors' | sort); do
  [ "$f" = results/all/r/runs.csv ] && continue
  n=$((n + 1))
  [ -f "$tmp/two/$f" ] || { bad "$f: missing from the 2-rank run"; continue; }
  cmp -s "$tmp/one/$f" "$tmp/two/$f" || bad "$f differs between 1 process and 2 ranks"
done
[ "$n" -ge 30 ] || bad "only $n tables compared"
extra=$(cd "$tmp/two" && find results -name '*.csv' | while read -r f; do [ -f "$tmp/one/$f" ] || echo "$f"; done)
[ -z "$extra" ] || bad "tables only the 2-rank run wrote: $extra"
python3 - "$tmp/two/results" <<'PY' || bad "a 2-rank manifest does not record 2 ranks"
import json, pathlib, sys
for p in pathlib.Path(sys.argv[1]).glob("*/r/manifest.json"):
    m = json.loads(p.read_text())
    assert m["status"] == "complete", (p, m["status"])
    assert m["ranks"]["n"] == 2 and len(m["ranks"]["hosts"]) == 2, (p, m["ranks"])
PY
# Once, not twice: the final line of the set's log names the index run.
c1=$(grep -c "done: " "$tmp/one/err.txt") c2=$(grep -c "done: " "$tmp/two/err.txt")
[ "$c1" -eq "$c2" ] || bad "the 2-rank job logged $c2 'done' lines, one process $c1"

tiny=$src/tests/golden/tiny_f32
steer=("$exe" steer --model "$tiny" --ids 2,17,42,9,8 --refusal-token 5 --latent 1,2,3,4 --layer 1 --alpha -4,4,8
       --sae "$src/tests/fixtures/sae/gemmascope_stored/params.npz" --max-new-tokens 6 --batch 4 --format csv)
"${steer[@]}" >"$tmp/steer1.csv" 2>"$tmp/steer1.err" || bad "steer, one process: $(cat "$tmp/steer1.err")"
mpi_launch 3 "${steer[@]}" >"$tmp/steer3.csv" 2>"$tmp/steer3.err" || bad "steer, 3 ranks: $(cat "$tmp/steer3.err")"
[ "$(wc -l <"$tmp/steer1.csv")" -eq 14 ] || bad "steer printed $(wc -l <"$tmp/steer1.csv") lines, not a header and 13 cells"
cmp -s "$tmp/steer1.csv" "$tmp/steer3.csv" || bad "upstream steer: 3 ranks print another table than 1 process"
[ "$(grep -c "cells" "$tmp/steer3.err")" -eq 1 ] || bad "upstream steer, 3 ranks: the summary is not printed once"

[ "$fails" -eq 0 ] && echo "published set: $n tables and directions the same over 1 process and 2 ranks; upstream steer too (3 ranks)"
[ "$fails" -eq 0 ]
