#!/usr/bin/env bash
# Builds one tokenizer fuzz target with clang's libFuzzer (+ASan, UBSan) and runs it for a
# while on its seed corpus. New inputs go to BUILD_DIR/fuzz/corpus_TARGET, never the tree.
# usage: run.sh SOURCE_DIR BUILD_DIR TARGET SECONDS     exit 77 (skip) when clang is absent
set -euo pipefail
src=$1 build=$2 target=$3 seconds=$4
cc=${CLANG:-clang}
if ! command -v "$cc" >/dev/null; then
  echo "SKIP: clang not installed (Debian packages clang, libclang-rt-14-dev); $target not run"
  exit 77
fi
out=$build/fuzz
mkdir -p "$out/corpus_$target"
# The tokenizer is every core/text/tokenizer*.c (a glob, so a further split needs no edit here),
# plus what those files and the fuzz targets call into: chat, and base's error and utf8.
sources=("$src"/core/text/tokenizer*.c "$src/core/text/chat.c" "$src/core/base/error.c" "$src/core/base/utf8.c")
# shellcheck disable=SC2046
if ! "$cc" -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
    -DUP_FUZZ_TINY="\"$src/tests/tokenizer/tiny/tokenizer.json\"" -I "$src/core" \
    "$src/tests/fuzz/$target.c" "${sources[@]}" \
    $(pkg-config --cflags --libs jansson) -o "$out/$target"; then
  echo "cannot build $target with -fsanitize=fuzzer: libFuzzer's runtime is missing (Debian: libclang-rt-14-dev)"
  exit 1
fi
"$out/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
  "$out/corpus_$target" "$src/tests/fuzz/seeds_${target#fuzz_}"
