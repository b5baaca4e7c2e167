#!/usr/bin/env bash
# One rank of a 2-rank steering job killed mid-grid (SIGKILL, once the cache holds a third of
# the cells; rank 1, then in a second job rank 0, the writer): the job must end (not hang) with
# a message naming the rank and its host, every cell finished before the kill must be in the
# cache, and the rerun (2 ranks, same cache) must compute only the missing cells and give the
# tables of one process never killed.
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
host=$(hostname)
trial() { # trial RANK: kill that rank of a 2-rank job mid-grid, then rerun on the same cache
  local victim=$1 cache=cache_k$1 pid="" e env rc before got t
  mpi_launch 2 -x UP_KILL_TEST "$exe" run "$src/experiments/example.lua" "${args[@]}" --set cache="$tmp/$cache" \
    --run-id "killed$victim" >"$tmp/out$victim.txt" 2>"$tmp/err$victim.txt" &
  local launcher=$!
  # The victim: the process whose environment has its rank and this test's tag.
  for _ in $(seq 1 3000); do
    for e in /proc/[0-9]*/environ; do
      { env=$(tr '\0' '\n' <"$e"); } 2>/dev/null || continue
      grep -qx "UP_KILL_TEST=$tmp" <<<"$env" && grep -qx "OMPI_COMM_WORLD_RANK=$victim" <<<"$env" && pid=${e//[!0-9]/}
    done
    [ -n "$pid" ] && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.01
  done
  for _ in $(seq 1 3000); do # up to 30 s for the cache to reach a third of the cells
    [ "$(cells "$cache")" -ge $((total / 3)) ] && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.01
  done
  [ -n "$pid" ] || { cat "$tmp/err$victim.txt"; bad "no rank $victim to kill (the job ended first?)"; return; }
  kill -9 "$pid"
  for _ in $(seq 1 600); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$launcher" 2>/dev/null; then
    bad "the job still runs 60 s after rank $victim was killed"
    kill -9 "$launcher"
  fi
  wait "$launcher"; rc=$?
  [ "$rc" -ne 0 ] || bad "the job exited 0 after rank $victim was killed"
  grep -q "rank $victim" "$tmp/err$victim.txt" || bad "the message does not name rank $victim: $(cat "$tmp/err$victim.txt")"
  grep -q "$host" "$tmp/err$victim.txt" || bad "the message does not name the host $host: $(cat "$tmp/err$victim.txt")"
  before=$(cells "$cache")
  echo "rank $victim killed with $before of $total cells cached; launcher said: $(grep -m1 "rank $victim" "$tmp/err$victim.txt")"
  [ "$before" -gt 0 ] || bad "rank $victim: nothing finished before the kill is in the cache"
  mpi_launch 2 "$exe" run "$src/experiments/example.lua" "${args[@]}" --set cache="$tmp/$cache" --run-id "rerun$victim" \
    >/dev/null 2>"$tmp/rerun$victim.txt" || { cat "$tmp/rerun$victim.txt"; bad "rank $victim: the rerun failed"; return; }
  got=$(computed "rerun$victim")
  [ "$got" -eq $((total - before)) ] || bad "rank $victim: the rerun computed $got cells, not the $((total - before)) missing"
  for t in $(cd "$tmp/results/example/ref" && ls *.csv); do
    cmp -s "$tmp/results/example/ref/$t" "$tmp/results/example/rerun$victim/$t" || bad "rank $victim: $t differs from the one-process run"
  done
}
trial 1 # a worker
trial 0 # the writer itself: what it wrote before is whole, and enough to resume
[ "$fails" -eq 0 ] && echo "kill one rank (1, then 0): each job ended naming the rank on $host; each rerun computed only the missing cells"
[ "$fails" -eq 0 ]
