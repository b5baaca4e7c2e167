#!/usr/bin/env bash
# The test suite again under AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer on):
# a second build in build-asan/ (RelWithDebInfo, -DUP_SANITIZE=ON), then ctest there. CI runs it
# after scripts/test.sh. A leak fails its test; the only leaks suppressed are inside system
# libraries, listed with their reasons in tests/sanitizer/lsan.supp. Tests labelled `slow`
# (organism_acceptance: the whole organism eval, which organism_scripts and the published-set
# tests already drive through the same code) are left out to keep CI short, and so are those
# labelled `mpi` (tests/mpi.test.cmake: Open MPI's own allocations at exit read as leaks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUP_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizer/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -LE "slow|mpi"
