#!/usr/bin/env bash
# Replays every seed of the Lua fuzz targets (tests/fuzz/lua/*.lua drivers) through the plain
# host, so their regressions are checked without clang: each seed must give success or a message
# for the user, never a fault (fuzz_lua.h's rule: the host prints a traceback only for a fault,
# and Lua's runtime errors in lua/ start with their own position and words).
# usage: replay_lua.sh UPSTREAM_BINARY TARGET...
set -euo pipefail
bin=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch" "$scratch-cache"' EXIT
bad=0 n=0
for t in "$@"; do
  for seed in "$here/seeds_$t"/*; do
    rm -rf "$scratch" "$scratch-cache" && mkdir -p "$scratch"
    n=$((n + 1))
    if "$bin" "$here/lua/replay.lua" "$t" "$seed" "$scratch" 2>"$scratch.err" >/dev/null; then continue; fi
    # A fault: the host's traceback, or one of Lua's runtime errors in lua/ passed on by pcall and
    # error() (at the start of the message: a message may quote the input).
    if grep -qE "stack traceback|^upstream: [^ ]*lua/[^ ]*\.lua:[0-9]+: (attempt to |table index is |has no integer representation|stack overflow|invalid key to 'next')" "$scratch.err"; then
      echo "FAULT: $t on $seed:"
      cat "$scratch.err"
      bad=1
    fi
  done
done
rm -f "$scratch.err"
echo "$n seeds replayed"
exit $bad
