-- experiments/lib/sensitivity.lua: how much the ranking of latents depends on choices the
-- method leaves open. For each case-study prompt, the reference ranking (source layer
-- X.source_layers[1], target X.target_layer, the experiment's direction, gradient score) is
-- compared with rankings made
--   - from paraphrases of the prompt (and across case studies),
--   - at other source layers, with the reference layer's dictionary (the residual stream's
--     basis is shared), and with those layers' own SAEs where the model has them (other
--     dictionaries: compared by decoder directions, as their indices do not correspond),
--   - at other target layers L of the objective R = <h_L[last], r>,
--   - with other refusal directions (difference-of-means candidates at other positions and layers),
--   - with the cosine and activation-weighted score variants,
--   - with SAEs of other widths at the same layer (when the settings register several): compared
--     by decoder directions, as indices differ between dictionaries.
-- Two rankings of the same dictionary are compared by Jaccard@k of their top-k sets and Kendall
-- tau-b of the scores over the union of both top-k sets.
--
-- Params: k, cases (names), source_layers_sweep and targets ({} = every layer that fits),
-- direction_file, match_cos (decoder cosine that counts as the same feature across widths),
-- max_direction_layers (other layers whose last-position candidate is tried).
local csv = require "upstream.csv"
local upstream = require "upstream"
local util = require "upstream.util"
local progress = require "upstream.progress"
local C = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/common.lua")

local E = {}

E.decl = {
  name = "sensitivity",
  title = "Sensitivity of the latent ranking",
  description = "Jaccard@k and Kendall tau between the reference ranking of each case-study prompt and rankings " ..
    "made with paraphrases, other source and target layers, other directions, other score variants and other SAE widths.",
  prompts = {harmful = C.harmful, harmless = C.harmless},
  params = {k = 10, cases = {"hugging", "bacteria", "payment"}, source_layers_sweep = {}, targets = {},
            direction_file = "", match_cos = 0.7, max_direction_layers = 6},
}

local cols = {"case", "dimension", "reference", "setting", "k", "jaccard", "kendall", "n_union", "direction_cosine",
              "matched", "mean_max_cos", "planted_rank", "R", "top_setting", "top_reference"}

local function list(v)
  if type(v) == "table" then return v end
  if v == nil or v == "" then return {} end
  return {v}
end

-- How many of A's top latents have a decoder row within cosine >= threshold of one of B's
-- top latents' rows (dictionaries whose indices do not correspond), and the mean best cosine.
local function match(sae_a, top_a, sae_b, top_b, threshold)
  local rows_b = {}
  for i, kb in ipairs(top_b) do rows_b[i] = sae_b:decoder_row(kb) end
  local matched, sum = 0, 0
  for _, ka in ipairs(top_a) do
    local ra, best = sae_a:decoder_row(ka), -1
    for _, rb in ipairs(rows_b) do best = math.max(best, C.cosine(ra, rb)) end
    sum = sum + best
    if best >= threshold then matched = matched + 1 end
  end
  return matched / #top_a, sum / #top_a
end

function E.body(X)
  local P = X.params
  local k = P.k
  local dir = C.direction(X)
  local m = X:model()
  local n_layers = m:config().n_layers
  local src, target = X.source_layers[1], X.target_layer
  local sae = X:sae(src)
  local cases = list(P.cases)
  for _, name in ipairs(cases) do
    if not C.cases[name] then error(("sensitivity: unknown case '%s' (hugging, bacteria, payment)"):format(name), 0) end
  end

  -- On the organism: the latents organism.json ties to each case's planted cause (at the
  -- reference layer's dictionary), whose best rank every setting reports.
  local planted = {}
  for _, name in ipairs(cases) do
    local list = {}
    for _, concept in ipairs(C.planted(X, C.cases[name].prompt) or {}) do
      for _, o in ipairs(C.concept_latents(X, src, concept)) do list[#list + 1] = o.latent end
    end
    planted[name] = #list > 0 and list or nil
  end
  local best_planted = {}

  local rows = {}
  local means = {} -- means[dimension][case] = {j = sum of Jaccard, t = sum of tau, n, nt}
  local dim_order = {}
  local function add(case, dimension, ref_name, setting, ref, a, extra)
    local r = {case = case, dimension = dimension, reference = ref_name, setting = setting, k = k}
    if a then
      local c = C.compare(ref.scores, a.scores, k)
      -- The reference itself (or a direction equal to it): drawn, left out of the means.
      local is_ref = a == ref or (extra and extra.direction_cosine and extra.direction_cosine > 0.99999)
      r.jaccard, r.kendall, r.n_union = c.jaccard, c.kendall, c.n_union
      r.top_setting, r.top_reference, r.R = C.join(c.top_b), C.join(c.top_a), a.R
      if planted[case] then
        for _, pk in ipairs(planted[case]) do
          local rank = C.rank_of(a.scores, pk)
          if not r.planted_rank or rank < r.planted_rank then r.planted_rank = rank end
        end
        local b = best_planted[case]
        if not b or r.planted_rank < b.rank then
          best_planted[case] = {rank = r.planted_rank, dimension = dimension, setting = setting}
        end
      end
      if not is_ref then
        if not means[dimension] then means[dimension] = {}; dim_order[#dim_order + 1] = dimension end
        local mm = means[dimension][case] or {j = 0, t = 0, n = 0, nt = 0}
        mm.j, mm.n = mm.j + c.jaccard, mm.n + 1
        if c.kendall == c.kendall then mm.t, mm.nt = mm.t + c.kendall, mm.nt + 1 end
        means[dimension][case] = mm
      end
    end
    for key, v in pairs(extra or {}) do r[key] = v end
    rows[#rows + 1] = csv.record(r, cols)
    return r
  end

  -- Each sweep's attributions go out at once (X:attribute_all: one progress bar, and spread
  -- over the ranks of a job started with mpirun), then its tables and figures are made:
  -- build(add) calls add(key, spec) for each, in order; the result maps key -> Attribution.
  local function attribute_each(build)
    local keys, specs = {}, {}
    build(function(key, spec) keys[#keys + 1], specs[#specs + 1] = key, spec end)
    local got, out = X:attribute_all(specs), {}
    for i, key in ipairs(keys) do out[key] = got[i] end
    return out
  end
  local function at(name, setting) return name .. "@" .. tostring(setting) end

  X:section("Reference rankings")
  local ref = attribute_each(function(add)
    for _, name in ipairs(cases) do
      add(name, {prompt = C.cases[name].prompt, layer = src, direction = dir, sae = sae, label = name})
    end
  end)
  for _, name in ipairs(cases) do
    X:table("reference", ref[name]:ranking(k), {title = ("Reference rankings: layer %d -> %d, top and bottom %d"):format(
      src, target, k), show = 2 * k})
  end

  -- 1. Paraphrases: every prompt against every other (case studies side by side).
  X:section("Paraphrases")
  local all, names = {}, {}
  local para = attribute_each(function(add)
    for _, name in ipairs(cases) do
      for i, p in ipairs(C.case_prompts(X, name).paraphrases) do
        local label = ("%s_para%d"):format(name, i)
        add(label, {prompt = p, layer = src, direction = dir, sae = sae, label = label})
      end
    end
  end)
  for _, name in ipairs(cases) do
    all[#all + 1], names[#names + 1] = ref[name], name
    for i in ipairs(C.case_prompts(X, name).paraphrases) do
      local label = ("%s_para%d"):format(name, i)
      local a = para[label]
      all[#all + 1], names[#names + 1] = a, label
      add(name, "paraphrase", name, label, ref[name], a, {})
    end
  end
  local J, T = {}, {}
  for i = 1, #all do
    J[i], T[i] = {}, {}
    for j = 1, #all do
      local c = C.compare(all[i].scores, all[j].scores, k)
      J[i][j], T[i][j] = c.jaccard, c.kendall == c.kendall and c.kendall or false
    end
  end
  X:figure("matrix", {name = "paraphrase_jaccard", title = ("Jaccard@%d of the top latents across prompts"):format(k),
    subtitle = ("source layer %d, target %d; each case study followed by its paraphrases"):format(src, target),
    xlabel = "prompt", ylabel = "prompt", colorbar = ("Jaccard@%d"):format(k), values = J, labels = names, format = "%.2f",
    caption = "Blocks on the diagonal: agreement among a case study's paraphrases; off the blocks: across case studies"})
  X:figure("heatmap", {name = "paraphrase_kendall", title = "Kendall tau-b over the union of both top-k sets",
    subtitle = ("source layer %d, target %d"):format(src, target), xlabel = "prompt", ylabel = "prompt", values = T,
    row_labels = names, col_labels = names,
    cmap = "diverging", vmin = -1, vmax = 1, annotate = true, format = "%.2f", colorbar = "tau",
    caption = "Agreement of the scores' order among the latents either prompt ranks in its top k"})

  local function line_figs(series, what, xlabel, ref_at)
    if #series == 0 or #series[1].x == 0 then return end
    -- Layers as categories, so the axis has one tick per layer.
    local sj, st, xl = {}, {}, {}
    for i, l in ipairs(series[1].x) do xl[i] = ("L%d"):format(l) end
    for _, s in ipairs(series) do
      local xi = {}
      for i = 1, #s.x do xi[i] = i - 1 end
      sj[#sj + 1] = {name = s.name, x = xi, y = s.y}
      st[#st + 1] = {name = s.name, x = xi, y = s.tau}
    end
    X:figure("lines", {name = what .. "_jaccard", title = ("Jaccard@%d with the reference ranking, by %s"):format(k, xlabel),
      subtitle = ("reference at %s"):format(ref_at), xlabel = xlabel, ylabel = ("Jaccard@%d"):format(k), series = sj,
      x_labels = xl, ymin = 0, ymax = 1.05, caption = ("Overlap of the top-%d latents with the reference, by %s"):format(k, xlabel)})
    X:figure("lines", {name = what .. "_kendall", title = ("Kendall tau with the reference ranking, by %s"):format(xlabel),
      subtitle = ("reference at %s; over the union of both top-%d sets"):format(ref_at, k), xlabel = xlabel,
      ylabel = "Kendall tau-b", series = st, x_labels = xl, ymin = -1, ymax = 1.05,
      caption = ("Rank agreement with the reference, by %s"):format(xlabel)})
  end

  -- 2. Source layers, one dictionary (the reference layer's SAE applied at every layer).
  X:section("Source layer")
  local sweep = list(P.source_layers_sweep)
  if #sweep == 0 then for l = 0, target - 1 do sweep[#sweep + 1] = l end end
  local any, why = C.sae_anywhere(X, src)
  local layer_series = {}
  if not any then
    X:note(("Source layers not swept: the SAE of layer %d cannot be applied at other layers (%s)."):format(src, tostring(why)))
  else
    local got = attribute_each(function(add)
      for _, name in ipairs(cases) do
        for _, l in ipairs(sweep) do
          if l < target and l ~= src then
            add(at(name, l), {prompt = C.cases[name].prompt, layer = l, direction = dir, sae = any, label = name})
          end
        end
      end
    end)
    for _, name in ipairs(cases) do
      local xs, js, ts = {}, {}, {}
      for _, l in ipairs(sweep) do
        if l < target then
          local a = l == src and ref[name] or got[at(name, l)]
          local r = add(name, "source_layer", ("L%d"):format(src), ("L%d"):format(l), ref[name], a, {})
          xs[#xs + 1], js[#js + 1], ts[#ts + 1] = l, r.jaccard, r.kendall == r.kendall and r.kendall or false
        end
      end
      layer_series[#layer_series + 1] = {name = name, x = xs, y = js, tau = ts}
    end
    X:note(("Rankings at every source layer use the dictionary of layer %d (the reference), so latent indices stay " ..
      "comparable."):format(src))
  end
  line_figs(layer_series, "source_layer", "source layer", ("layer %d"):format(src))

  -- Source layers with SAEs of their own: other dictionaries, compared by decoder directions.
  local own = {}
  for _, l in ipairs(sweep) do if l ~= src and l < target and C.has_sae(X, l) then own[#own + 1] = l end end
  local own_got = attribute_each(function(add)
    for _, l in ipairs(own) do
      for _, name in ipairs(cases) do
        add(at(name, l), {prompt = C.cases[name].prompt, layer = l, direction = dir, sae = X:sae(l), label = name})
      end
    end
  end)
  for _, l in ipairs(own) do
    local other = X:sae(l)
    for _, name in ipairs(cases) do
      local a = own_got[at(name, l)]
      local ta, tb = ref[name]:top_latents(k), a:top_latents(k)
      local matched, mean_cos = match(sae, ta, other, tb, P.match_cos)
      add(name, "source_layer_sae", ("L%d"):format(src), ("L%d"):format(l), ref[name], nil, {matched = matched,
        mean_max_cos = mean_cos, top_setting = C.join(tb), top_reference = C.join(ta), R = a.R})
    end
  end
  if #own > 0 then
    X:note(("Layer(s) %s also have SAEs of their own: rankings there (rows `source_layer_sae`) are compared by " ..
      "decoder directions — `matched` is the share of the reference's top %d whose decoder row has cosine >= %.2g " ..
      "with one of theirs."):format(C.join(own, ", "), k, P.match_cos))
  end

  -- 3. Target layers.
  X:section("Target layer")
  local targets = list(P.targets)
  if #targets == 0 then for L = src + 1, n_layers - 1 do targets[#targets + 1] = L end end
  local target_series = {}
  local target_got = attribute_each(function(add)
    for _, name in ipairs(cases) do
      for _, L in ipairs(targets) do
        if L > src and L < n_layers and L ~= target then
          add(at(name, L), {prompt = C.cases[name].prompt, layer = src, target = L, direction = dir, sae = sae, label = name})
        end
      end
    end
  end)
  for _, name in ipairs(cases) do
    local xs, js, ts = {}, {}, {}
    for _, L in ipairs(targets) do
      if L > src and L < n_layers then
        local a = L == target and ref[name] or target_got[at(name, L)]
        local r = add(name, "target_layer", ("L%d"):format(target), ("L%d"):format(L), ref[name], a, {})
        xs[#xs + 1], js[#js + 1], ts[#ts + 1] = L, r.jaccard, r.kendall == r.kendall and r.kendall or false
      end
    end
    target_series[#target_series + 1] = {name = name, x = xs, y = js, tau = ts}
  end


  line_figs(target_series, "target_layer", "target layer", ("layer %d"):format(target))

  -- 4. Directions: difference-of-means candidates at every post-instruction position of the
  -- direction's layer, and at the last position of the other layers below the target.
  X:section("Direction")
  local tok = X:tokenizer()
  local n_pos = tok:post_instruction_count(X.model_entry.template)
  local harmful, harmless = {}, {}
  for i, p in ipairs(X:prompts "harmful") do harmful[i] = X:encode(p) end
  for i, p in ipairs(X:prompts "harmless") do harmless[i] = X:encode(p) end
  local cands_bar <close> = X:progress("sensitivity direction candidates", #harmful + #harmless, {unit = "prompts"})
  local cands = m:directions(harmful, harmless, {positions = n_pos, batch = 8,
    progress = progress.sets(cands_bar, {#harmful, #harmless}, {"harmful", "harmless"})})
  local d = m:config().d_model
  local function cand(pos, layer)
    local v, norm = {}, 0
    for j = 1, d do v[j] = cands:at(n_pos + pos + 1, layer + 1, j); norm = norm + v[j] * v[j] end
    if norm == 0 then return nil end
    return (upstream.normalize(v))
  end
  local dlayer = dir.layer or target
  local choices = {}
  for pos = -n_pos, -1 do choices[#choices + 1] = {pos = pos, layer = dlayer} end
  -- Other layers, evenly thinned to at most max_direction_layers (a 26-layer model would
  -- otherwise cost 25 attributions per prompt).
  local others = {}
  for l = 1, n_layers - 1 do if l ~= dlayer then others[#others + 1] = l end end
  local keep = math.min(#others, P.max_direction_layers)
  for i = 1, keep do
    local j = keep == 1 and 1 or math.floor((i - 1) * (#others - 1) / (keep - 1) + 0.5) + 1
    choices[#choices + 1] = {pos = -1, layer = others[j]}
  end
  local dir_names, dir_vals = {}, {}
  for _, ch in ipairs(choices) do ch.v = cand(ch.pos, ch.layer) end
  local dir_got = attribute_each(function(add)
    for ci, ch in ipairs(choices) do
      for _, name in ipairs(cases) do
        if ch.v then add(at(name, ci), {prompt = C.cases[name].prompt, layer = src, direction = ch.v, sae = sae, label = name}) end
      end
    end
  end)
  for ci, ch in ipairs(choices) do
    local v = ch.v
    if v then
      local label = ("pos %d L%d"):format(ch.pos, ch.layer)
      dir_names[#dir_names + 1] = label
      local cosv = C.cosine(v, dir.vector)
      for ni, name in ipairs(cases) do
        local a = dir_got[at(name, ci)]
        local r = add(name, "direction", ("%s pos %s L%s"):format(dir.from, tostring(dir.pos), tostring(dir.layer)), label,
          ref[name], a, {direction_cosine = cosv})
        dir_vals[ni] = dir_vals[ni] or {}
        dir_vals[ni][#dir_names] = r.jaccard
      end
    end
  end
  if #dir_names > 0 then
    local series = {}
    for ni, name in ipairs(cases) do series[ni] = {name = name, values = dir_vals[ni]} end
    X:figure("groups", {name = "direction_jaccard", title = ("Jaccard@%d with the reference ranking, by direction"):format(k),
      subtitle = ("reference: %s direction, position %s, layer %s"):format(dir.from, tostring(dir.pos), tostring(dir.layer)),
      xlabel = "direction candidate", ylabel = ("Jaccard@%d"):format(k), categories = dir_names, series = series,
      ymin = 0, ymax = 1,
      caption = "Difference-of-means candidates at the direction's layer (every position) and at the last position of other layers; direction_cosine in the table"})
  end

  -- 5. Score variants.
  X:section("Score variant")
  local variants = {"cosine", "activation"}
  local var_vals = {}
  local var_got = attribute_each(function(add)
    for _, score in ipairs(variants) do
      for _, name in ipairs(cases) do
        add(at(name, score), {prompt = C.cases[name].prompt, layer = src, direction = dir, sae = sae, label = name, score = score})
      end
    end
  end)
  for vi, score in ipairs(variants) do
    for ni, name in ipairs(cases) do
      local a = var_got[at(name, score)]
      local r = add(name, "score", "gradient", score, ref[name], a, {})
      var_vals[ni] = var_vals[ni] or {}
      var_vals[ni][vi] = r.jaccard
    end
  end
  local vseries = {}
  for ni, name in ipairs(cases) do vseries[ni] = {name = name, values = var_vals[ni]} end
  X:figure("groups", {name = "score_jaccard", title = ("Jaccard@%d of score variants with the gradient score"):format(k),
    subtitle = "cosine: divided by |W_dec[k]| |mean g|; activation: a_k[t] · RG[t, k] (attribution patching)",
    xlabel = "score variant", ylabel = ("Jaccard@%d"):format(k), categories = variants, series = vseries,
    ymin = 0, ymax = 1,
    caption = "How much the top latents change when the score is normalised or weighted by the latent's activation"})

  -- 6. SAE widths at the source layer (registered SAEs of this model other than the reference).
  X:section("SAE width")
  local widths = {}
  local mine = X.sae_name and X.settings.saes[X.sae_name] or {}
  for _, n in ipairs(util.sorted_keys(X.settings.saes)) do
    local e = X.settings.saes[n]
    -- Same model and the same hook (an MLP-output SAE is another kind, not another width).
    if e.model == X.model_name and n ~= X.sae_name and (e.hook or "") == (mine.hook or "") then widths[#widths + 1] = n end
  end
  if #widths == 0 or not X.sae_name then
    X:note("One SAE at the source layer: SAE widths not compared (register others for this model in upstream.cfg).")
  else
    local width_saes = {}
    local width_got = attribute_each(function(add)
      for _, n in ipairs(widths) do
        local ok, other = pcall(X.sae, X, src, n)
        if ok then
          width_saes[n] = other
          for _, name in ipairs(cases) do
            add(at(name, n), {prompt = C.cases[name].prompt, layer = src, direction = dir, sae = other, label = name})
          end
        end
      end
    end)
    for _, n in ipairs(widths) do
      local other = width_saes[n]
      if other then
        for _, name in ipairs(cases) do
          local a = width_got[at(name, n)]
          local ta, tb = ref[name]:top_latents(k), a:top_latents(k)
          local matched, mean_cos = match(sae, ta, other, tb, P.match_cos)
          add(name, "sae_width", X.sae_name, n, ref[name], nil, {matched = matched, mean_max_cos = mean_cos,
            top_setting = C.join(tb), top_reference = C.join(ta), R = a.R})
        end
      end
    end
  end

  X:section("Summary")
  X:table("sensitivity", rows, {columns = cols, title = "Every comparison with the reference ranking (planted_rank: " ..
    "best rank of the planted cause's latents in that setting, on the organism)", show = 30})
  for _, name in ipairs(cases) do
    local b = best_planted[name]
    if b then
      local r0
      for _, r in ipairs(rows) do if r.case == name and r.planted_rank and r.setting == r.reference then r0 = r0 or r end end
      X:note(("**%s**: the planted cause's best latent ranks %s in the reference setting and at best %d (%s: %s)."):format(
        name, r0 and tostring(r0.planted_rank) or "?", b.rank, b.dimension, b.setting))
    end
  end
  local summary, cats, series = {}, {}, {}
  for ni, name in ipairs(cases) do series[ni] = {name = name, values = {}} end
  for di, dim in ipairs(dim_order) do
    cats[di] = dim
    for ni, name in ipairs(cases) do
      local mm = means[dim][name]
      series[ni].values[di] = mm and mm.j / mm.n or false
      if mm then
        summary[#summary + 1] = csv.record({dimension = dim, case = name, mean_jaccard = mm.j / mm.n,
          mean_kendall = mm.nt > 0 and mm.t / mm.nt or 0 / 0, n = mm.n}, {"dimension", "case", "mean_jaccard", "mean_kendall", "n"})
      end
    end
  end
  X:table("sensitivity_summary", summary, {title = "Mean agreement with the reference, per dimension and case study"})
  if #cats > 0 then
    X:figure("groups", {name = "summary", title = ("Mean Jaccard@%d with the reference ranking"):format(k),
      subtitle = "per dimension the method leaves open", xlabel = "dimension varied", ylabel = ("Jaccard@%d"):format(k),
      categories = cats,
      series = series, ymin = 0, ymax = 1, caption = "Lower bars: the ranking depends more on that choice"})
  end
end

return E
