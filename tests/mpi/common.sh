# Sourced by each MPI test after it sets exe and src: the launcher (launch.sh), a scratch
# directory removed at exit ($tmp), and bad MESSAGE, which reports a failure and counts it in
# $fails (a test ends with `[ "$fails" -eq 0 ]`).
. "$src/tests/mpi/launch.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
