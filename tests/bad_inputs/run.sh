#!/usr/bin/env bash
# The bad-input catalogue's runner: every case of catalogue.tsv, each in its own scratch
# directory, must fail cleanly. usage: run.sh UPSTREAM_EXE SOURCE_DIR [CASE_ID ...]
#
# Per case (a line of catalogue.tsv: id, make, status, message, command; tab-separated):
#   1. `upstream make.lua MAKE IN SRC` writes the bad input under IN (an empty directory;
#      makers joined by + run in turn);
#   2. the command runs in bash with cwd RUN (the only directory it may write in: the probe's
#      results, plots and cache go there), HOME and TMPDIR in the scratch directory too, and
#      these names defined: $UP, $SRC, $IN, $RUN, $CFG (tests/experiment/upstream.cfg), and
#      the functions `exp ARGS` (upstream run --config $CFG, outputs under $RUN, --quiet) and
#      `probe ARGS` (exp tests/bad_inputs/probe.lua ARGS);
#   3. the checks: the exit status is the case's (non-zero; a signal, 128+N, is a crash);
#      stderr is one line that matches the case's message (an extended regex), with no Lua
#      stack, no "bad argument #n to '?'" and no C source position; no temporary file
#      (*.tmp.*) is left under RUN; nothing outside RUN changed (the inputs, HOME, TMPDIR:
#      names, sizes and times); nothing new appeared in the source tree; README.md's table
#      lists the case.
# --catalogue FILE runs another catalogue; --expect-fail inverts the verdict (every case must
# fail a check: the runner's own test, selftest.tsv, one violation a case).
# UPSTREAM_BAD_KEEP=1 keeps the scratch directories and prints where.
set -u
exe=$(realpath "$1") src=$(realpath "$2")
shift 2
here=$src/tests/bad_inputs
catalogue=$here/catalogue.tsv expect_fail=0
while [ $# -gt 0 ]; do
  case $1 in
    --catalogue) catalogue=$2; shift 2 ;;
    --expect-fail) expect_fail=1; shift ;;
    *) break ;;
  esac
done
only=" $* "
root=$(mktemp -d)
[ -n "${UPSTREAM_BAD_KEEP:-}" ] && echo "scratch: $root" || trap 'rm -rf "$root"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
unset UPSTREAM_CONFIG UPSTREAM_MODEL UPSTREAM_TRACEBACK
# Under the sanitizer build, LeakSanitizer lists the suppressions it used on stderr; that list
# is not upstream's message (a leak it reports still fails the case: its exit status and lines).
[ -n "${LSAN_OPTIONS:-}" ] && export LSAN_OPTIONS="$LSAN_OPTIONS:print_suppressions=0"

# What a case may not touch: everything in its scratch directory but RUN.
snapshot() { find "$1" -path "$1/run" -prune -o -printf '%P %s %T@ %m\n' | sort; }
# New files in the source tree (build directories, the one holding upstream among them, and
# .git aside).
bin=$(dirname "$exe")
source_news() {
  find "$src" \( -name '.git' -o -path "$src/build*" -o -path "$bin" \) -prune -o -newer "$1" -type f -print
}

fails=0 cases=0
while IFS=$'\t' read -r id make status pattern command; do
  case $id in ''|'#'*) continue ;; esac
  [ "$only" != "  " ] && [[ $only != *" $id "* ]] && continue
  cases=$((cases + 1))
  w=$root/$id log=$root/logs/$id
  mkdir -p "$root/logs"
  mkdir -p "$w/in" "$w/run" "$w/home" "$w/tmp"
  made=1
  for m in ${make//+/ }; do # makers joined by + run in turn
    "$exe" "$here/make.lua" "$m" "$w/in" "$src" >"$log.make" 2>&1 || made=0
  done
  if [ "$made" -eq 0 ]; then
    echo "FAIL $id: maker '$make' failed: $(cat "$log.make")"; fails=$((fails + 1)); continue
  fi
  touch "$log.mark"; before=$(snapshot "$w"); sleep 0.01
  (
    cd "$w/run" || exit 99
    UP=$exe SRC=$src IN=$w/in RUN=$w/run CFG=$src/tests/experiment/upstream.cfg
    export HOME=$w/home TMPDIR=$w/tmp
    exp() { "$UP" run "$@" --config "$CFG" --set results="$RUN/results" --set plots="$RUN/plots" --set cache="$RUN/cache" --quiet; }
    probe() { exp "$here/probe.lua" "$@"; }
    eval "$command"
  ) >"$log.out" 2>"$log.err" </dev/null
  rc=$?
  err=$(cat "$log.err")
  problems=()
  if [ "$rc" -gt 128 ]; then problems+=("crashed: signal $((rc - 128))")
  elif [ "$rc" -ne "$status" ]; then problems+=("exit $rc, want $status"); fi
  lines=$(grep -c . "$log.err")
  [ "$lines" -eq 1 ] || problems+=("$lines lines on stderr, want one message")
  grep -qE -- "$pattern" "$log.err" || problems+=("message lacks /$pattern/")
  grep -qE "stack traceback|bad argument #|to '\?'|\.c:[0-9]+:" "$log.err" && problems+=("message shows internals")
  tmps=$(find "$w/run" -name '*.tmp*' | head -3)
  [ -z "$tmps" ] || problems+=("temporary files left: $tmps")
  [ "$(snapshot "$w")" = "$before" ] ||
    problems+=("wrote outside its run directory: $(diff <(echo "$before") <(snapshot "$w") | grep '^[<>]' | head -3 | tr '\n' ' ')")
  # README.md's table says what upstream answers to each case: it lists every one.
  [ "$catalogue" != "$here/catalogue.tsv" ] || grep -qF "| \`$id\` |" "$here/README.md" ||
    problems+=("not in README.md's table")
  news=$(source_news "$log.mark" | head -3)
  [ -z "$news" ] || problems+=("wrote into the source tree: $news")
  if [ ${#problems[@]} -gt 0 ]; then
    fails=$((fails + 1))
    printf 'FAIL %s: %s\n  command: %s\n  stderr: %s\n' "$id" "$(IFS=';'; echo "${problems[*]}")" "$command" "$err"
  else
    printf 'ok   %-24s %s\n' "$id" "$err"
  fi
done <"$catalogue"

echo "$cases cases, $fails failed"
[ "$cases" -gt 0 ] || exit 1
if [ "$expect_fail" -eq 1 ]; then [ "$fails" -eq "$cases" ]; else [ "$fails" -eq 0 ]; fi
