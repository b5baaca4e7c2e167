#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz.test.cmake lists them) with clang's libFuzzer, ASan and UBSan,
# and runs each for a while on its seed corpus.
#
# usage: run.sh [--no-build] SECONDS [TARGET...]   run TARGETs (default: all), SECONDS each
#        run.sh --build                            only build (ctest's fuzz_build fixture)
#
# The fuzz build lives in $UP_FUZZ_BUILD (default <source>/build/fuzz): a CMake tree configured
# with clang and -DUP_FUZZ=ON in $UP_FUZZ_BUILD/build. New inputs go to $UP_FUZZ_BUILD/corpus_NAME,
# crashes to $UP_FUZZ_BUILD/artifacts/, never into the tree: a crash found is turned into a
# regression seed by hand (tests/fuzz/README.md). Exit 77 (ctest: skipped) without clang or
# libFuzzer's runtime.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=${UP_FUZZ_BUILD:-$src/build/fuzz}
cc=${CLANG:-clang}

build=1
case "${1:-}" in
  --build) build=only; shift ;;
  --no-build) build=0; shift ;;
esac

all_targets() {
  sed -n '/^set(UP_FUZZ_TARGETS/,/)/p' "$src/tests/fuzz.test.cmake" | tr -d '()' | tr ' ' '\n' \
    | grep -v -e '^set$' -e '^UP_FUZZ_TARGETS$' -e '^$'
}

if [ "$build" != 0 ]; then
  if ! command -v "$cc" >/dev/null; then
    echo "SKIP: clang not installed (Debian packages clang, libclang-rt-14-dev); fuzz targets not built"
    exit 77
  fi
  if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' \
      | "$cc" -x c -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
    echo "SKIP: clang cannot link -fsanitize=fuzzer: libFuzzer's runtime is missing (Debian: libclang-rt-14-dev)"
    exit 77
  fi
  flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
  cmake -S "$src" -B "$out/build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=None -DUP_FUZZ=ON \
    -DUP_NATIVE=OFF -DCMAKE_C_FLAGS="$flags" >/dev/null
  cmake --build "$out/build" --target fuzz_all -j"${UP_FUZZ_JOBS:-2}"
  [ "$build" = only ] && exit 0
fi

seconds=${1:?usage: run.sh [--no-build] SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(all_targets)
status=0
for t in "${targets[@]}"; do
  bin=$out/build/fuzz_$t
  if [ ! -x "$bin" ]; then
    [ -x "$out/build" ] || { echo "SKIP: no fuzz build in $out (clang missing?)"; exit 77; }
    echo "no fuzz target $bin (run.sh --build first; targets: $(all_targets | tr '\n' ' '))"
    exit 1
  fi
  mkdir -p "$out/corpus_$t" "$out/artifacts"
  dict=()
  [ -f "$src/tests/fuzz/$t.dict" ] && dict=(-dict="$src/tests/fuzz/$t.dict")
  echo "== fuzz_$t: $seconds s"
  # One thread for OpenMP and OpenBLAS: fuzzers run side by side on few cores. A target that
  # finds something stops; the next one still runs, and the exit status says so.
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive \
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
  LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$src/tests/fuzz/lsan.supp:print_suppressions=0} \
    "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$out/artifacts/${t}-" "${dict[@]}" \
      "$out/corpus_$t" "$src/tests/fuzz/seeds_$t" || { echo "== fuzz_$t FAILED"; status=1; }
done
exit $status
