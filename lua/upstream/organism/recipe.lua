-- upstream.organism.recipe: how an organism is built (model shape, steps, SAE size...), and the
-- corpus a recipe trains and evaluates on.
--
-- The recipe is M.defaults, overridden by the spec's `build` table, then by --smoke (M.smoke: a
-- few steps of every stage, for CI), then by --set key.sub=value. recipe() returns a fresh
-- table (the caller owns it); a --set naming no recipe key, or of another type, raises.
local organism = require "upstream.organism"
local util = require "upstream.util"

local fail, copy = organism.fail, util.copy

local M = {}

M.defaults = {
  seed = 1,
  corpus = {n_train = 20000, n_heldout = 2000, case_study_repeats = 4},
  -- Large enough that BPE runs out of pairs (~1270 ids): every spec word after a space is one
  -- token, so a concept's word is one position for its latents and labels.
  tokenizer = {vocab_size = 1536},
  -- Every Gemma-2 feature stays on: GQA (4 query heads over 2 KV heads), both softcaps, a
  -- sliding window (even layers) shorter than the prompts, pre and post norms, tied embeddings.
  -- shared_embedding: the norm of a component common to every token's embedding (see
  -- upstream.new_model; a token's own part starts near norm 1). Trained LMs carry such
  -- "massive activations". Without one, the organism forms its refusal direction right after
  -- block 0 (6 and 8 layers alike), leaving no layers between an SAE and the direction for
  -- the method to work across; with 1.5 and 8 layers the direction is chosen at layer 6.
  -- (3 moved it too, but the layer-1 SAE then detected the concepts worse.)
  model = {d_model = 96, d_mlp = 384, n_layers = 8, n_heads = 4, n_kv_heads = 2, head_dim = 24,
           sliding_window = 12, attn_softcap = 50, final_softcap = 30, seed = 1, shared_embedding = 1.5},
  train = {steps = 1600, batch = 32, lr = 3e-3, min_lr_frac = 0.05, warmup_steps = 100, weight_decay = 0.1,
           clip = 1.0, eval_every = 250, checkpoint_every = 100, seed = 1, heldout = 256},
  -- docs/method.md §3's filters (KL <= 0.1, induce >= 0) and lowest-bypass rule. An organism trained
  -- on a corpus where refusal is common has no inducing candidate under KL 0.1 (ablating one
  -- disturbs harmless prompts too: KL 0.4 to 1.4 at 21% to 58% refusals); such a spec sets
  -- build = {direction = {max_kl = ...}}.
  direction = {n_candidates = 128, n_select = 64, positions = 5, max_kl = 0.1, min_induce = 0},
  -- d_sae 1536: at 768 the layer-1 SAE of the 8-layer model detected only 5 of the 8 planted
  -- and reassuring concepts (AUROC >= 0.95), at 1536 it detects 7.
  sae = {layer = 1, d_sae = 1536, arch = "jumprelu", steps = 6000, batch = 1024, lr = 1e-3, sparsity_coef = 0.03,
         max_rows = 400000, n_records = 12000, seed = 1},
  labels = {n_records = 3000, min_share = 0.5},
}

M.smoke = {
  corpus = {n_train = 1500, n_heldout = 200, case_study_repeats = 2},
  tokenizer = {vocab_size = 600},
  model = {d_model = 32, d_mlp = 64, n_layers = 4, n_heads = 2, n_kv_heads = 1, head_dim = 16, sliding_window = 8},
  train = {steps = 40, batch = 16, warmup_steps = 5, eval_every = 20, checkpoint_every = 20, heldout = 32},
  -- An untrained model passes no filter; the smoke build only checks that the stage runs.
  direction = {n_candidates = 16, n_select = 8, max_kl = 1e9, min_induce = -1e9},
  sae = {d_sae = 128, steps = 60, batch = 256, max_rows = 20000, n_records = 400},
  labels = {n_records = 100},
}

local function merge(dst, src)
  for k, v in pairs(src or {}) do
    if type(v) == "table" and type(dst[k]) == "table" then merge(dst[k], v) else dst[k] = v end
  end
  return dst
end

-- "train.steps=100" -> recipe.train.steps = 100 (numbers and booleans parsed; the key must exist).
local function apply_set(recipe, assignment)
  local key, value = assignment:match("^([%w_%.]+)=(.*)$")
  if not key then fail("--set needs key=value, got \"%s\"", assignment) end
  local t, last = recipe, nil
  local parts = {}
  for p in key:gmatch("[^.]+") do parts[#parts + 1] = p end
  for i = 1, #parts - 1 do
    t = t[parts[i]]
    if type(t) ~= "table" then fail("--set %s: no such recipe section", key) end
  end
  last = parts[#parts]
  if t[last] == nil then fail("--set %s: no such recipe key", key) end
  local v = value
  if value == "true" then v = true elseif value == "false" then v = false
  elseif tonumber(value) then v = math.tointeger(tonumber(value)) or tonumber(value) end
  if type(v) ~= type(t[last]) then fail("--set %s: expected a %s", key, type(t[last])) end
  t[last] = v
end

function M.recipe(spec, opts)
  local r = merge(copy(M.defaults), spec.build)
  if opts and opts.smoke then merge(r, M.smoke) end
  for _, s in ipairs(opts and opts.set or {}) do apply_set(r, s) end
  return r
end

-- The corpus a recipe trains and evaluates on (organism.corpus with the recipe's seed and sizes).
function M.recipe_corpus(spec, recipe)
  return organism.corpus(spec, {seed = recipe.seed, n_train = recipe.corpus.n_train, n_heldout = recipe.corpus.n_heldout,
                                case_study_repeats = recipe.corpus.case_study_repeats})
end

return M
