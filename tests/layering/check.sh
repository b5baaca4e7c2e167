#!/usr/bin/env bash
# The layering, proved by the compiler: for every pair of core layers (A, B), a file compiled
# the way layer A's sources are (against A's include tree, build/layers/A) includes one header
# of B. It must build exactly when the module map below lets A use B; an upward include (say
# formats including engine/forward.h) must fail to build. Also: no core source reaches around
# its include tree with a relative path ("../"), every folder in core/ is a known layer, and a
# private implementation header (core/L/*_impl.h) is included only from core/L.
#
# usage: check.sh CC SOURCE_DIR BINARY_DIR
set -uo pipefail
cc=$1 src=$2 bin=$3

# The module map (README.md): each layer and the layers below it that it may use.
declare -A may_use=(
  [base]=""
  [formats]="base"
  [text]="base"
  [dist]="base"
  [engine]="formats base"
  [sae]="engine formats base"
  [method]="dist sae engine text formats base"
  [train]="sae engine formats base"
  [plot]="formats base"
)
# One header per layer to include.
declare -A probe=(
  [base]=base/error.h [formats]=formats/safetensors.h [text]=text/tokenizer.h [dist]=dist/dist.h
  [engine]=engine/forward.h [sae]=sae/sae.h [method]=method/steer.h
  [train]=train/train.h [plot]=plot/plot.h
)

fail=0
for d in "$src"/core/*/; do
  l=$(basename "$d")
  [ -n "${probe[$l]+x}" ] || { echo "core/$l is not a layer of the module map"; fail=1; }
done
if grep -rn '#include "\.\./' "$src/core" "$src/lua" 2>/dev/null; then
  echo "a relative include reaches around the layering"; fail=1
fi

# A private implementation header (NAME_impl.h, as ggml-impl.h) is for its own folder only.
for h in "$src"/core/*/*_impl.h; do
  [ -e "$h" ] || continue
  dir=$(dirname "$h") name=$(basename "$h") layer=$(basename "$(dirname "$h")")
  users=$(grep -rln "#include \"$layer/$name\"" "$src/core" "$src/lua" "$src/tests" 2>/dev/null | grep -v "^$dir/" || true)
  if [ -n "$users" ]; then echo "$layer/$name is private to core/$layer but is included by:"; echo "$users"; fail=1; fi
done

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
checked=0
for a in "${!may_use[@]}"; do
  [ -d "$bin/layers/$a" ] || { echo "no include tree $bin/layers/$a"; fail=1; continue; }
  for b in "${!probe[@]}"; do
    allowed=0
    if [ "$a" = "$b" ]; then allowed=1; fi
    for u in ${may_use[$a]}; do [ "$u" = "$b" ] && allowed=1; done
    printf '#include "%s"\nint layering_probe;\n' "${probe[$b]}" > "$tmp/probe.c"
    if (cd "$tmp" && "$cc" -std=gnu11 -fsyntax-only -D_GNU_SOURCE -I "$bin/layers/$a" probe.c) 2>"$tmp/err"; then
      built=1
    else
      built=0
    fi
    if [ $built -ne $allowed ]; then
      if [ $allowed -eq 1 ]; then
        echo "layer $a may use $b, but including ${probe[$b]} failed:"; cat "$tmp/err"
      else
        echo "layer $a must not use $b, but including ${probe[$b]} built"
      fi
      fail=1
    fi
    checked=$((checked + 1))
  done
done
echo "checked $checked layer pairs"
exit $fail
