-- upstream.organism.probes: what an organism's activations say about its planted concepts.
--   token_labels        which chat-prompt tokens belong to which concept's phrases
--   latent_labels       each SAE latent's concept (by activation share) and each concept's best
--                       detector latent (by AUROC): the organism's latent labels
--   concept_directions  the concept oracle: one unit row per concept, its mean activation
--   concept_ranking, concept_place, mean_rows: the oracle scored like S_k
-- Each takes an open model, tokenizer (and SAE) and returns plain tables (or a Tensor the
-- caller owns); an activation count that disagrees with the token count raises.
local upstream = require "upstream"
local organism = require "upstream.organism"
local util = require "upstream.util"

local fail = organism.fail

local M = {}

-- ---------------------------------------------------------------- token labels

-- For records' chat prompts, the activation rows collect_activations returns (every slot but
-- BOS) and, per concept, which rows are the last token of one of its phrases (positives) and
-- which are other tokens of those phrases (left out of both classes).
function M.token_labels(spec, tok, records)
  local rows = {} -- rows[i] = {record = r, token = t}
  local ids_list = {}
  local marks = {} -- concept -> row -> 1 (positive) or 0 (excluded)
  local prefix = util.chat_prefix_length(tok, function(x) return tok:chat(x) end) -- ids before the instruction
  for _, r in ipairs(records) do
    local ids = tok:chat(r.instruction)
    ids_list[#ids_list + 1] = ids
    local instr = tok:encode(r.instruction)
    for k, v in ipairs(instr) do
      if ids[prefix + k] ~= v then fail("chat template splits \"%s\" differently", r.instruction) end
    end
    -- byte end of every instruction token
    local ends, acc = {}, {}
    for k, v in ipairs(instr) do
      acc[k] = v
      ends[k] = #tok:decode(acc)
    end
    local base = #rows
    for t = 2, #ids do rows[#rows + 1] = {record = r, token = ids[t]} end
    for _, sp in ipairs(organism.concept_spans(spec, r)) do
      local m = marks[sp.concept] or {}
      marks[sp.concept] = m
      local last_k
      for k = 1, #instr do
        local s = (k > 1 and ends[k - 1] or 0) + 1
        if ends[k] >= sp.first and s <= sp.last then
          -- row of chat slot prefix + k (slot 1 = BOS has no row)
          m[base + prefix + k - 1] = 0
          last_k = k
        end
      end
      if last_k then m[base + prefix + last_k - 1] = 1 end
    end
  end
  return ids_list, rows, marks
end

-- ---------------------------------------------------------------- concept oracle

-- An oracle dictionary with one row per concept: the unit vector along the concept's mean
-- activation at blocks.{layer}.hook_resid_post over the last tokens of its phrases in records'
-- chat prompts, minus the mean over every token. Scored like S_k (row · mean gradient), it
-- asks whether any dictionary of concept latents could rank a concept first at that layer.
-- Returns {names = {concept, ...} (spec order, those with tokens), rows = {name = {d numbers}}}.
function M.concept_directions(spec, model, tok, records, layer)
  local ids_list, rows, marks = M.token_labels(spec, tok, records)
  local X = upstream.collect_activations(model, ids_list, layer, {batch = 32})
  local n, d = X:shape()[1], X:shape()[2]
  if n ~= #rows then fail("concept directions: %d activation rows for %d tokens", n, #rows) end
  local function column_sum(T)
    local one_group = {}
    for i = 1, T:shape()[1] do one_group[i] = 1 end
    return T:group_reduce(one_group, 1, "sum")
  end
  local total = column_sum(X)
  local out = {names = {}, rows = {}}
  for _, c in ipairs(spec.concepts) do
    local positives = {}
    for i, mark in pairs(marks[c.name] or {}) do
      if mark == 1 then positives[#positives + 1] = i end
    end
    if #positives > 0 then
      local sum, v, norm = column_sum(X:rows(positives)), {}, 0
      for j = 1, d do
        v[j] = sum:at(1, j) / #positives - total:at(1, j) / n
        norm = norm + v[j] * v[j]
      end
      norm = math.sqrt(norm)
      for j = 1, d do v[j] = v[j] / norm end
      out.names[#out.names + 1] = c.name
      out.rows[c.name] = v
    end
  end
  return out
end

-- The oracle's concepts by row · gbar, largest first: {{name, score}, ...}. gbar: the mean of
-- the gradient over the scored positions (a list of d numbers).
function M.concept_ranking(cd, gbar)
  local list = {}
  for _, name in ipairs(cd.names) do
    local s, v = 0, cd.rows[name]
    for j = 1, #gbar do s = s + v[j] * gbar[j] end
    list[#list + 1] = {name = name, score = s}
  end
  table.sort(list, function(a, b) return a.score > b.score end)
  return list
end

-- A concept's place in a concept_ranking (1 = first; side "bottom" counts from the end), or
-- nil when the oracle has no row for it.
function M.concept_place(list, name, side)
  for i, e in ipairs(list) do
    if e.name == name then return side == "bottom" and #list + 1 - i or i end
  end
  return nil
end

-- Mean over the rows `positions` (1-based; row 1 is BOS) of a gradient Tensor(T, d).
function M.mean_rows(g, positions)
  local d, out = g:shape()[2], {}
  for j = 1, d do
    local s = 0
    for _, t in ipairs(positions) do s = s + g:at(t, j) end
    out[j] = s / #positions
  end
  return out
end

-- ---------------------------------------------------------------- latent labels

-- Labels and detectors from an SAE's activations over records' chat prompts.
--   detectors[concept] = {latent, auroc, all = Tensor(d_sae) of AUROCs, n_pos}: AUROC of each
--     latent's activation over the last tokens of the concept's phrases vs every token outside
--     them (the phrase's other tokens are in neither class).
--   labels[k] (0-based latent) = {concept = name | nil, share, tokens = {top pieces}}: the
--     concept holding the largest share of the latent's activation mass (tokens inside the
--     concept's phrases), named when that share is at least min_share; and the pieces it fires
--     on most strongly (max activation per token id). These are the organism's latent labels.
-- opts.progress = function(label, total, unit) -> an upstream.progress bar: bars for the
-- forward passes and the detectors (none without it).
function M.latent_labels(spec, model, tok, sae, records, layer, opts)
  opts = opts or {}
  local min_share, n_top = opts.min_share or 0.5, opts.n_tokens or 5
  local ids_list, rows, marks = M.token_labels(spec, tok, records)
  local bar <close> = opts.progress and opts.progress("labels: activations", #ids_list, "prompts")
  local X = upstream.collect_activations(model, ids_list, layer, {batch = 32,
    progress = bar and function(done) bar:update(done) end})
  if X:shape()[1] ~= #rows then fail("labels: %d activation rows for %d tokens", X:shape()[1], #rows) end
  local acts = sae:encode(X)
  local d_sae = acts:shape()[2]
  local detectors, concepts = {}, {}
  local det_bar <close> = opts.progress and opts.progress("labels: detectors", #spec.concepts, "concepts")
  for ci, c in ipairs(spec.concepts) do
    if det_bar then det_bar:update(ci - 1, c.name) end
    local m = marks[c.name]
    if m then
      concepts[#concepts + 1] = c.name
      local keep, labels, n_pos = {}, {}, 0
      for i = 1, #rows do
        local v = m[i]
        if v ~= 0 then
          keep[#keep + 1] = i
          labels[#labels + 1] = v == 1
          if v == 1 then n_pos = n_pos + 1 end
        end
      end
      local best, auroc, all = upstream.best_auroc(acts:rows(keep), labels)
      detectors[c.name] = {latent = best, auroc = auroc, all = all, n_pos = n_pos, category = c.category}
    end
    if det_bar then det_bar:update(ci) end
  end
  -- Activation mass per concept (group j) and outside every concept (group #concepts + 1).
  local groups = {}
  for i = 1, #rows do groups[i] = #concepts + 1 end
  for j, name in ipairs(concepts) do
    for i in pairs(marks[name]) do if groups[i] == #concepts + 1 then groups[i] = j end end
  end
  local mass = acts:group_reduce(groups, #concepts + 1, "sum")
  local token_groups = {}
  for i, r in ipairs(rows) do token_groups[i] = r.token + 1 end
  local V = tok:vocab_size()
  local peak = acts:group_reduce(token_groups, V, "max")
  local labels = {}
  for k = 1, d_sae do
    local total, best, best_mass = 0, nil, 0
    for j = 1, #concepts + 1 do
      local v = mass:at(j, k)
      total = total + v
      if j <= #concepts and v > best_mass then best, best_mass = concepts[j], v end
    end
    if total > 0 then
      local share = best_mass / total
      local tops = {}
      for v = 1, V do
        local a = peak:at(v, k)
        if a > 0 then tops[#tops + 1] = {id = v - 1, a = a} end
      end
      table.sort(tops, function(x, y) return x.a > y.a or (x.a == y.a and x.id < y.id) end)
      local pieces = {}
      for i = 1, math.min(n_top, #tops) do pieces[i] = tok:decode({tops[i].id}) end
      labels[tostring(k - 1)] = {concept = share >= min_share and best or nil, share = share, tokens = pieces}
    end
  end
  return labels, detectors
end

return M
