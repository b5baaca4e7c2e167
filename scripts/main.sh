#!/usr/bin/env bash
# The main job: install what is missing, build, run the main experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build/upstream experiments/demo.lua .
