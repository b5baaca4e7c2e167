#!/usr/bin/env bash
# One rank of a 2-rank steering job killed mid-grid (SIGKILL, rank 1, once the cache holds a
# third of the cells): the job must end (not hang) with a message naming the rank and its host,
# every cell finished before the kill must be in the cache, and the rerun (2 ranks, same cache)
# must compute only the missing cells and give the tables of one process never killed.
# usage: kill_rank_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1 src=$2
. "$src/tests/mpi/common.sh"
# batch=1, as kill_grid_test.sh: a rerun then forms the same batches whatever the kill left.
args=(--config "$src/tests/experiment/upstream.cfg" --quiet --set batch=1 --set n_cases=1
      --set alphas="$(seq -s, -10 10)" --set controls=16 --set results="$tmp/results" --set plots="$tmp/plots")
cells() { find "$tmp/$1/grid" -name '*.json' 2>/dev/null | wc -l; }
computed() { grep -o '"computed": [0-9]*' "$tmp/results/example/$1/manifest.json" | awk '{n += $2} END {print n + 0}'; }

"$exe" run "$src/experiments/example.lua" "${args[@]}" --set cache="$tmp/cache_ref" --run-id ref >/dev/null 2>&1 ||
  { echo "FAIL: the one-process reference run failed"; exit 1; }
total=$(cells cache_ref)

export UP_KILL_TEST=$tmp
mpi_launch 2 -x UP_KILL_TEST "$exe" run "$src/experiments/example.lua" "${args[@]}" --set cache="$tmp/cache" --run-id killed \
  >"$tmp/out.txt" 2>"$tmp/err.txt" &
launcher=$!
# Rank 1 of this job: the process whose environment has rank 1 and this test's tag.
rank1=""
for _ in $(seq 1 3000); do
  for e in /proc/[0-9]*/environ; do
    { env=$(tr '\0' '\n' <"$e"); } 2>/dev/null || continue
    grep -qx "UP_KILL_TEST=$tmp" <<<"$env" && grep -qx OMPI_COMM_WORLD_RANK=1 <<<"$env" && rank1=${e//[!0-9]/}
  done
  [ -n "$rank1" ] && break
  kill -0 "$launcher" 2>/dev/null || break
  sleep 0.01
done
for _ in $(seq 1 3000); do # up to 30 s for the cache to reach a third of the cells
  [ "$(cells cache)" -ge $((total / 3)) ] && break
  kill -0 "$launcher" 2>/dev/null || break
  sleep 0.01
done
[ -n "$rank1" ] || { cat "$tmp/err.txt"; echo "FAIL: no rank 1 to kill (the job ended first?)"; exit 1; }
kill -9 "$rank1"
for _ in $(seq 1 600); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$launcher" 2>/dev/null; then
  bad "the job still runs 60 s after rank 1 was killed"
  kill -9 "$launcher"
fi
wait "$launcher"; rc=$?
[ "$rc" -ne 0 ] || bad "the job exited 0 after a rank was killed"
host=$(hostname)
grep -q "rank 1" "$tmp/err.txt" || bad "the message does not name rank 1: $(cat "$tmp/err.txt")"
grep -q "$host" "$tmp/err.txt" || bad "the message does not name the host $host: $(cat "$tmp/err.txt")"
before=$(cells cache)
echo "rank 1 killed with $before of $total cells cached; launcher said: $(grep -m1 "rank 1" "$tmp/err.txt")"
[ "$before" -gt 0 ] || bad "nothing finished before the kill is in the cache"

mpi_launch 2 "$exe" run "$src/experiments/example.lua" "${args[@]}" --set cache="$tmp/cache" --run-id rerun \
  >/dev/null 2>"$tmp/err2.txt" || { cat "$tmp/err2.txt"; bad "the rerun failed"; }
got=$(computed rerun)
[ "$got" -eq $((total - before)) ] || bad "the rerun computed $got cells, not the $((total - before)) missing"
for t in $(cd "$tmp/results/example/ref" && ls *.csv); do
  cmp -s "$tmp/results/example/ref/$t" "$tmp/results/example/rerun/$t" || bad "$t differs from the one-process run"
done
[ "$fails" -eq 0 ] && echo "kill one rank: the job ended naming rank 1 on $host; the rerun computed the $got missing cells"
[ "$fails" -eq 0 ]
