# The checks the shell experiment tests share (source it; the caller sets fails=0 first):
#   expect STATUS PATTERN -- command...   the command exits STATUS and its output matches PATTERN (ERE)
#   lacks PATTERN -- command...           the command's output does not match PATTERN
# Each failure prints "FAIL command -> why" and counts in $fails.
expect() {
  local want=$1 pattern=$2; shift 3
  local out got
  out=$("$@" 2>&1); got=$?
  if [ "$got" -ne "$want" ]; then echo "FAIL $* -> exit $got (want $want): $out"; fails=$((fails + 1)); return; fi
  if ! grep -qE -- "$pattern" <<<"$out"; then echo "FAIL $* -> lacks /$pattern/: $out"; fails=$((fails + 1)); fi
}
lacks() {
  local pattern=$1; shift 2
  local out
  out=$("$@" 2>&1)
  if grep -qE -- "$pattern" <<<"$out"; then echo "FAIL $* -> has /$pattern/: $out"; fails=$((fails + 1)); fi
}
