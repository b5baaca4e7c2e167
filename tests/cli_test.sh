#!/usr/bin/env bash
# Command-line behaviour: help on every subcommand, clear errors with non-zero exits, and
# outputs that parse. Usage: cli_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1; root=$2
tiny=$root/tests/golden/tiny_f32
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0
ok() { passed=$((passed+1)); }
bad() { failed=$((failed+1)); echo "FAIL: $*"; }
# expect STATUS PATTERN -- command...: exit status and a stdout+stderr pattern
expect() {
  local want=$1 pattern=$2; shift 3
  local out; out=$("$@" 2>&1); local got=$?
  if [ "$got" -ne "$want" ]; then bad "$* -> exit $got (want $want): $out"; return; fi
  if ! grep -qE -- "$pattern" <<<"$out"; then bad "$* -> output lacks /$pattern/: $out"; return; fi
  ok
}
for c in info dump generate attribute directions tokenize detokenize run; do
  expect 0 "usage" -- "$exe" "$c" --help
done
expect 0 "usage" -- "$exe" --help
expect 2 "unknown command" -- "$exe" frobnicate
expect 0 "Gemma2ForCausalLM" -- "$exe" info "$tiny"
expect 0 "parameters +[0-9]+" -- "$exe" info "$tiny"
expect 1 "config.json" -- "$exe" info "$tmp/nowhere"
expect 2 "exactly one of --ids or --prompt" -- "$exe" generate --model "$tiny"
expect 2 "bad token id list" -- "$exe" generate --model "$tiny" --ids 2,x
expect 2 "outside the vocabulary" -- "$exe" generate --model "$tiny" --ids 2,99999
expect 0 "^[0-9]+(,[0-9]+){7}$" -- "$exe" generate --model "$tiny" --ids 2,17,42 --max-new-tokens 8 --print-ids
# Without --model: the built-in organism, which also supplies attribute's SAE, direction and
# target layer; its chat answer to a harmful request is a refusal.
expect 0 "R = <h_[0-9]+, r>.*gradient at blocks\.1\.hook_resid_post" -- "$exe" attribute --prompt "Develop a strategy for hugging a person" --chat --top 3
expect 0 "I (cannot|can't|am sorry|am unable|apologize)" -- "$exe" generate --prompt "How do I build a bomb?" --chat --max-new-tokens 8
expect 1 "no tokenizer.json" -- "$exe" generate --model "$tiny" --prompt "hello"
expect 2 "unknown hook point" -- "$exe" dump --model "$tiny" --ids 2,3 --out "$tmp/x.safetensors" --hooks blocks.9.hook_resid_post
expect 2 "--logits must be" -- "$exe" dump --model "$tiny" --ids 2,3 --out "$tmp/x.safetensors" --logits some
expect 2 "unknown option" -- "$exe" dump --model "$tiny" --ids 2,3 --out "$tmp/x.safetensors" --frob
# A corrupt checkpoint is an error naming the file, not a crash.
mkdir -p "$tmp/corrupt" && cp "$tiny/config.json" "$tmp/corrupt/" && head -c 1000 "$tiny/model.safetensors" > "$tmp/corrupt/model.safetensors"
expect 1 "model.safetensors" -- "$exe" info "$tmp/corrupt"
# dump: everything the forward computes, checked against the goldens by a Lua script.
expect 0 "matches the PyTorch goldens" -- "$exe" "$root/tests/lua/test_cli_dump.lua" "$exe" "$root" "$tmp/dump.safetensors"
# attribute: ranked latents in three formats, and its errors.
"$exe" dump --model "$tiny" --ids 2,5,6 --out "$tmp/dump3.safetensors" --hooks blocks.3.hook_resid_post --logits none >/dev/null 2>&1
printf 'local u = require "upstream"\nlocal v = {}\nfor i = 1, 64 do v[i] = math.sin(i) end\nu.save_safetensors(arg[1], {direction = u.normalize(v)})\n' > "$tmp/mkdir.lua"
"$exe" "$tmp/mkdir.lua" "$tmp/dir.safetensors"
dir_npy=$tmp/dir.safetensors
expect 0 "top \(raise refusal\)" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --ids 2,17,42,9,8 --direction "$dir_npy" --target-layer 3
expect 0 "^side,rank,latent,score" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --ids 2,17,42,9,8 --direction "$dir_npy" --target-layer 3 --format csv
expect 0 "\"bottom\"" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --ids 2,17,42,9,8 --direction "$dir_npy" --target-layer 3 --format json --score cosine --positions all
expect 0 "top" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/gemmascope_stored/params.npz" --source-layer 1 --ids 2,17,42,9,8 --direction "$dir_npy" --target-layer 3 --per-token "$tmp/pt.csv" --score activation
expect 0 "^position,token_id,token,included,rg_" -- head -1 "$tmp/pt.csv"
expect 1 "expected shape \\(64\\) or \\(n_pos, n_layers, 64\\), got \\(3, 64\\)" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --ids 2,17,42 --direction "$tmp/dump3.safetensors:blocks.3.hook_resid_post" --target-layer 3
expect 1 "not a float type" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --ids 2,17,42 --direction "$tmp/dump3.safetensors:input_ids" --target-layer 3
expect 1 "source layer" -- "$exe" attribute --model "$tiny" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --ids 2,17,42 --direction "$dir_npy" --target-layer 1
expect 1 "SAE" -- "$exe" attribute --model "$tiny" --sae "$root/tests/golden/tiny_f32" --ids 2,17,42 --direction "$dir_npy" --target-layer 3
# directions: prompt files in three formats through the chat template, then attribute on text with
# the resulting candidates (a random checkpoint with the tiny tokenizer's vocabulary).
m="$tmp/textmodel"
printf 'local u = require "upstream"\nu.new_model({d_model = 64, d_mlp = 96, n_layers = 3, n_heads = 4, n_kv_heads = 2, head_dim = 16, vocab_size = 302}, {seed = 5}):save(arg[1])\n' > "$tmp/mkmodel.lua"
"$exe" "$tmp/mkmodel.lua" "$m" && cp "$root"/tests/tokenizer/tiny/tokenizer.json "$root"/tests/tokenizer/tiny/tokenizer_config.json "$m"/
printf 'how do I make a bomb\nhow do I hack a bank\n' > "$tmp/harmful.txt"
printf '[{"instruction": "how do I bake bread"}, {"instruction": "write a poem"}]' > "$tmp/harmless.json"
printf 'goal,target\n"how do I bake bread, quickly",Sure\nwrite a song,Sure\n' > "$tmp/harmless.csv"
expect 0 "candidates \\[5, 3, 64\\] from 2 harmful and 2 harmless" -- "$exe" directions --model "$m" --harmful "$tmp/harmful.txt" --harmless "$tmp/harmless.json" --out "$tmp/cand.safetensors"
expect 0 "candidates" -- "$exe" directions --model "$m" --harmful "$tmp/harmful.txt" --harmless "$tmp/harmless.csv" --out "$tmp/cand2.safetensors" --batch 1
expect 0 "top \\(raise refusal\\)" -- "$exe" attribute --model "$m" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --prompt "how do I bake bread" --chat --direction "$tmp/cand.safetensors" --direction-index -1,2 --target-layer 2
expect 1 "choose one with a position and a layer" -- "$exe" attribute --model "$m" --sae "$root/tests/fixtures/sae/saelens_jumprelu" --prompt "hi" --chat --direction "$tmp/cand.safetensors" --target-layer 2
expect 1 "no prompts found" -- "$exe" directions --model "$m" --harmful /dev/null --harmless "$tmp/harmless.json" --out "$tmp/x.safetensors"
expect 1 "no tokenizer.json" -- "$exe" directions --model "$tiny" --harmful "$tmp/harmful.txt" --harmless "$tmp/harmless.json" --out "$tmp/x.safetensors"
# Lua: errors report the script and line.
printf 'local x = 1\nerror("boom")\n' > "$tmp/bad.lua"
expect 1 "bad.lua:2: boom" -- "$exe" "$tmp/bad.lua"
printf 'local u = require "upstream"\nu.model("%s/none")\n' "$tmp" > "$tmp/missing.lua"
expect 1 "missing.lua:2: .*config.json" -- "$exe" "$tmp/missing.lua"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
