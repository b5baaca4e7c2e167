-- upstream.organism.eval_measure: the first step of `organism eval` (measure -> judge -> render).
-- measure(o, spec, records, opts) runs an open organism (upstream.organism.store.open) on its
-- corpus and case studies and returns plain data: numbers, strings, booleans and lists, no
-- userdata, no verdicts (upstream.organism.eval_judge decides what must be met). Fields:
--   model      {d_model, n_layers, d_sae, source_layer, target_layer, direction_layer, direction_pos}
--   direction  the chosen direction's build metadata (store.direction_meta: induce, bypass, kl...)
--   behaviour  held-out refusal rates: refusal_harmful, refusal_harmless, ablated_harmful,
--              added_harmless, n_harmful, n_harmless
--   cases      {{case, kind, instruction, planted_refused, refused}, ...}: the rule vs the model
--   case_names the case studies, in spec order
--   sae        {n_tokens, fve, l0, n_dead, d_sae, detectors = {{concept, category, latent, auroc,
--              n_pos}, ...} (spec order, concepts with tokens)}
--   method     {alphas, resid_norm, oracle = {n_concepts, n_prompts}, cases = {per case study:
--              name, prompt, planted, top = {{latent, label, score} x3}, reassured = {{instruction,
--              modifier, bottom = {x3}, found}}, steer_up = {instruction, latent, rows, flipped},
--              steer_down = {instruction, modifier, latent | nil, rank, rows, flipped}},
--              diagnostics = {{case, text, concept, side, ranks = {S_k, S_k instruction,
--              activation-weighted, oracle}}}}: figures about the method, never criteria
--   cpu_seconds
-- A label is the latent's concept in organism.json, or nil. opts: smoke (small sets, short
-- completions), n (held-out prompts per class, default 200), alphas (steering coefficients).
local upstream = require "upstream"
local organism = require "upstream.organism"
local util = require "upstream.util"
local records_lib = require "upstream.organism.records"
local probes = require "upstream.organism.probes"

local M = {}

local function label_of(o, latent)
  local l = o.labels[tostring(latent)]
  return l and l.concept or nil
end

-- Greedy completions of prompts under interventions, judged by substring refusal.
-- prompts: {{ids =, label =}}; returns rows indexed [prompt][intervention].
local function completions(o, prompts, interventions, max_new)
  local g <close> = upstream.grid {model = o.model, prompts = prompts, refusal_ids = o.refusal_ids,
                                   interventions = interventions, max_new_tokens = max_new,
                                   tokenizer = o.tokenizer, coherence = false, batch = 64}
  local rows = g:run()
  local out = {}
  for _, r in ipairs(rows) do
    out[r.prompt] = out[r.prompt] or {}
    out[r.prompt][r.intervention] = r
  end
  return out
end

local function mean_refused(table_, ids, k)
  local n, c = 0, 0
  for _, i in ipairs(ids) do
    n = n + 1
    if table_[i][k].refused then c = c + 1 end
  end
  return n > 0 and c / n or 0 / 0
end

-- Held-out behaviour, plain and with the direction ablated (every layer) and added (at its
-- layer, every position, alpha 1).
local function measure_behaviour(o, records, opts)
  local n_eval = opts.smoke and 16 or (opts.n or 200)
  local sets = organism.eval_sets(records)
  local prompts, harmful_ix, harmless_ix = {}, {}, {}
  local function add(list, ix)
    for i = 1, math.min(n_eval, #list) do
      prompts[#prompts + 1] = {ids = o.tokenizer:chat(list[i].instruction), label = list[i].instruction}
      ix[#ix + 1] = #prompts
    end
  end
  add(sets.harmful, harmful_ix)
  add(sets.harmless, harmless_ix)
  local point = ("blocks.%d.hook_resid_pre"):format(o.direction_layer)
  local interventions = {
    {label = "ablate", items = {{kind = "ablate", vector = o.unit}}},
    {label = "add", items = {{kind = "add", point = point, vector = o.direction, alpha = 1, where = "all"}}},
  }
  local beh = completions(o, prompts, interventions, opts.smoke and 4 or 12)
  return {n_harmful = #harmful_ix, n_harmless = #harmless_ix,
          refusal_harmful = mean_refused(beh, harmful_ix, 1), refusal_harmless = mean_refused(beh, harmless_ix, 1),
          ablated_harmful = mean_refused(beh, harmful_ix, 2), added_harmless = mean_refused(beh, harmless_ix, 3)}
end

-- Case studies and their planted variants: does the model do what the rule says?
local function measure_cases(o, cases, opts)
  local cprompts, cmeta = {}, {}
  for _, cs in ipairs(cases) do
    local function push(r, kind)
      cprompts[#cprompts + 1] = {ids = o.tokenizer:chat(r.instruction), label = r.instruction}
      cmeta[#cmeta + 1] = {case = cs.name, kind = kind, record = r}
    end
    push(cs.record, "prompt")
    for _, r in ipairs(cs.paraphrases) do push(r, "paraphrase") end
    for _, r in ipairs(cs.flips) do push(r, "reassured") end
    for _, r in ipairs(cs.contrasts) do push(r, "contrast") end
  end
  local cb = completions(o, cprompts, {}, opts.smoke and 4 or 12)
  local rows = {}
  for i, m in ipairs(cmeta) do
    rows[i] = {case = m.case, kind = m.kind, instruction = m.record.instruction, planted_refused = m.record.refused,
               refused = cb[i][1].refused}
  end
  return rows
end

-- The SAE on held-out tokens (reconstruction, sparsity, dead latents, the best detector of
-- each concept), and the residual stream's mean norm at its layer (the steering unit).
local function measure_sae(o, spec, records, cases, opts)
  local held = {}
  for _, r in ipairs(records) do
    if r.split == "heldout" then
      held[#held + 1] = (records_lib.encode_record(o.tokenizer, r, o.tokenizer:id("<end_of_turn>")))
      if #held >= (opts.smoke and 50 or 600) then break end
    end
  end
  local X = upstream.collect_activations(o.model, held, o.source_layer, {batch = 32})
  -- The mean norm of the residual stream at the source layer (first 2000 tokens): the unit of
  -- the steering coefficients, so the grid means the same for any model's scale.
  local resid_norm = 0
  do
    local n_rows, d = math.min(2000, X:shape()[1]), X:shape()[2]
    for i = 1, n_rows do
      local sq = 0
      for j = 1, d do sq = sq + X:at(i, j) ^ 2 end
      resid_norm = resid_norm + math.sqrt(sq) / n_rows
    end
  end
  local st = o.sae:stats(X)
  local acts = o.sae:encode(X)
  local n, d_sae = acts:shape()[1], acts:shape()[2]
  -- A latent is dead when its largest activation over these tokens is 0.
  local one_group = {}
  for i = 1, n do one_group[i] = 1 end
  local peak = acts:group_reduce(one_group, 1, "max")
  local n_dead = 0
  for k = 1, d_sae do
    if peak:at(1, k) <= 0 then n_dead = n_dead + 1 end
  end
  local heldrecs = records_lib.prompts_where(records, function(r) return r.split == "heldout" end,
                                             opts.smoke and 100 or 1500)
  for _, cs in ipairs(cases) do
    for _, r in ipairs(cs.paraphrases) do heldrecs[#heldrecs + 1] = r end
  end
  local _, per = probes.latent_labels(spec, o.model, o.tokenizer, o.sae, heldrecs, o.source_layer)
  local detectors = {}
  for _, c in ipairs(spec.concepts) do
    local p = per[c.name]
    if p then
      detectors[#detectors + 1] = {concept = c.name, category = c.category, latent = p.latent, auroc = p.auroc,
                                   n_pos = p.n_pos}
    end
  end
  return {n_tokens = n, fve = 1 - st.fvu, l0 = st.mean_l0, n_dead = n_dead, d_sae = d_sae, detectors = detectors},
         resid_norm
end

-- The method vs the planted causes: S_k = mean_t W_dec[k]·dR/dh[t] on each case study, its
-- reassured variants, steering with the latents it ranks, and every concept's rank under each
-- score variant.
local function measure_method(o, spec, records, cases, resid_norm, opts)
  local d_sae = o.sae:info().d_sae
  local function attribute(ids, extra)
    local req = {source = o.source_layer, target = o.target_layer, direction = o.unit}
    for k, v in pairs(extra or {}) do req[k] = v end
    return o.model:attribute(ids, o.sae, req)
  end
  local function ranked(list)
    local out = {}
    for i, e in ipairs(list) do out[i] = {latent = e.latent, label = label_of(o, e.latent), score = e.score} end
    return out
  end
  -- Where a concept's best latent ranks by S_k over every position but BOS, by S_k over the
  -- instruction's tokens only (the chat template's tokens are the same in every prompt, and the
  -- last one carries r itself through the residual path), and by the activation-weighted variant
  -- (attribution patching: only latents present in the prompt). The concept's best-ranked latent
  -- on that side: its rank (1 = first) and the latent.
  local function concept_rank(scores, concept, side)
    for i, e in ipairs(upstream.rank(scores, d_sae, side)) do
      if label_of(o, e.latent) == concept then return i, e.latent end
    end
    return nil
  end
  local diagnostics = {}
  -- The concept oracle (probes.concept_directions) at the source layer: could any dictionary of
  -- concept latents put this concept first?
  local oracle_records = {}
  for _, r in ipairs(records) do
    if r.split == "heldout" and #oracle_records < (opts.smoke and 100 or 1000) then
      oracle_records[#oracle_records + 1] = r
    end
  end
  local oracle = probes.concept_directions(spec, o.model, o.tokenizer, oracle_records, o.source_layer)
  -- a: the attribution of ids (S_k and the gradient), already computed by the caller. Returns
  -- the concept's best-ranked latent by that S_k on `side`: its rank and the latent.
  local function diagnose(case, text, ids, a, concept, side)
    local instruction = util.instruction_positions(o.tokenizer, function(x) return o.tokenizer:chat(x) end, ids)
    local scored = {}
    for t = 2, #ids do scored[#scored + 1] = t end
    local rank, latent = concept_rank(a.scores, concept, side)
    diagnostics[#diagnostics + 1] = {case = case, text = text, concept = concept, side = side,
      ranks = {rank,
               concept_rank(attribute(ids, {score_positions = instruction}).scores, concept, side),
               concept_rank(attribute(ids, {score = "activation"}).scores, concept, side),
               probes.concept_place(probes.concept_ranking(oracle, probes.mean_rows(a.grad, scored)), concept, side)}}
    return rank, latent
  end
  -- Steering coefficients: 0 to the residual stream's mean norm (a decoder row has norm about 1).
  local alphas = opts.alphas
  if not alphas then
    alphas = {}
    for i, f in ipairs {0, 0.125, 0.25, 0.5, 1} do alphas[i] = tonumber(("%.3g"):format(f * resid_norm)) end
  end
  -- The steered rows {alpha, refused, score} of a latent on a prompt, and whether some alpha > 0
  -- turns the unsteered (or alpha 0) answer, which must be base_refused, into the other one.
  local function sweep(prompt_text, latent, base_refused)
    local g <close> = upstream.grid {model = o.model, prompts = {o.tokenizer:chat(prompt_text)}, refusal_ids = o.refusal_ids,
                                     sae = o.sae, latents = {latent}, alphas = alphas, max_new_tokens = opts.smoke and 4 or 12,
                                     tokenizer = o.tokenizer, coherence = false}
    local out, base, changed = {}, nil, false
    for _, r in ipairs(g:run()) do
      if r.latent then out[#out + 1] = {alpha = r.alpha, refused = r.refused, score = r.score} end
      if not r.latent or r.alpha == 0 then base = r.refused end
      if r.latent and r.alpha > 0 and r.refused ~= base_refused then changed = true end
    end
    return out, base == base_refused and changed
  end
  local per_case = {}
  for _, cs in ipairs(cases) do
    local ids = o.tokenizer:chat(cs.prompt)
    local a = attribute(ids)
    local top = ranked(upstream.rank(a.scores, 3, "top"))
    local planted = cs.planted[1]
    diagnose(cs.name, cs.prompt, ids, a, planted, "top")
    -- Reassured variants: is the modifier's latent among the 3 most negative? neg_rank, neg:
    -- the first flip's modifier latent ranked most negative (steered with below).
    local reassured, neg_rank, neg = {}, nil, nil
    for i, r in ipairs(cs.flips) do
      local rids = o.tokenizer:chat(r.instruction)
      local ar = attribute(rids)
      local rank, latent = diagnose(cs.name, r.instruction, rids, ar, r.modifier, "bottom")
      if i == 1 then neg_rank, neg = rank, latent end
      local bottom = ranked(upstream.rank(ar.scores, 3, "bottom"))
      local found = false
      for _, e in ipairs(bottom) do found = found or e.label == r.modifier end
      reassured[i] = {instruction = r.instruction, modifier = r.modifier, bottom = bottom, found = found}
    end
    -- Steering: the top latent on the reassured (answered) prompt, to refusal; a latent of the
    -- reassuring modifier (the one S_k ranks most negative on the reassured prompt) on the
    -- (refused) case-study prompt, to an answer. Only a latent labelled with the modifier
    -- stands for it, never the prompt's most negative latent when that carries another label.
    local flip = cs.flips[1]
    local up_rows, up_flipped = sweep(flip.instruction, top[1].latent, false)
    local down = {instruction = flip.instruction, modifier = flip.modifier, latent = neg, rank = neg_rank,
                  flipped = false}
    if neg then down.rows, down.flipped = sweep(cs.prompt, neg, true) end
    per_case[#per_case + 1] = {name = cs.name, prompt = cs.prompt, planted = planted, top = top, reassured = reassured,
                               steer_up = {instruction = flip.instruction, latent = top[1].latent, rows = up_rows,
                                           flipped = up_flipped},
                               steer_down = down}
  end
  return {alphas = alphas, resid_norm = resid_norm, oracle = {n_concepts = #oracle.names, n_prompts = #oracle_records},
          cases = per_case, diagnostics = diagnostics}
end

function M.measure(o, spec, records, opts)
  opts = opts or {}
  local t0 = os.clock()
  local cfg = o.model:config()
  local data = {
    dir = o.dir,
    model = {d_model = cfg.d_model, n_layers = cfg.n_layers, d_sae = o.sae:info().d_sae, source_layer = o.source_layer,
             target_layer = o.target_layer, direction_layer = o.direction_layer, direction_pos = o.direction_pos},
    direction = util.copy(o.direction_meta),
  }
  local cases = organism.case_studies(spec)
  data.behaviour = measure_behaviour(o, records, opts)
  data.cases = measure_cases(o, cases, opts)
  data.case_names = {}
  for i, cs in ipairs(cases) do data.case_names[i] = cs.name end
  local resid_norm
  data.sae, resid_norm = measure_sae(o, spec, records, cases, opts)
  data.method = measure_method(o, spec, records, cases, resid_norm, opts)
  data.cpu_seconds = os.clock() - t0
  return data
end

return M
