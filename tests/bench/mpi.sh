#!/usr/bin/env bash
# MPI on this machine: 2 ranks x 1 thread against 1 rank x 2 threads, on direction selection
# (difference-in-means batches, then N candidates in full mode: bypass, induce and KL each) and
# on a steering grid (4 prompts x 16 interventions, 16 new tokens, batches of 16), on the
# random-weight gemma-2-2b-it-shaped checkpoint of tests/bench/published_set.sh. Prints, per
# configuration: candidates/s and cells/s, work units and the bytes each sends to rank 0, and
# every rank's memory (RSS, PSS, shared and private pages) so the sharing of the memory-mapped
# weights is measured, not assumed. The configurations run one after another (never two timings
# at once). A benchmark, not a test: it never fails on time.
# usage: tests/bench/mpi.sh [--dir CKPT_DIR] [--candidates N] [--out FILE]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
exe=$src/build/upstream
dir=${UPSTREAM_BENCH_DIR:-$HOME/.cache/upstream/bench/gemma-2-2b-shapes}
n_cand=4 out=""
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --candidates) n_cand=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
  esac
done
[ -f "$dir/.complete" ] || { echo "mpi bench: no checkpoint in $dir; make it with tests/bench/published_set.sh first" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "mpi bench: no mpirun (scripts/install-deps.sh installs Open MPI)" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
out=${out:-$tmp/mpi-bench.jsonl}
: >"$out"
echo "this machine, every core:"
"$src/build/bench_machine" 2>/dev/null || true
. "$src/tests/mpi/launch.sh"

run() { # run MODE LABEL RANKS THREADS
  local mode=$1 label=$2 ranks=$3 threads=$4 line
  cat "$dir"/*.safetensors >/dev/null # the weights in the page cache for every configuration alike
  if [ "$ranks" -eq 1 ]; then
    line=$(OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "$exe" "$src/tests/bench/mpi_work.lua" "$mode" "$dir" "$tmp/$label" "$n_cand")
  else
    line=$(OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads mpi_launch "$ranks" "$exe" "$src/tests/bench/mpi_work.lua" "$mode" "$dir" "$tmp/$label" "$n_cand")
  fi
  local mem
  mem=$(cat "$tmp/$label".rank*.json | jq -s -c .)
  echo "$line" | jq -c --arg cfg "$label" --argjson mem "$mem" '. + {config: $cfg, memory: $mem}' | tee -a "$out"
}
run select "1x2" 1 2
run select "2x1" 2 1
run grid "1x2" 1 2
run grid "2x1" 2 1

echo
echo "| workload | 1 rank x 2 threads | 2 ranks x 1 thread | units (remote) | bytes per unit |"
echo "|---|---|---|---|---|"
jq -rs '
  def r(x): (x * 1000 | round) / 1000;
  (map(select(.mode == "select")) | "| direction selection, \(.[0].candidates) candidates (full) | \(r(.[0].candidates_per_s)) cand/s | \(r(.[1].candidates_per_s)) cand/s | \(.[1].candidates) (\(.[1].candidates_remote)) | \(.[1].bytes_per_candidate) |"),
  (map(select(.mode == "select")) | "| difference in means, 32 prompts | \(r(.[0].dim_s)) s | \(r(.[1].dim_s)) s | \(.[1].dim_units) per set | \(.[1].dim_bytes_per_unit) |"),
  (map(select(.mode == "grid")) | "| steering grid, \(.[0].cells) cells | \(r(.[0].cells_per_s)) cells/s | \(r(.[1].cells_per_s)) cells/s | \(.[1].batches) (\(.[1].batches_remote)) | \(r(.[1].bytes_per_batch)) |")
' "$out"
echo
echo "memory per rank (MiB; the weights are mapped, so ranks of one host share them):"
jq -r '"\(.mode) \(.config): " + ([.memory[] | "RSS \(.Rss_MiB | round) PSS \(.Pss_MiB | round) shared \(.Shared_Clean_MiB | round) private \((.Private_Clean_MiB + .Private_Dirty_MiB) | round)"] | join("; "))' "$out"
echo "figures: $out"
