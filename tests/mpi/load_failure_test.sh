#!/usr/bin/env bash
# A rank that cannot load the model (its weights missing on its "host": here rank 1 is given a
# copy of the checkpoint without model.safetensors, through mpirun's MPMD form) must fail the
# whole job before any work, with one message that names the rank, the host and the path; the
# run rank 0 opened is marked failed and holds no table, and no grid cell was computed.
# usage: load_failure_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1 src=$2
. "$src/tests/mpi/common.sh"
mkdir -p "$tmp/broken"
cp "$src/tests/golden/tiny_f32/config.json" "$tmp/broken/"
args=(--config "$src/tests/experiment/upstream.cfg" --quiet --set results="$tmp/results" --set plots="$tmp/plots"
      --set cache="$tmp/cache" --run-id r)
run=("$exe" run "$src/experiments/example.lua" "${args[@]}")
timeout 120 mpirun "${mpi_flags[@]}" -n 1 "${run[@]}" : -n 1 "${run[@]}" --set models.tiny.path="$tmp/broken" \
  >"$tmp/out.txt" 2>"$tmp/err.txt"
rc=$?
host=$(hostname)
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || bad "exit status $rc (0: no failure; 124: the job hung)"
grep -q "rank 1 on host $host" "$tmp/err.txt" || bad "the error does not name rank 1 on host $host"
grep -q "$tmp/broken" "$tmp/err.txt" || bad "the error does not name the path $tmp/broken"
n=$(grep -c "rank 1 on host" "$tmp/err.txt")
[ "$n" -eq 1 ] || bad "the error is printed $n times, not once"
m="$tmp/results/example/r/manifest.json"
[ -f "$m" ] && grep -q '"status": "failed"' "$m" || bad "rank 0's run is not marked failed"
[ -z "$(find "$tmp/results" -name '*.csv' 2>/dev/null)" ] || bad "tables were written"
[ -z "$(find "$tmp/cache" -name '*.json' -path '*grid*' 2>/dev/null)" ] || bad "grid cells were computed"

run2=("$exe" run "$src/experiments/example.lua" --config "$src/tests/experiment/upstream.cfg" --quiet
      --set results="$tmp/results2" --set plots="$tmp/plots2" --set cache="$tmp/cache2" --run-id r)
timeout 120 mpirun "${mpi_flags[@]}" -n 1 "${run2[@]}" : -n 1 "${run2[@]}" --set models.tiny.path="$tmp/nothere" \
  >"$tmp/out2.txt" 2>"$tmp/err2.txt"
rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || bad "no checkpoint: exit status $rc (0: no failure; 124: the job hung)"
grep -q "rank 1 of 2 on host $host: .*$tmp/nothere" "$tmp/err2.txt" || bad "no checkpoint: the error does not name rank 1, $host and the path: $(head -3 "$tmp/err2.txt")"
[ ! -e "$tmp/results2/example/r" ] && [ ! -e "$tmp/plots2/example/r" ] || bad "no checkpoint: a run directory was made"

[ "$fails" -eq 0 ] && echo "a rank without the model fails the job at load: $(grep -m1 'rank 1 on host' "$tmp/err.txt")"
[ "$fails" -eq 0 ]
