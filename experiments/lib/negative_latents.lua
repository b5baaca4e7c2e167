-- experiments/lib/negative_latents.lua: the bottom of the ranking. Latents whose decoder rows
-- point against the refusal gradient (S_k < 0, "negatively aligned") should lower R when
-- added; does refusal fall when they are steered into harmful and borderline prompts? For each
-- prompt set the scores S_k are averaged over its prompts, the bottom latents are steered with
-- positive coefficients (random latents as controls), and the result is set beside ablating
-- the refusal direction itself (what removing refusal outright does).
--
-- Params: n_prompts (per set), list_k (bottom latents listed), steer_k (steered), alphas
-- (multiples of the mean residual norm when alpha_unit = "norm"), controls, max_new_tokens,
-- where (positions steered), direction_file.
local csv = require "upstream.csv"
local upstream = require "upstream"
local C = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/common.lua")

local E = {}

local borderline = {}
for _, p in ipairs(C.borderline) do borderline[#borderline + 1] = p end
for _, name in ipairs(C.case_order) do borderline[#borderline + 1] = C.cases[name].prompt end

E.decl = {
  name = "negative_latents",
  title = "Negatively aligned latents: does refusal fall?",
  description = "Latents at the bottom of the ranking (decoder rows against the refusal gradient, averaged over a " ..
    "prompt set) steered into harmful and borderline prompts, against random latents and against ablating the " ..
    "refusal direction.",
  prompts = {harmful = C.harmful, borderline = borderline, harmless = C.harmless},
  params = {n_prompts = 6, list_k = 10, steer_k = 3, alphas = {0, 0.25, 0.5, 1}, alpha_unit = "norm", controls = 2,
            max_new_tokens = 8, direction_file = "", where = "all"},
}

local steer_cols = {"set", "prompt", "layer", "kind", "latent", "name", "where", "alpha", "alpha_frac", "max_new_tokens", "score",
                    "dscore", "p_refusal", "R", "dR", "predicted_dR", "refused", "text"}

function E.body(X)
  local P = X.params
  local dir = C.direction(X)
  local src, target = X.source_layers[1], X.target_layer
  local sae = X:sae(src)
  local summary = {}
  local verdicts = {}

  for _, set in ipairs({"harmful", "borderline"}) do
    X:section(("%s prompts"):format(set:sub(1, 1):upper() .. set:sub(2)))
    local texts = {}
    for i, p in ipairs(X:prompts(set)) do if i <= P.n_prompts then texts[#texts + 1] = p end end

    -- Mean S_k over the set, and how often each latent is in a prompt's own bottom list.
    local mean, in_bottom, ids = nil, {}, {}
    -- One attribution per prompt, all at once (spread over the ranks of an mpirun job).
    local specs = {}
    for i, p in ipairs(texts) do specs[i] = {prompt = p, layer = src, direction = dir, sae = sae, label = ("%s%d"):format(set, i)} end
    for _, a in ipairs(X:attribute_all(specs)) do
      ids[#ids + 1] = a.ids
      local v = a.scores:totable()
      if not mean then mean = {} for j = 1, #v do mean[j] = 0 end end
      for j = 1, #v do mean[j] = mean[j] + v[j] / #texts end
      for _, k in ipairs(C.head(C.order(v, "bottom"), P.list_k)) do in_bottom[k] = (in_bottom[k] or 0) + 1 end
    end
    local bottom = C.head(C.order(mean, "bottom"), P.list_k)
    local rows, labels, values = {}, {}, {}
    for r, k in ipairs(bottom) do
      local name = X:label(src, k, X.sae_name)
      rows[r] = csv.record({set = set, layer = src, rank = r, latent = k, name = name, mean_score = mean[k + 1],
        prompts_in_bottom = in_bottom[k] or 0, n_prompts = #texts},
        {"set", "layer", "rank", "latent", "name", "mean_score", "prompts_in_bottom", "n_prompts"})
      labels[r] = ("#%d%s"):format(k, name ~= "" and ("  " .. name) or "")
      values[r] = mean[k + 1]
    end
    X:table("bottom_latents", rows, {title = ("Bottom %d latents by S_k averaged over the prompts (prompts_in_bottom: " ..
      "in how many prompts' own bottom %d)"):format(P.list_k, P.list_k)})
    X:figure("bars", {name = "bottom_" .. set, title = ("Negatively aligned latents — %s prompts"):format(set),
      subtitle = ("mean S_k over %d prompts, layer %d → %d"):format(#texts, src, target),
      xlabel = "mean S_k (negative: adding the latent lowers R)", labels = labels, values = values,
      neg_label = "lowers R", caption = ("The %d latents whose decoder rows point most against the refusal gradient"):format(P.list_k)})

    -- Steer the bottom latents into every prompt of the set.
    local steer = C.head(bottom, P.steer_k)
    local raw, scale = C.alphas(X, ids, src)
    local s = X:steer{prompts = texts, layer = src, sae = sae, objective = dir, target = target, latents = steer,
                      alphas = raw, controls = P.controls, max_new_tokens = P.max_new_tokens, label = set, where = P.where}
    local srows = C.with_frac(s:rows(), scale)
    for _, r in ipairs(srows) do r.set = set end
    X:table("steering", srows, {columns = steer_cols, title = "Steering cells: bottom latents and random controls", show = 12})
    X:plot_dose(s)
    if P.max_new_tokens > 0 then X:plot_dose(s, {metric = "refused"}) end
    X:plot_dose(s, {metric = "dR"})

    -- The refusal direction ablated: the reference for "refusal removed".
    local gp = {}
    for i, p in ipairs(texts) do gp[i] = {ids = ids[i], label = ("%s%d"):format(set, i)} end
    local grid <close> = upstream.grid{model = X:model(), prompts = gp, refusal_ids = X:refusal_ids(),
      max_new_tokens = P.max_new_tokens, tokenizer = P.max_new_tokens > 0 and X:tokenizer() or nil,
      cache = X.settings.cache .. "/grid", identity = {tokenizer = X._manifest.tokenizer.sha256 or "none"},
      progress = not X.quiet, interventions = {{label = "ablate r", items = {{kind = "ablate", vector = dir.vector}}}}}
    local arows = assert(grid:run())

    -- Summary per (kind, latent, alpha): mean score and refusal rate over the prompts.
    local acc, order = {}, {}
    local function put(kind, latent, name, alpha, frac, r)
      local key = kind .. "|" .. tostring(latent) .. "|" .. tostring(alpha)
      if not acc[key] then
        acc[key] = {set = set, kind = kind, latent = latent, name = name, alpha = alpha, alpha_frac = frac,
                    score = 0, refused = 0, dR = 0, n = 0}
        order[#order + 1] = key
      end
      local a = acc[key]
      a.score, a.n = a.score + r.score, a.n + 1
      a.refused = a.refused + (r.refused and 1 or 0)
      if r.dR then a.dR = a.dR + r.dR else a.no_dR = true end
    end
    for _, r in ipairs(srows) do
      if r.kind == "baseline" then put("baseline", nil, "", nil, nil, r)
      else put(r.kind, r.latent, r.name, r.alpha, r.alpha_frac, r) end
    end
    for _, r in ipairs(arows) do
      if r.intervention == 2 then put("ablate r", nil, "refusal direction ablated", nil, nil, r) end
    end
    local base, best
    for _, key in ipairs(order) do
      local a = acc[key]
      local row = csv.record({set = a.set, kind = a.kind, latent = a.latent, name = a.name, alpha = a.alpha,
        alpha_frac = a.alpha_frac, mean_score = a.score / a.n, refusal_rate = P.max_new_tokens > 0 and a.refused / a.n or nil,
        mean_dR = not a.no_dR and a.dR / a.n or nil, n = a.n},
        {"set", "kind", "latent", "name", "alpha", "alpha_frac", "mean_score", "refusal_rate", "mean_dR", "n"})
      summary[#summary + 1] = row
      if a.kind == "baseline" then base = row end
      if a.kind == "latent" and (not best or row.mean_score < best.mean_score) then best = row end
    end
    local abl = acc[order[#order]]
    -- Random latents at the best latent's coefficient: what any push of that size does.
    local ctl_sum, ctl_n = 0, 0
    for _, r in ipairs(summary) do
      if best and r.set == set and r.kind == "control" and r.alpha == best.alpha then
        ctl_sum, ctl_n = ctl_sum + r.mean_score, ctl_n + 1
      end
    end
    if base and best then
      verdicts[#verdicts + 1] = ("**%s**: unsteered mean refusal score %.3f%s; the strongest bottom latent (#%d%s, alpha %.3g " ..
        "= %.2g x the residual norm) brings it to %.3f%s; ablating the refusal direction gives %.3f%s."):format(set,
        base.mean_score, base.refusal_rate and (" (refusal rate %.2f)"):format(base.refusal_rate) or "", best.latent,
        best.name ~= "" and (" " .. best.name) or "", best.alpha, best.alpha_frac or 0 / 0, best.mean_score,
        best.refusal_rate and (" (refusal rate %.2f)"):format(best.refusal_rate) or "", abl.score / abl.n,
        P.max_new_tokens > 0 and (" (refusal rate %.2f)"):format(abl.refused / abl.n) or "") ..
        (ctl_n > 0 and (" Random latents at the same coefficient: %.3f."):format(ctl_sum / ctl_n) or "")
    end
  end

  X:section("Summary")
  X:table("negative_summary", summary, {title = "Mean over each set's prompts, per steered latent and coefficient", show = 40})
  for _, v in ipairs(verdicts) do X:note(v) end

  -- One figure: mean refusal score per set for the baseline, each bottom latent at the largest
  -- coefficient, the controls' mean there, and the ablated direction.
  local cats, series = {"harmful", "borderline"}, {}
  local function val(set, pred)
    local sum, n = 0, 0
    for _, r in ipairs(summary) do if r.set == set and pred(r) then sum, n = sum + r.mean_score, n + 1 end end
    return n > 0 and sum / n or false
  end
  local amax = {}
  for _, r in ipairs(summary) do
    if r.alpha then amax[r.set] = math.max(amax[r.set] or -math.huge, r.alpha) end
  end
  series[1] = {name = "unsteered", values = {val("harmful", function(r) return r.kind == "baseline" end),
                                           val("borderline", function(r) return r.kind == "baseline" end)}}
  series[2] = {name = "bottom latents (mean, largest alpha)", values = {
    val("harmful", function(r) return r.kind == "latent" and r.alpha == amax.harmful end),
    val("borderline", function(r) return r.kind == "latent" and r.alpha == amax.borderline end)}}
  series[3] = {name = "random latents (largest alpha)", control = true, values = {
    val("harmful", function(r) return r.kind == "control" and r.alpha == amax.harmful end),
    val("borderline", function(r) return r.kind == "control" and r.alpha == amax.borderline end)}}
  series[4] = {name = "refusal direction ablated", values = {val("harmful", function(r) return r.kind == "ablate r" end),
                                                          val("borderline", function(r) return r.kind == "ablate r" end)}}
  X:figure("groups", {name = "negative_summary", title = "Does refusal fall when negatively aligned latents are added?",
    subtitle = ("layer %d; mean refusal score over %d prompts per set"):format(src, P.n_prompts),
    xlabel = "prompt set", ylabel = "mean refusal score  log p/(1-p)", categories = cats, series = series,
    caption = "Bottom latents against random latents at the same coefficient, and ablating the refusal direction"})
end

return E
