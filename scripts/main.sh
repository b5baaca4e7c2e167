#!/usr/bin/env bash
# The main job: install what is missing, build, run the published experiments on the built-in
# model organism (results/ and plots/; results/all/<run>/report.md links every report).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build/upstream run experiments/all.lua
