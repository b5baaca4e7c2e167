-- experiments/lib/direction.lua: the refusal direction (Arditi et al. 2024) — every
-- difference-of-means candidate (layer × post-instruction position), the selection by
-- bypass / induce / KL, the chosen direction's effect on harmful and harmless prompts
-- (ablated, added), and how it compares with the direction shipped with the model.
-- Run by experiments/direction.lua and experiments/all.lua.
local upstream = require "upstream"
local csv = require "upstream.csv"
local util = require "upstream.util"
local C = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/common.lua")

local E = {}

E.decl = {
  name = "direction",
  title = "The refusal direction",
  description = "Difference-of-means candidates r[l, i] = mean(harmful) - mean(harmless) of the residual stream " ..
    "at every layer l and post-instruction position i, scored by bypass (harmful prompts, r ablated), induce " ..
    "(harmless prompts, +r added) and KL (harmless, ablated vs not); the chosen candidate has the lowest bypass " ..
    "score among those that pass the filters.",
  prompts = {harmful = C.harmful, harmless = C.harmless},
  params = {
    max_layer_frac = 0.8, -- drop candidates at layers >= this fraction of the depth
    max_kl = 0.1,         -- drop candidates whose ablation moves harmless logits more (nats)
    min_induce = 0,       -- drop candidates whose addition does not raise the refusal score this far
    -- lazy: bypass for every candidate below the layer cut, induce and KL in bypass order only
    -- until one passes (the same choice as full); full: every candidate's three scores, for the
    -- complete selection figure (--set select_mode=full).
    select_mode = "lazy",
    -- Selection on a large model: score only these layers / positions (empty: all; --set
    -- layers=8,10,12 positions=-1,-2), in full mode skip the layers max_layer_frac drops anyway,
    -- score on the first select_prompts of each set (0: all).
    layers = {},
    positions = {},
    skip_late_layers = false,
    select_prompts = 0,
    n_eval = 8,           -- harmful and harmless prompts whose completions the effect table shows
    max_new_tokens = 8,   -- generated tokens per completion (0: scores only)
    batch = 8,
  },
}

-- The chosen direction as a table of d numbers scaled back to its norm.
local function raw_vector(dir)
  local v = dir.vector:totable()
  for i = 1, #v do v[i] = v[i] * dir.norm end
  return v
end

function E.body(X)
  local P = X.params
  X:section("Candidates and selection")
  local dir = X:direction{from = "select", harmful = "harmful", harmless = "harmless", max_layer_frac = P.max_layer_frac,
                          max_kl = P.max_kl, min_induce = P.min_induce, batch = P.batch,
                          layers = #P.layers > 0 and P.layers or nil, positions = #P.positions > 0 and P.positions or nil,
                          skip_late_layers = P.skip_late_layers, mode = P.select_mode, n_eval = P.select_prompts > 0 and P.select_prompts or nil}
  if dir.selection then X:plot_selection(dir) end

  -- Summary of the choice, and the shipped direction (the model's direction.safetensors) next to it.
  local best
  for _, s in ipairs(dir.selection and dir.selection.scores or {}) do
    if s.pos == dir.pos and s.layer == dir.layer then best = s end
  end
  local shipped_cos
  local file = X.model_entry.path .. "/direction.safetensors"
  if util.exists(file) then
    local t = upstream.load_safetensors(file)
    if t.direction then shipped_cos = C.cosine(t.direction, dir.vector) end
  end
  local sel = dir.selection or {}
  local dcols = {"from", "layer", "pos", "norm", "bypass", "induce", "kl", "n_kept", "base_harmful", "base_harmless",
                 "cosine_with_shipped"}
  local drows = {csv.record({from = dir.from, layer = dir.layer, pos = dir.pos, norm = dir.norm,
    bypass = best and best.bypass, induce = best and best.induce, kl = best and best.kl, n_kept = sel.n_kept,
    base_harmful = sel.base_harmful, base_harmless = sel.base_harmless, cosine_with_shipped = shipped_cos}, dcols)}
  -- The shipped direction as its builder recorded it (organism.json), on its own prompts.
  local od = X.organism and X.organism.direction
  if type(od) == "table" then
    drows[2] = csv.record({from = "shipped (organism.json)", layer = od.layer, pos = od.pos, norm = od.norm,
      bypass = od.bypass, induce = od.induce, kl = od.kl, cosine_with_shipped = shipped_cos and 1 or nil}, dcols)
  end
  X:table("direction", drows, {title = "The chosen direction (base_*: mean refusal score without intervention; the " ..
    "shipped direction's numbers are its builder's, on its own prompts)"})
  if shipped_cos then
    X:note(("Cosine similarity between the selected direction and the model's shipped direction.safetensors: %.3f.")
      :format(shipped_cos))
  end

  -- The chosen direction at work: ablated from harmful prompts, added (at blocks.l.hook_resid_pre)
  -- to harmless ones, with completions.
  X:section("Effect of the chosen direction")
  local vec = raw_vector(dir)
  local sets = {{name = "harmful", list = X:prompts "harmful"}, {name = "harmless", list = X:prompts "harmless"}}
  local gp = {}
  for _, set in ipairs(sets) do
    for i = 1, math.min(P.n_eval, #set.list) do
      gp[#gp + 1] = {ids = X:encode(set.list[i]), label = ("%s%d"):format(set.name, i), set = set.name, text = set.list[i]}
    end
  end
  local tok = X:tokenizer()
  local grid <close> = upstream.grid{
    model = X:model(), prompts = gp, refusal_ids = X:refusal_ids(), max_new_tokens = P.max_new_tokens,
    tokenizer = P.max_new_tokens > 0 and tok or nil, cache = X.settings.cache .. "/grid",
    identity = {tokenizer = X._manifest.tokenizer.sha256 or "none"}, batch = 16, progress = not X.quiet,
    interventions = {
      {label = "ablate r", items = {{kind = "ablate", vector = dir.vector}}},
      {label = "add r", items = {{kind = "add", point = ("blocks.%d.hook_resid_pre"):format(dir.layer), vector = vec,
                                  alpha = 1, where = "all"}}},
    },
  }
  local rows = assert(grid:run())
  local names = {"none", "ablate r", "add r"}
  local acc = {}
  local out = {}
  for _, r in ipairs(rows) do
    local p = gp[r.prompt]
    local iv = names[r.intervention]
    out[#out + 1] = csv.record({set = p.set, prompt = p.label, intervention = iv, score = r.score, p_refusal = r.p_refusal,
      refused = r.refused, instruction = p.text, completion = r.text},
      {"set", "prompt", "intervention", "score", "p_refusal", "refused", "instruction", "completion"})
    local key = p.set .. "|" .. iv
    local a = acc[key] or {score = 0, refused = 0, n = 0}
    a.score, a.n = a.score + r.score, a.n + 1
    a.refused = a.refused + ((r.refused and 1) or 0)
    acc[key] = a
  end
  X:table("direction_effects", out, {title = "Refusal score and completion per prompt, with r ablated or added", show = 12})

  local series_score, series_ref, summary = {}, {}, {}
  for _, iv in ipairs(names) do
    local ys, yr = {}, {}
    for i, set in ipairs(sets) do
      local a = acc[set.name .. "|" .. iv]
      ys[i] = a and a.score / a.n or false
      yr[i] = a and a.refused / a.n or false
      summary[#summary + 1] = csv.record({set = set.name, intervention = iv, mean_score = ys[i], refusal_rate =
        P.max_new_tokens > 0 and yr[i] or nil, n = a and a.n or 0}, {"set", "intervention", "mean_score", "refusal_rate", "n"})
    end
    series_score[#series_score + 1] = {name = iv, values = ys}
    series_ref[#series_ref + 1] = {name = iv, values = yr}
  end
  X:table("direction_effects_summary", summary, {title = "Mean refusal score and substring refusal rate"})
  X:figure("groups", {name = "direction_effects_score", title = "The chosen direction: refusal score",
    subtitle = ("layer %s, position %s; ablated everywhere or added at blocks.%s.hook_resid_pre"):format(
      tostring(dir.layer), tostring(dir.pos), tostring(dir.layer)),
    xlabel = "prompt set", ylabel = "mean refusal score  log p/(1-p)", categories = {"harmful", "harmless"},
    series = series_score,
    caption = "Ablating r should lower the refusal score of harmful prompts; adding it should raise the harmless ones'"})
  if P.max_new_tokens > 0 then
    X:figure("groups", {name = "direction_effects_refusal", title = "The chosen direction: substring refusal rate",
      subtitle = ("%d generated tokens per completion"):format(P.max_new_tokens),
      xlabel = "prompt set", ylabel = "fraction refused", categories = {"harmful", "harmless"}, series = series_ref,
      ymin = 0, ymax = 1,
      caption = "Fraction of completions matching a refusal phrase"})
  end

  -- The direction itself, for other runs: X:direction wrote it with its position and layer.
  local path = X.results_dir .. "/direction.safetensors"
  X:note(("The chosen direction is saved as `%s` (tensor `direction`, unit; metadata `pos`, `layer`, `norm`); " ..
    "other runs take it with `--set direction=%s` (or the experiments' `direction_file`)."):format(util.basename(path), path))
  return dir
end

return E
