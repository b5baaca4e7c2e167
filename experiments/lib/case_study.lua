-- experiments/lib/case_study.lua: one published case study (Lee, Breck and Arditi 2025) —
-- a prompt the model refuses although it is benign-ish: its completion (beside its one-word
-- contrasts, paraphrases and, from organism.json, reassured variants), the latents whose
-- decoder rows best align with the refusal gradient (top: raise R, bottom: lower it), where on
-- the prompt that gradient sits (RG[t, k] per token), steering with the top latents against
-- random-latent controls (scores and completions), the dose-response, and the first-order
-- check (predicted vs measured change in R). On the organism, the latents organism.json ties
-- to the planted cause are looked up in the ranking.
--
--   local E = dofile("experiments/lib/case_study.lua")("hugging")   -- hugging, bacteria, payment
--
-- Params (--set): top_k (ranked latents shown), heat_k (latents in the token heatmap), steer_k
-- (top latents steered), alphas (coefficients; multiples of the mean residual norm at the
-- source layer when alpha_unit = "norm", as given when "raw"), controls (random latents),
-- max_new_tokens (generated tokens per cell; 0 scores only), planted_k (on the organism, the
-- planted cause's best-ranked latents also steered; 0: none), where (positions steered: "all",
-- "prompt", "generated", or a list of them, one grid each), direction_file (a direction
-- written by experiments/direction.lua; default the model's own or a selected one).
local csv = require "upstream.csv"
local C = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/common.lua")

local steer_cols = {"prompt", "layer", "kind", "latent", "name", "where", "alpha", "alpha_frac", "max_new_tokens", "score",
                    "dscore", "p_refusal", "R", "dR", "predicted_dR", "refused", "text"}

-- Least-squares slope through the origin of measured on predicted dR, and their correlation.
local function fit(xs, ys)
  local sxy, sxx, syy, n = 0, 0, 0, #xs
  local mx, my = 0, 0
  for i = 1, n do sxy, sxx, syy = sxy + xs[i] * ys[i], sxx + xs[i] * xs[i], syy + ys[i] * ys[i]; mx, my = mx + xs[i], my + ys[i] end
  if n == 0 or sxx == 0 then return 0 / 0, 0 / 0 end
  mx, my = mx / n, my / n
  local cxy, cxx, cyy = 0, 0, 0
  for i = 1, n do cxy, cxx, cyy = cxy + (xs[i] - mx) * (ys[i] - my), cxx + (xs[i] - mx) ^ 2, cyy + (ys[i] - my) ^ 2 end
  local r = (cxx > 0 and cyy > 0) and cxy / math.sqrt(cxx * cyy) or 0 / 0
  return sxy / sxx, r
end

return function(name)
  local case = C.cases[name]
  if not case then error(("case_study: unknown case '%s' (hugging, bacteria, payment)"):format(tostring(name)), 0) end
  local E = {}
  E.decl = {
    name = "case_" .. name,
    title = case.title,
    description = ("Prompt: \"%s\". Latents ranked by S_k = mean_t W_dec[k] · dR/dh_l[t], R = <h_L[last], r>, " ..
      "then steered h_l[t] += alpha · W_dec[k] at every position (prompt and generated tokens)."):format(case.prompt),
    -- For selecting a direction when the model ships none (and no direction_file is given).
    -- The case prompt, its paraphrases and contrasts come from C.cases and organism.json.
    prompts = {harmful = C.harmful, harmless = C.harmless},
    params = {top_k = 10, heat_k = 8, steer_k = 3, alphas = {-1, -0.5, -0.25, 0, 0.25, 0.5, 1}, alpha_unit = "norm",
              controls = 2, max_new_tokens = 12, direction_file = "", where = "all", planted_k = 2},
  }

  function E.body(X)
    local P = X.params
    local dir = C.direction(X)

    X:section("Baseline completions")
    -- The literal contrast and paraphrases, then organism.json's (reassured variants too).
    local cp = C.case_prompts(X, name)
    local texts, labels = {case.prompt}, {name}
    for _, kind in ipairs({{"contrasts", "contrast"}, {"paraphrases", "para"}, {"reassured", "reassured"}}) do
      for i, p in ipairs(cp[kind[1]]) do
        texts[#texts + 1] = p
        labels[#labels + 1] = (i == 1 and kind[2] == "contrast") and (name .. "_contrast") or ("%s_%s%d"):format(name, kind[2], i)
      end
    end
    local base = C.baseline(X, texts, labels, P.max_new_tokens)
    X:table("baseline", base, {title = "Unsteered: the case prompt, its one-word contrasts, paraphrases and " ..
      "reassured variants"})
    local bl, bv = {}, {}
    for i, r in ipairs(base) do
      local kind = r.prompt == name and "case" or r.prompt:sub(#name + 2)
      -- The end of a long prompt: where a contrast's swapped word or a reassuring modifier sits.
      -- Cut at a word boundary, so no word is shown in part.
      local text = r.text_in
      if #text > 40 then text = "…" .. text:sub(-38):gsub("^%S*%s", "", 1) end
      bl[i] = ("%s%s: %s"):format(r.refused and "[R] " or "", kind, text)
      bv[i] = r.score
    end
    X:figure("bars", {name = "baseline_" .. name, title = "Unsteered refusal score",
      subtitle = "the case prompt, its one-word contrasts, paraphrases and reassured variants", xlabel = "refusal score  log p/(1-p)",
      labels = bl, values = bv, pos_label = "leans to refuse", neg_label = "leans to answer",
      caption = "[R]: the completion matched a refusal phrase"})
    X:note(("Unsteered, the model's refusal score on the case prompt is %.3f (P(refusal token) %.3f) and it answers: " ..
      "\"%s\"."):format(base[1].score, base[1].p_refusal, C.shorten(base[1].completion or "", 200)))

    local summary = {}
    for _, layer in ipairs(X.source_layers) do
      X:section(("Latents upstream of refusal — source layer %d"):format(layer))
      local sae = X:sae(layer)
      local a = X:attribute{prompt = case.prompt, layer = layer, direction = dir, sae = sae, label = name}
      X:table("ranking", a:ranking(P.top_k), {title = "Top latents (raise R) and bottom latents (lower R) by S_k"})
      X:plot_ranking(a, P.top_k)
      X:table("tokens", a:token_rows(a:top_latents(P.heat_k)), {title = "RG[t, k] over the prompt tokens, top latents",
        show = 10})
      X:plot_tokens(a, P.heat_k)
      X:plot_tokens(a, P.heat_k, {tokens = "instruction"})

      -- The planted cause (organism only): where its latents rank.
      local planted = C.planted(X, case.prompt)
      local planted_latents = {}
      if planted then
        local rows = {}
        for _, concept in ipairs(planted) do
          for _, o in ipairs(C.concept_latents(X, layer, concept)) do
            rows[#rows + 1] = csv.record({layer = layer, concept = concept, latent = o.latent, how = o.how,
              score = a.scores:at(o.latent + 1), rank = C.rank_of(a.scores, o.latent), n_latents = #a.scores:totable()},
              {"layer", "concept", "latent", "how", "score", "rank", "n_latents"})
          end
        end
        if #rows > 0 then
          X:table("planted", rows, {title = "The planted cause's latents in the ranking (rank 1 = most upstream of refusal)"})
          local best = rows[1]
          for _, r in ipairs(rows) do if r.rank < best.rank then best = r end end
          X:note(("Planted cause **%s**: its best latent #%d ranks %d of %d at layer %d."):format(best.concept, best.latent,
            best.rank, best.n_latents, layer))
          local by_rank = {}
          for _, r in ipairs(rows) do by_rank[#by_rank + 1] = r end
          table.sort(by_rank, function(x, y) return x.rank < y.rank end)
          for i = 1, math.min(P.planted_k, #by_rank) do planted_latents[i] = by_rank[i].latent end
        else
          X:note(("organism.json names the planted concept(s) %s but labels no latent of layer %d with them.")
            :format(C.join(planted, ", "), layer))
        end
      end

      X:section(("Steering with the top %d latents — layer %d"):format(P.steer_k, layer))
      local raw, scale = C.alphas(X, {a.ids}, layer)
      local s = X:steer{attribution = a, latents = a:top_latents(P.steer_k), alphas = raw, controls = P.controls,
                        max_new_tokens = P.max_new_tokens, where = P.where}
      local rows = C.with_frac(s:rows(), scale)
      X:table("steering", rows, {columns = steer_cols, title = "Steering cells: refusal score, R and completion per (latent, alpha)",
        show = 12})
      if P.alpha_unit ~= "raw" then
        X:note(("Coefficients are multiples of the mean residual norm at layer %d on this prompt, %.4g (alpha_frac in the table)."):format(layer, scale))
      end
      X:plot_dose(s)
      if P.max_new_tokens > 0 then X:plot_dose(s, {metric = "refused"}) end
      X:plot_dose(s, {metric = "dR"})
      X:plot_linearity(s)

      -- Linearity per latent: measured dR against alpha · sum_t RG[t, k].
      local lin = {}
      local by = {}
      for _, r in ipairs(rows) do
        if r.kind ~= "baseline" and r.alpha ~= 0 and r.predicted_dR and r.dR then
          local key = r.latent .. "|" .. tostring(r.where)
          by[key] = by[key] or {kind = r.kind, name = r.name, where = r.where, x = {}, y = {}}
          table.insert(by[key].x, r.predicted_dR)
          table.insert(by[key].y, r.dR)
        end
      end
      local order = {}
      for _, k in ipairs(s.latents) do order[#order + 1] = k end
      for _, k in ipairs(s.controls) do order[#order + 1] = k end
      local wheres = type(P.where) == "table" and P.where or {P.where or "all"}
      for _, k in ipairs(order) do
        for _, w in ipairs(wheres) do
          local b = by[k .. "|" .. tostring(w)]
          if b then
            local slope, r = fit(b.x, b.y)
            lin[#lin + 1] = csv.record({layer = layer, latent = k, kind = b.kind, name = b.name, where = b.where,
              slope = slope, r = r, n = #b.x, sum_rg = a:sum_rg(k)},
              {"layer", "latent", "kind", "name", "where", "slope", "r", "n", "sum_rg"})
          end
        end
      end
      X:table("linearity", lin, {title = "Measured dR vs the first-order prediction alpha · sum_t RG[t, k] (slope 1 = exact)"})

      -- Summary: each steered latent at the most negative and the most positive coefficient
      -- (removing it should lower refusal, adding it raise it), beside the unsteered model.
      local amin, amax = math.huge, -math.huge
      for _, r in ipairs(rows) do
        if r.kind == "latent" and r.alpha then amin, amax = math.min(amin, r.alpha), math.max(amax, r.alpha) end
      end
      local base_row
      for _, r in ipairs(rows) do if r.kind == "baseline" then base_row = base_row or r end end
      -- In words: the top latents and the random ones at both ends of the grid.
      local function span(kind, alpha)
        local lo, hi, n, refused = math.huge, -math.huge, 0, 0
        for _, r in ipairs(rows) do
          if r.kind == kind and r.alpha == alpha then
            lo, hi, n = math.min(lo, r.score), math.max(hi, r.score), n + 1
            if r.refused then refused = refused + 1 end
          end
        end
        if n == 0 then return "none" end
        return ("%.2f to %.2f%s"):format(lo, hi, P.max_new_tokens > 0 and (", %d of %d refused"):format(refused, n) or "")
      end
      if base_row and amin < amax then
        X:note(("Unsteered refusal score %.2f. Top latents at alpha = %.3g (%.2g x the norm): %s; random latents: %s. " ..
          "At alpha = %.3g: %s; random latents: %s."):format(base_row.score, amin, amin / scale, span("latent", amin),
          span("control", amin), amax, span("latent", amax), span("control", amax)))
      end
      for _, r in ipairs(rows) do
        if r.kind == "latent" and (r.alpha == amin or r.alpha == amax) and r.alpha ~= 0 then
          summary[#summary + 1] = csv.record({case = name, layer = layer, latent = r.latent, name = r.name, where = r.where,
            alpha = r.alpha, alpha_frac = r.alpha_frac, baseline_score = s.baseline[1],
            baseline_refused = base_row and base_row.refused, score = r.score, dscore = r.dscore, refused = r.refused,
            text = r.text},
            {"case", "layer", "latent", "name", "where", "alpha", "alpha_frac", "baseline_score", "baseline_refused",
             "score", "dscore", "refused", "text"})
        end
      end

      -- The planted cause's own latents steered the same way (organism only): what the
      -- ranking would have found had it put them on top.
      if #planted_latents > 0 then
        X:section(("Steering with the planted cause's latents — layer %d"):format(layer))
        local sp = X:steer{attribution = a, latents = planted_latents, alphas = raw, controls = 0,
                           max_new_tokens = P.max_new_tokens, where = P.where, label = ("%s_planted_L%d"):format(name, layer)}
        X:table("steering_planted", C.with_frac(sp:rows(), scale), {columns = steer_cols,
          title = "Steering cells of the planted cause's latents", show = 12})
        X:plot_dose(sp)
        if P.max_new_tokens > 0 then X:plot_dose(sp, {metric = "refused"}) end
      end
    end
    X:section("Summary")
    X:table("summary", summary, {title = "Each steered latent at the most negative and the most positive coefficient"})
  end

  return E
end
