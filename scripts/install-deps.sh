#!/usr/bin/env bash
# Installs the Debian 12 packages upstream needs to build and test, if any are missing.
# Run as root, or as a user with sudo. Safe to run again: it installs nothing when all are present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  liblua5.4-dev libconfig-dev libopenblas-dev libpng-dev   # the fixed four
  libjansson-dev libzip-dev                                # JSON (config, safetensors, tokenizer) and npz
  libssl-dev                                               # SHA-256 (libcrypto EVP) for the grid cache keys
  libcmocka-dev                                            # C unit tests
  libcairo2-dev fonts-dejavu-core                          # figures: drawing and the font they use
  nodejs npm                                               # tokenizer conformance reference (transformers.js port)
  clang libclang-rt-14-dev                                 # libFuzzer (clang and its runtime) for the tokenizer fuzz targets
  jq time                                                  # the real-scale benchmark (tests/bench/published_set.sh)
  python3                                                  # small checks in test scripts (CSV, JSON)
  openmpi-bin libopenmpi-dev                               # one experiment over many processes (mpirun; core/dist)
)

missing=()
for p in "${packages[@]}"; do
  # A node that came with its own npm (e.g. NodeSource's nodejs) satisfies both; Debian's npm
  # package would conflict with it.
  if { [ "$p" = nodejs ] || [ "$p" = npm ]; } && command -v node >/dev/null && command -v npm >/dev/null; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
