#!/usr/bin/env bash
# `upstream tokenize` / `upstream detokenize` on the tiny fixture (ids: see tests/test_tokenizer.c).
# usage: cli_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
up=$1
dir=$2/tests/tokenizer/tiny
passed=0 failed=0
check() { # name, expected, actual
  if [ "$2" == "$3" ]; then passed=$((passed + 1)); else failed=$((failed + 1)); printf 'FAIL %s\n  want: %q\n  got:  %q\n' "$1" "$2" "$3"; fi
}

check "tokenize pieces" $'282\thello\n287\t▁world' "$("$up" tokenize --tokenizer "$dir/tokenizer.json" "hello world")"
check "tokenize --model" "282,287" "$("$up" tokenize --model "$dir" --ids-only "hello world")"
check "tokenize escapes" $'4\t<start_of_turn>\n6\t\\n\n8\t<0x01>' "$(printf '<start_of_turn>\n\001' | "$up" tokenize --model "$dir" -)"
check "tokenize stdin" "282,6" "$(printf 'hello\n' | "$up" tokenize --model "$dir" --ids-only)"
check "tokenize --chat" "2,4,291,6,282,287,5,6,4,295,6" "$("$up" tokenize --model "$dir" --chat --ids-only "  hello world ")"
check "tokenize --chat --template" "2,4,291,6,282,5,6,4,295,6" "$("$up" tokenize --model "$dir" --chat --template=gemma --ids-only hello)"
check "detokenize" "hello world" "$("$up" detokenize --model "$dir" 282,287)"
check "detokenize args" "<bos>hello world" "$("$up" detokenize --tokenizer "$dir/tokenizer.json" 2 282 287)"
check "detokenize --skip-special" "user
hello" "$("$up" detokenize --model "$dir" --skip-special 2,4,291,6,282,5)"
check "detokenize stdin" "hello world" "$(echo "282,287" | "$up" detokenize --model "$dir")"
check "round trip" "héllo wörld €" "$("$up" detokenize --model "$dir" "$("$up" tokenize --model "$dir" --ids-only "héllo wörld €")")"

# Errors: non-zero exit and a clear message.
out=$("$up" tokenize --model "$2/tests" hello 2>&1); rc=$?
check "missing tokenizer.json exit" 1 "$rc"
check "missing tokenizer.json message" "upstream tokenize: no tokenizer.json in $2/tests (needed to encode text)" "$out"
out=$("$up" tokenize hello 2>&1); rc=$?
check "no tokenizer option" 1 "$rc"
out=$("$up" detokenize --model "$dir" 282,9999 2>&1); rc=$?
check "bad id exit" 1 "$rc"
case "$out" in *"token id 9999"*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)); echo "FAIL bad id message: $out" ;; esac
out=$("$up" detokenize --model "$dir" 282,x 2>&1); rc=$?
check "malformed ids exit" 2 "$rc"
out=$("$up" tokenize --model "$dir" --chat --template nosuch hi 2>&1); rc=$?
check "unknown template exit" 2 "$rc"
"$up" tokenize --help | grep -q -- "--ids-only" && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL tokenize --help"; }
"$up" detokenize --help | grep -q -- "--skip-special" && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL detokenize --help"; }

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
