#!/usr/bin/env bash
# `upstream steer` and the Lua grid bindings: help, clear errors with non-zero exits, the three
# output formats, the cache (a second run computes nothing and prints the same table; one more
# alpha computes only its cells), text completions with the default refusal token from a
# tokenizer, and the Lua API end to end. Usage: steer_cli_test.sh UPSTREAM_BINARY SOURCE_DIR
set -u
exe=$1; root=$2
tiny=$root/tests/golden/tiny_f32
sae=$root/tests/fixtures/sae/saelens_jumprelu
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
steer() { "$exe" steer --model "$tiny" --ids 2,17,42,9,8 --refusal-token 5 "$@"; }

# Help and errors.
expect 0 "usage: upstream steer" -- "$exe" steer --help
expect 0 "steer +steering grid" -- "$exe" --help
# Without --model: $UPSTREAM_MODEL (else the built-in organism).
expect 1 "/nonexistent" -- env UPSTREAM_MODEL=/nonexistent "$exe" steer --ids 2,17 --refusal-token 5 --sae "$sae" --latent 1 --alpha 1
expect 2 "--latent needs --sae" -- steer --latent 1 --alpha 1
expect 2 "give --latent \(with --sae\), --vector or --ablate" -- steer
expect 2 "--alpha is required" -- steer --sae "$sae" --latent 1
expect 2 "bad --alpha list" -- steer --sae "$sae" --latent 1 --alpha 1,x
expect 2 "bad --latent list" -- steer --sae "$sae" --latent one --alpha 1
expect 2 "--positions must be all, prompt or generated" -- steer --sae "$sae" --latent 1 --alpha 1 --positions some
expect 2 "--format must be table, csv or json" -- steer --sae "$sae" --latent 1 --alpha 1 --format xml
expect 2 "bad --max-new-tokens" -- steer --sae "$sae" --latent 1 --alpha 1 --max-new-tokens -3
expect 2 "unknown option '--frob'" -- steer --sae "$sae" --latent 1 --alpha 1 --frob
expect 2 "latent 256 is outside the SAE's \[0, 256\)" -- steer --sae "$sae" --latent 256 --alpha 1
expect 2 "the model has layers 0..3" -- steer --sae "$sae" --latent 1 --alpha 1 --layer 4
expect 2 "--direction and --target-layer go together" -- steer --sae "$sae" --latent 1 --alpha 1 --target-layer 3
expect 2 "--vector needs --layer" -- steer --vector "$tmp/v.safetensors" --alpha 1
expect 2 "no tokenizer.json to find the refusal token" -- "$exe" steer --model "$tiny" --ids 2,3 --sae "$sae" --latent 1 --alpha 1
expect 2 "--refusal-token '999' is not a valid id" -- steer --sae "$sae" --latent 1 --alpha 1 --refusal-token 999
expect 2 "outside the vocabulary" -- "$exe" steer --model "$tiny" --ids 2,999 --sae "$sae" --latent 1 --alpha 1 --refusal-token 5
expect 1 "no tokenizer.json" -- "$exe" steer --model "$tiny" --prompt "hi" --sae "$sae" --latent 1 --alpha 1 --refusal-token 5
expect 1 "config.json" -- "$exe" steer --model "$tmp/none" --ids 2,3 --sae "$sae" --latent 1 --alpha 1 --refusal-token 5
expect 1 "SAE|sae|cfg" -- steer --sae "$tmp/none" --latent 1 --alpha 1

# Formats: "none" first, then latent x alpha rows, each decoding; scoring-only rows have no completion.
expect 0 "^intervention +new +score +dscore" -- steer --sae "$sae" --latent 11,40 --alpha -4,4 --max-new-tokens 0,5
expect 0 "^none +0 +-?[0-9.]+ +\+0\.0000" -- steer --sae "$sae" --latent 11 --alpha 4 --max-new-tokens 0
expect 0 "^latent 40 x -4 +5 " -- steer --sae "$sae" --latent 11,40 --alpha -4,4 --max-new-tokens 0,5
rows=$(steer --sae "$sae" --latent 11,40 --alpha -4,4 --max-new-tokens 0,5 --format csv 2>/dev/null | wc -l)
[ "$rows" -eq $((1 + 5 * 2)) ] && ok || bad "csv has $rows lines, want 11"
expect 0 "^prompt,intervention,latent,alpha,max_new_tokens,score,p_refusal,dscore,R,dR,predicted_dR" -- steer --sae "$sae" --latent 11 --alpha 4 --format csv
expect 0 "\"cells\"" -- steer --sae "$sae" --latent 11 --alpha 4 --format json
expect 0 "\"completion_ids\"" -- steer --sae "$sae" --latent 11 --alpha 4 --format json --max-new-tokens 3
# alpha = 0 is the unsteered cell: identical rows apart from the label.
steer --sae "$sae" --latent 11 --alpha 0 --max-new-tokens 4 --format csv 2>/dev/null | tail -2 | sed -E 's/^"[^"]*","[^"]*",[^,]*,[^,]*,//; s/,[0-9a-f]{64},/,KEY,/' > "$tmp/zero.csv"
[ "$(sort -u "$tmp/zero.csv" | wc -l)" -eq 1 ] && ok || bad "alpha 0 row differs from none: $(cat "$tmp/zero.csv")"

# A direction: R, dR and the first-order prediction; a vector sweep; an ablation cell.
printf 'local u = require "upstream"\nlocal v = {}\nfor i = 1, 64 do v[i] = math.sin(i) end\nu.save_safetensors(arg[1], {direction = u.normalize(v)})\n' > "$tmp/mkdir.lua"
"$exe" "$tmp/mkdir.lua" "$tmp/dir.safetensors"
expect 0 "R +dR +pred_dR" -- steer --sae "$sae" --latent 11 --alpha 0.1 --direction "$tmp/dir.safetensors" --target-layer 3
expect 0 "^dir.safetensors x 2 " -- steer --vector "$tmp/dir.safetensors" --layer 1 --alpha 2 --max-new-tokens 0
expect 0 "^ablate " -- steer --ablate "$tmp/dir.safetensors" --max-new-tokens 2
expect 2 "--positions must be" -- steer --vector "$tmp/dir.safetensors" --layer 1 --alpha 2 --positions 1,2
# The linearity check: for a small alpha dR and pred_dR agree to a few percent.
steer --sae "$sae" --latent 40 --alpha 0.05 --max-new-tokens 0 --direction "$tmp/dir.safetensors" --target-layer 3 --format csv 2>/dev/null \
  | tail -1 | sed -E 's/^"[^"]*",//' | awk -F, '{ d = $9; p = $10; r = (d - p) / (p < 0 ? -p : p); if (r < 0) r = -r; exit !(r < 0.1) }' \
  && ok || bad "dR and predicted dR disagree"

# The cache: a second run computes nothing and prints the same table; a new alpha computes its cells only.
c="$tmp/cache"
args=(--sae "$sae" --latent 11,40 --alpha -4,4 --max-new-tokens 0,5 --cache "$c")
steer "${args[@]}" > "$tmp/first.txt" 2> "$tmp/first.err" || bad "cached run failed: $(cat "$tmp/first.err")"
grep -q "10 cells (10 distinct: 10 computed in 2 batches, 0 from the cache)" "$tmp/first.err" && ok || bad "first run: $(cat "$tmp/first.err")"
steer "${args[@]}" > "$tmp/second.txt" 2> "$tmp/second.err"
grep -q "0 computed in 0 batches, 10 from the cache" "$tmp/second.err" && ok || bad "second run: $(cat "$tmp/second.err")"
cmp -s "$tmp/first.txt" "$tmp/second.txt" && ok || bad "cached table differs: $(diff "$tmp/first.txt" "$tmp/second.txt")"
[ "$(find "$c" -name '*.json' -path '*/[0-9a-f][0-9a-f]/*' | wc -l)" -eq 10 ] && ok || bad "want 10 cell files"
steer --sae "$sae" --latent 11,40 --alpha -4,4,8 --max-new-tokens 0,5 --cache "$c" > /dev/null 2> "$tmp/third.err"
grep -q "4 computed in 2 batches, 10 from the cache" "$tmp/third.err" && ok || bad "one more alpha: $(cat "$tmp/third.err")"
expect 0 "\"cached\": true" -- steer "${args[@]}" --format json
expect 0 "\[#+\.*\] [0-9]+/10 cells" -- steer "${args[@]}" --progress
expect 1 "grid cache: cannot create" -- steer --sae "$sae" --latent 11 --alpha 1 --cache /proc/no/such/dir

# Text: a checkpoint with the tiny tokenizer's vocabulary, so completions decode; the refusal
# token defaults to the tokenizer's "I" and the substring judge runs (default and custom lists).
m="$tmp/textmodel"
printf 'local u = require "upstream"\nu.new_model({d_model = 64, d_mlp = 128, n_layers = 4, n_heads = 4, n_kv_heads = 2, head_dim = 16, vocab_size = 302}, {seed = 3}):save(arg[1])\n' > "$tmp/mkmodel.lua"
"$exe" "$tmp/mkmodel.lua" "$m" && cp "$root"/tests/tokenizer/tiny/tokenizer.json "$root"/tests/tokenizer/tiny/tokenizer_config.json "$m"/
expect 0 "^none +6 .* (no|yes) " -- "$exe" steer --model "$m" --prompt "hello there" --chat --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 6
expect 0 "^\"hello there\",\"none\",,,6,.*,0,,-?[0-9.]+" -- "$exe" steer --model "$m" --prompt "hello there" --chat --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 6 --format csv
"$exe" steer --model "$m" --prompt "hi" --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 0 --format csv > "$tmp/dflt.csv" 2>/dev/null
"$exe" steer --model "$m" --prompt "hi" --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 0 --format csv --refusal-token I > "$tmp/piece.csv" 2>/dev/null
"$exe" steer --model "$m" --prompt "hi" --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 0 --format csv --refusal-token 278 > "$tmp/id.csv" 2>/dev/null
cmp -s "$tmp/dflt.csv" "$tmp/piece.csv" && cmp -s "$tmp/dflt.csv" "$tmp/id.csv" && ok || bad "refusal token \"I\" (id 278) not the default"
expect 2 "--refusal-token 'Zebra' is neither an id in the vocabulary nor a piece" -- "$exe" steer --model "$m" --prompt hi --sae "$sae" --latent 3 --alpha 8 --refusal-token Zebra
printf '%s\n' "a" "e" "o" " " > "$tmp/subs.txt"
"$exe" steer --model "$m" --prompt "hello there" --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 6 --format json --substrings "$tmp/subs.txt" > "$tmp/judge.json" 2>&1
grep -q '"refused": ' "$tmp/judge.json" && ok || bad "no judge in: $(cat "$tmp/judge.json")"
printf 'hello\nthere, friend\n' > "$tmp/prompts.txt"
expect 0 "^prompts:" -- "$exe" steer --model "$m" --prompts "$tmp/prompts.txt" --chat --sae "$sae" --latent 3 --alpha 8 --max-new-tokens 2
expect 2 "cannot read" -- "$exe" steer --model "$m" --prompt x --sae "$sae" --latent 3 --alpha 8 --substrings "$tmp/none.txt"

# The Lua API: grid with every kind of intervention, stop and resume, metrics, selection.
cat > "$tmp/grid.lua" <<'EOF'
local u = require "upstream"
local root, cache = arg[1], arg[2]
local model <close> = u.model(root .. "/tests/golden/tiny_f32")
local sae <close> = u.sae(root .. "/tests/fixtures/sae/saelens_jumprelu")
local r = {}
for j = 1, 64 do r[j] = math.sin(0.7 * (j - 1) + 0.3) end
local function spec(progress)
  return {model = model, prompts = {{2, 17, 42, 9, 8}, {ids = {2, 5, 6, 7, 8, 9, 10}, label = "b"}},
    sae = sae, latents = {11, 40}, alphas = {-0.05, 0, 0.05}, max_new_tokens = {0, 4},
    objective = {layer = 3, direction = r}, refusal_ids = {5}, batch = 4, cache = cache,
    interventions = {
      {label = "abl", items = {{kind = "ablate", vector = r}}},
      {label = "clamp", items = {{kind = "clamp", sae = sae, latent = 40, value = 3, where = "prompt"}}},
      {label = "list", items = {{kind = "add", point = "blocks.2.hook_resid_pre", vector = r, alpha = 0.1, where = {1, -1}}}}},
    progress = progress}
end
local calls = 0
local g <close> = u.grid(spec(function(p) calls = calls + 1; if p.steps == 0 and p.done >= 6 and p.done < p.total then return "stop" end end))
local rows, msg = g:run()
assert(rows == nil and msg:find("stopped"), "expected a stop, got " .. tostring(msg))
local first = g:totals().computed
assert(first > 0 and calls > 0)
local g2 <close> = u.grid(spec(nil))
rows = assert(g2:run())
local t = g2:totals()
assert(t.cells == 40 and t.unique == 32 and t.cached == first and t.computed == 32 - first,
       ("resume: %d cells %d unique %d cached %d computed"):format(t.cells, t.unique, t.cached, t.computed))
local fresh <close> = u.grid((function() local s = spec(nil); s.cache = nil; return s end)())
local again = assert(fresh:run())
for i, row in ipairs(rows) do
  local o = again[i]
  assert(row.score == o.score and row.R == o.R and row.logprob == o.logprob and #row.tokens == #o.tokens,
         "resumed row " .. i .. " differs from an uninterrupted run")
  if row.alpha == 0 then
    local none = rows[(row.prompt - 1) * 10 * 2 + row.max_new_tokens // 4 + 1]
    assert(none.label == "none" and none.score == row.score and none.key == row.key)
  end
  if row.label:find("x 0.05") then
    -- first order: close, up to curvature that matters where the slope is small
    assert(math.abs(row.dR - row.predicted_dR) < 0.1 * math.abs(row.predicted_dR) + 2e-4, "linearity " .. row.label)
  end
end
assert(rows[1].label == "none" and rows[1].dscore == 0 and rows[3].latent == 11 and math.abs(rows[3].alpha + 0.05) < 1e-7)
assert(rows[2].logprob and rows[2].repetition and #rows[2].tokens == 4 and rows[1].logprob == nil)
assert(rows[15].label == "abl" and rows[15].predicted_dR == nil and rows[19].predicted_dR ~= nil)
g2:set_prediction(1, 8, 1.5)
assert(g2:rows()[15].predicted_dR == 1.5)
assert(not pcall(g2.set_prediction, g2, 3, 1, 0))
-- model:steer, metrics
local rs = model:steer({{2, 17, 42}}, {sae = sae, latents = {3}, alphas = {1}, refusal_ids = {5}})
assert(#rs == 2 and rs[2].label == "latent 3 x 1")
local s, p = u.refusal_score(model:run({2, 17, 42}).logits, {5})
assert(math.abs(s - rs[1].score) < 1e-5 and p > 0 and p < 1)
assert(u.substring_refusal("Well, I can’t do that") == "I can't")
assert(u.substring_refusal("fine") == nil and select(2, u.substring_refusal("XyZ", {"q", "yz"})) == 2)
assert(u.repetition({1, 2, 3, 1, 2, 3}, 3) == 0.25)
assert(u.kl(model:run({2, 17}).logits, model:run({2, 17}).logits) == 0)
assert(model:logprob({2, 17, 42}, {9, 8}) < 0)
-- misuse raises naming the field
local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok and tostring(err):find(pattern, 1, true), "want an error with '" .. pattern .. "', got " .. tostring(err))
end
raises("spec.refusal_ids is required", u.grid, {model = model, prompts = {{2, 3}}})
raises("id 999", u.grid, {model = model, prompts = {{2, 999}}, refusal_ids = {5}})
raises("spec.latents needs spec.sae", u.grid, {model = model, prompts = {{2, 3}}, refusal_ids = {5}, latents = {1}, alphas = {1}})
raises("kind must be", u.grid, {model = model, prompts = {{2, 3}}, refusal_ids = {5}, interventions = {{items = {{kind = "zap"}}}}})
raises("spec.model must be a Model", u.grid, {prompts = {{2, 3}}})
local stopper = u.grid{model = model, prompts = {{2, 3}}, refusal_ids = {5}, progress = function() error("boom") end}
raises("boom", stopper.run, stopper)
-- direction selection
local ha, hl = {}, {}
for i = 1, 4 do ha[i] = {2, 10 + i, 20 + i, 30, 31, 32}; hl[i] = {2, 100 + i, 120 + i, 30, 31, 32} end
local sel = model:select_direction(model:directions(ha, hl, {positions = 2}), ha, hl,
                                   {refusal_ids = {5}, max_kl = 10, min_induce = -100})
assert(#sel.scores == 8 and sel.scores[1].dropped == "nan" and sel.best and sel.best.pos < 0 and sel.direction)
raises("refusal_ids", model.select_direction, model, model:directions(ha, hl, {positions = 2}), ha, hl, {})
print("lua grid ok")
EOF
expect 0 "lua grid ok" -- "$exe" "$tmp/grid.lua" "$root" "$tmp/luacache"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
