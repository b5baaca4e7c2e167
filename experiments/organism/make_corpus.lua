-- Generates the organism's corpus and trains its tokenizer.
--
--   upstream experiments/organism/make_corpus.lua OUTDIR [--seed 1] [--n_train 20000]
--            [--n_heldout 2000] [--vocab 1024] [--spec experiments/organism/refusal.lua]
--
-- Writes OUTDIR/train.jsonl and OUTDIR/heldout.jsonl (one record per line, see
-- lua/upstream/organism.lua), OUTDIR/tokenizer.json (BPE trained on every instruction and
-- response) and OUTDIR/stats.json; prints the statistics. Same arguments, same bytes.
local upstream = require "upstream"
local organism = require "upstream.organism"

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local opts = {seed = 1, n_train = 20000, n_heldout = 2000, vocab = 1024, spec = here .. "/refusal.lua"}
local out
local i = 1
while i <= #arg do
  local a = arg[i]
  local key = a:match("^%-%-([%w_]+)$")
  if key then
    if opts[key] == nil then error("unknown option " .. a, 0) end
    local v = arg[i + 1] or error("option " .. a .. " needs a value", 0)
    opts[key] = key == "spec" and v or (math.tointeger(tonumber(v)) or error(a .. " needs an integer", 0))
    i = i + 2
  elseif not out then
    out = a
    i = i + 1
  else
    error("unexpected argument " .. a, 0)
  end
end
if not out then
  io.stderr:write("usage: upstream experiments/organism/make_corpus.lua OUTDIR [--seed N] [--n_train N] "
                  .. "[--n_heldout N] [--vocab N] [--spec FILE]\n")
  os.exit(2)
end
assert(os.execute(("mkdir -p %q"):format(out)), "cannot create " .. out)

local spec = organism.load(opts.spec)
local t0 = os.clock()
local records = organism.corpus(spec, {seed = opts.seed, n_train = opts.n_train, n_heldout = opts.n_heldout})
local t_corpus = os.clock() - t0
local train, held = {}, {}
for _, r in ipairs(records) do
  if r.split == "train" then train[#train + 1] = r else held[#held + 1] = r end
end
organism.write_corpus(out .. "/train.jsonl", train)
organism.write_corpus(out .. "/heldout.jsonl", held)
local bpe = upstream.train_bpe(organism.tokenizer_texts(records), {vocab_size = opts.vocab, out = out .. "/tokenizer.json"})

local vocab = organism.vocabulary(spec)
local stats = organism.stats(records)
local summary = {spec = opts.spec, seed = opts.seed, words = #vocab, corpus_seconds = t_corpus,
                 tokenizer = {vocab_size = bpe.vocab_size, n_merges = bpe.n_merges, n_chars = bpe.n_chars,
                              n_words = bpe.n_words, n_tokens = bpe.n_tokens, seconds = bpe.seconds},
                 splits = {}}
print(("%d spec words; corpus in %.2f s; tokenizer: %d ids, %d merges, %d characters, %d distinct words, "
       .. "trained in %.3f s"):format(#vocab, t_corpus, bpe.vocab_size, bpe.n_merges, bpe.n_chars, bpe.n_words,
                                      bpe.seconds))
for _, sp in ipairs {"train", "heldout"} do
  local s = stats[sp]
  summary.splits[sp] = {n = s.n, refused = s.refused, categories = s.categories}
  print(("%-8s %6d records, %5.1f%% refused"):format(sp, s.n, 100 * s.refused / s.n))
  local cats = {}
  for c in pairs(s.categories) do cats[#cats + 1] = c end
  table.sort(cats)
  for _, c in ipairs(cats) do
    local x = s.categories[c]
    print(("  %-11s %6d  %5.1f%% refused"):format(c, x.n, 100 * x.refused / x.n))
  end
end
local f = assert(io.open(out .. "/stats.json.tmp", "wb"))
f:write(organism.json_encode(summary), "\n")
f:close()
assert(os.rename(out .. "/stats.json.tmp", out .. "/stats.json"))
