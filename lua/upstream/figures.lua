-- upstream.figures: the ready-made figures of an experiment, each one upstream.plot call on
-- what a step returned (Attribution, Steering, Direction), named after the prompt and layer
-- so a loop over prompts or layers gives distinct files.
--
--   X:plot_ranking(a, k[, {name}]) top-k and bottom-k latents by score, labelled bars
--   X:plot_tokens(a, k[, {tokens}]) RG[t, k] over the prompt's tokens for the top-k latents
--                                 (tokens = "instruction": the instruction's tokens only)
--   X:plot_dose(s[, {metric, where}]) metric vs alpha, a line per latent, random controls
--                                 grey, the unsteered baseline dashed
--   X:plot_linearity(s[, {where}]) predicted vs measured dR, with y = x
--   X:plot_selection(dir[, {name}]) bypass / induce / KL of every direction candidate
-- Titles and axes name the Attribution's score (gradient, cosine, activation). Options are
-- documented in docs/lua-api.md, "Figures". Each returns the PNG's path. Error rule: misuse
-- (an unknown option included, with "did you mean") raises with the experiment's file:line.
local util = require "upstream.util"
local M = {}

local function latent_label(a, r)
  return ("#%d%s"):format(r.latent, r.name ~= "" and ("  " .. r.name) or "")
end

-- s cut to at most n characters (UTF-8), with "…" when cut.
local function shorten(s, n)
  if utf8.len(s) == nil or utf8.len(s) <= n then return s end
  return s:sub(1, utf8.offset(s, n) - 1) .. "…"
end

-- A token as a reader can see it on an axis: the tokenizer's space marks become spaces,
-- byte-fallback pieces of printable ASCII their character, a newline is "↵" and a tab "⇥", a
-- token of spaces only shows each as "␣", and only a very long piece is shortened (special
-- tokens such as <start_of_turn> keep their whole name).
function M.token_label(piece)
  -- byte-fallback pieces of printable ASCII as the character they stand for
  local s = piece:gsub("<0x(%x%x)>", function(h)
    local b = tonumber(h, 16)
    return (b >= 0x20 and b < 0x7F or b == 0x0A or b == 0x09 or b == 0x0D) and string.char(b) or nil
  end)
  s = s:gsub("▁", " "):gsub("Ġ", " "):gsub("Ċ", "\n")
  s = s:gsub("\r\n", "↵"):gsub("\n", "↵"):gsub("\t", "⇥"):gsub("\r", "↵")
  if s:match("^ *$") then s = s:gsub(" ", "␣") end
  if s == "" then s = "∅" end
  return shorten(s, 24)
end

-- How each score variant (X:attribute's score) is named in titles and on axes.
local score_names = {gradient = "gradient score", cosine = "cosine score", activation = "activation-weighted score"}
local score_titles = {gradient = "the refusal gradient", cosine = "cosine with the refusal gradient",
                      activation = "activation × refusal gradient"}
local function score_formula(a)
  local g = ("∂R/∂h_%d[t]"):format(a.layer)
  if a.score_kind == "cosine" then return ("cos(W_dec[k], ḡ),  ḡ = mean_t %s"):format(g) end
  if a.score_kind == "activation" then return ("S_k = mean_t  a_k[t] · W_dec[k] · %s"):format(g) end
  if a.score_kind == "gradient" then return ("S_k = mean_t  W_dec[k] · %s"):format(g) end
  return ("S_k (%s)"):format(a.score_kind)
end
local function score_name(a) return score_names[a.score_kind] or (a.score_kind .. " score") end

local function check_attr(a, what)
  if type(a) ~= "table" or not a.scores then util.fail("%s: expected an Attribution (from X:attribute)", what) end
end

local function check_k(k, what)
  if math.type(k) ~= "integer" or k < 1 then util.fail("%s: k must be a positive integer", what) end
end

local metric_names = {
  score = "refusal score  log p/(1-p)", dscore = "change in refusal score", dR = "change in R = <h_L, r>",
  p_refusal = "P(refusal token)", refused = "fraction refused (substring judge)",
}

local metric_titles = {
  score = "refusal score", dscore = "change in refusal score", dR = "change in R", p_refusal = "P(refusal)",
  refused = "refusal rate",
}

local where_words = {all = "every position", prompt = "the prompt's positions", generated = "generated positions"}

function M.install(X, step)
  X.plot_ranking = step("plot_ranking", function(self, a, k, opts)
    check_attr(a, "plot_ranking")
    check_k(k, "plot_ranking")
    opts = util.check_fields(opts or {}, {name = "string"}, "plot_ranking")
    local labels, values = {}, {}
    local top, bottom = a:top(k), a:bottom(k)
    for _, r in ipairs(top) do labels[#labels + 1] = latent_label(a, r); values[#values + 1] = r.score end
    for _, r in ipairs(bottom) do labels[#labels + 1] = latent_label(a, r); values[#values + 1] = r.score end
    return self:_figure("bars", {
      name = opts.name or ("ranking_%s_L%d"):format(a.label, a.layer),
      title = ("Latents ranked by %s — layer %d → %d"):format(score_titles[a.score_kind] or score_name(a), a.layer,
        a.target),
      subtitle = shorten(a.prompt, 90),
      xlabel = score_formula(a),
      labels = labels, values = values, n_top = #top, pos_label = "raises R (top)", neg_label = "lowers R (bottom)",
      caption = ("Top and bottom %d latents by %s of %s at layer %d for prompt %s: %s"):format(k, score_name(a),
        a.sae_name, a.layer, a.label, shorten(a.prompt, 120)),
    })
  end)

  -- opts.tokens: "all" (the whole chat prompt; the colour range from the instruction's tokens,
  -- so the template's last token, where R is read and the gradient is largest, cannot wash
  -- the instruction out) or "instruction" (only the instruction's tokens).
  X.plot_tokens = step("plot_tokens", function(self, a, k, opts)
    check_attr(a, "plot_tokens")
    check_k(k, "plot_tokens")
    opts = util.check_fields(opts or {}, {name = "string", tokens = "string"}, "plot_tokens")
    local which = opts.tokens or "all"
    if which ~= "all" and which ~= "instruction" then
      util.fail("plot_tokens: tokens must be \"all\" or \"instruction\", got '%s'", which)
    end
    local instruction = {}
    for _, t in ipairs(util.instruction_positions(self:tokenizer(), function(x) return self:encode(x) end, a.ids)) do
      instruction[t + 1] = true
    end
    if not next(instruction) then -- not a chat prompt: every token
      for t = 1, #a.ids do instruction[t] = true end
    end
    local shown = {}
    for t = 1, #a.ids do if which == "all" or instruction[t] then shown[#shown + 1] = t end end
    local top = a:top(k)
    local rows, row_labels = {}, {}
    for i, r in ipairs(top) do
      row_labels[i] = latent_label(a, r)
      local row = {}
      for j, t in ipairs(shown) do row[j] = a.rg:at(t, r.latent + 1) end
      rows[i] = row
    end
    local cols, scale, scored, n_scored, n_included = {}, {}, {}, 0, 0
    for t = 1, #a.ids do if a.include and a.include[t] then n_included = n_included + 1 end end
    for j, t in ipairs(shown) do
      cols[j] = M.token_label(a.tokens[t])
      if instruction[t] then scale[#scale + 1] = j end
      if a.include and a.include[t] then scored[#scored + 1] = j; n_scored = n_scored + 1 end
    end
    local whole = which == "all"
    return self:_figure("heatmap", {
      name = opts.name or ("tokens_%s%s_L%d"):format(whole and "" or "instruction_", a.label, a.layer),
      title = ("Per-token refusal gradient RG[t, k]%s — layer %d → %d"):format(whole and "" or " over the instruction",
        a.layer, a.target),
      subtitle = shorten(a.prompt, 90), xlabel = whole and "prompt token" or "instruction token",
      ylabel = ("latent (top %d by %s)"):format(#top, score_name(a)),
      values = rows, row_labels = row_labels, col_labels = cols, cmap = "diverging",
      colorbar = ("RG[t, k] = W_dec[k] · ∂R/∂h_%d[t]"):format(a.layer),
      scale_columns = whole and scale or nil, marked_columns = n_scored > 0 and scored or nil,
      mark_label = n_scored > 0 and (n_scored == n_included and ("S_k averages these %d tokens"):format(n_scored)
        or ("S_k averages over %d tokens, %d of them here"):format(n_included, n_scored)) or nil,
      -- Wider for long prompts at the usual scale (2 px per layout unit), so a token keeps
      -- room for its label instead of the whole figure being scaled up.
      width = math.max(1600, (whole and 44 or 70) * #cols + 600),
      height = whole and math.max(1000, 80 * #rows + 560) or math.max(900, 70 * #rows + 460), scale = 2,
      caption = ("RG[t, k] = W_dec[k]·∂R/∂h_%d[t] for the top %d latents by %s over the %s tokens of %s%s"):format(
        a.layer, k, score_name(a), whole and "prompt's" or "instruction's", a.label,
        whole and "; the colour range is the instruction's (the chat template's tokens may exceed it: pointed ends " ..
          "of the colour bar)" or ""),
    })
  end)

  -- What a Steering steered, for titles: its latents' layer and its vectors' hook points; and
  -- the subtitle's formula of the change, the positions rule and the prompt count.
  local function steered(s, where)
    local hooks, seen = {}, {}
    for _, v in ipairs(s.vectors or {}) do
      if not seen[v.at] then seen[v.at] = true; hooks[#hooks + 1] = v.at end
    end
    local parts, formulas = {}, {}
    if #s.latents + #s.controls > 0 then
      parts[#parts + 1] = ("layer %d"):format(s.layer)
      formulas[#formulas + 1] = ("h_%d[t] += α · W_dec[k]"):format(s.layer)
    end
    if #hooks > 0 then
      parts[#parts + 1] = table.concat(hooks, ", ")
      formulas[#formulas + 1] = "h[t] += α · v at " .. table.concat(hooks, ", ")
    end
    return table.concat(parts, " and "), ("%s, at %s; %d prompt%s"):format(table.concat(formulas, "; "),
      where_words[where] or where, #s.prompt_labels, #s.prompt_labels == 1 and "" or "s")
  end

  X.plot_dose = step("plot_dose", function(self, s, opts)
    if type(s) ~= "table" or not s.grid_rows then util.fail("plot_dose: expected a Steering (from X:steer)") end
    opts = util.check_fields(opts or {}, {metric = "string", name = "string", where = "string"}, "plot_dose")
    local metric = opts.metric or "score"
    if not metric_names[metric] then
      util.fail("plot_dose: unknown metric '%s'%s", metric, util.suggest(metric, util.sorted_keys(metric_names)))
    end
    local where = opts.where or s.wheres[1]
    local series = s:series(metric, where)
    local base, n = 0, 0
    for _, v in pairs(s.baseline) do base, n = base + v, n + 1 end
    local baseline
    if metric == "score" and n > 0 then baseline = base / n
    elseif metric == "dscore" or metric == "dR" then baseline = 0 end
    local at, how = steered(s, where)
    return self:_figure("lines", {
      name = opts.name or ("dose_%s_%s%s"):format(s.label, metric, where == "all" and "" or ("_" .. where)),
      title = ("Steering at %s: %s vs α"):format(at, metric_titles[metric]),
      subtitle = how,
      xlabel = "steering coefficient α", ylabel = metric_names[metric], series = series, baseline = baseline,
      -- a rate and a probability keep their whole range, so 0.84 does not look like 0
      ymin = (metric == "refused" or metric == "p_refusal") and 0 or nil,
      ymax = (metric == "refused" or metric == "p_refusal") and 1 or nil,
      baseline_label = metric == "score" and "unsteered" or "no change",
      caption = ("Dose-response of %s for the steered %s%s"):format(metric,
        #(s.vectors or {}) > 0 and (#s.latents > 0 and "latents and vectors" or "vectors") or "latents",
        #s.controls > 0 and "; grey lines are random latents (controls)" or ""),
    })
  end)

  X.plot_linearity = step("plot_linearity", function(self, s, opts)
    if type(s) ~= "table" or not s.grid_rows then util.fail("plot_linearity: expected a Steering (from X:steer)") end
    opts = util.check_fields(opts or {}, {name = "string", where = "string"}, "plot_linearity")
    local where = opts.where or s.wheres[1]
    local x, y, group, has_control = {}, {}, {}, false
    for _, r in ipairs(s:rows()) do
      if r.kind ~= "baseline" and r.where == where and r.alpha ~= 0 and r.predicted_dR and r.dR
         and r.predicted_dR == r.predicted_dR then
        x[#x + 1], y[#y + 1] = r.predicted_dR, r.dR
        group[#group + 1] = r.kind == "control" and "random latents" or r.kind == "vector" and r.name or "ranked latents"
        has_control = has_control or r.kind == "control"
      end
    end
    if #x == 0 then util.fail("plot_linearity: no steered cell has both predicted and measured dR") end
    local at, how = steered(s, where)
    return self:_figure("scatter", {
      name = opts.name or ("linearity_%s%s"):format(s.label, where == "all" and "" or ("_" .. where)),
      title = ("First-order prediction vs measured ΔR — %s"):format(at),
      subtitle = how,
      xlabel = #s.latents > 0 and #(s.vectors or {}) == 0 and "predicted ΔR = α · Σ_t RG[t, k]" or
        "predicted ΔR = α · Σ_t v · ∂R/∂h[t] (first order)", ylabel = "measured ΔR", x = x, y = y, group = group, identity = true,
      control = has_control and "random latents" or nil,
      caption = "Each point is one (latent, α) cell; on the line y = x the gradient predicts steering exactly",
    })
  end)

  X.plot_selection = step("plot_selection", function(self, dir, opts)
    opts = util.check_fields(opts or {}, {name = "string"}, "plot_selection")
    local info = (dir and dir.selection) and self._selection_for_plot
    if not info then util.fail("plot_selection: the direction was not selected (use X:direction{from = \"select\"})") end
    local n_pos, n_layers = info.n_pos, info.n_layers
    local function matrix() local m = {} for p = 1, n_pos do m[p] = {} for l = 1, n_layers do m[p][l] = false end end return m end
    local bypass, induce, kl, dropped = matrix(), matrix(), matrix(), matrix()
    for _, s in ipairs(info.sel.scores) do
      local p, l = n_pos + s.pos + 1, s.layer + 1
      local function num(v) return (type(v) == "number" and v == v) and v or false end
      bypass[p][l], induce[p][l], kl[p][l] = num(s.bypass), num(s.induce), num(s.kl)
      dropped[p][l] = s.dropped ~= "kept"
    end
    local positions = {}
    for p = 1, n_pos do positions[p] = ("pos %d"):format(p - n_pos - 1) end
    local best = info.sel.best and {pos = n_pos + info.sel.best.pos + 1, layer = info.sel.best.layer} or nil
    return self:_figure("selection", {
      name = opts.name or "direction_selection", title = "Refusal direction selection",
      subtitle = "bypass: harmful prompts with r ablated; induce: harmless with +r; KL: harmless, ablated vs not",
      bypass = bypass, induce = induce, kl = kl, dropped = dropped, positions = positions, best = best,
      max_kl = 0.1, min_induce = 0, max_layer = 0.8 * n_layers,
      caption = "Candidates by layer and post-instruction position; the chosen one has the lowest bypass score among those kept" ..
        (info.sel.mode == "lazy" and ". Lazy selection: layers past the cut were not run, and induce and KL only " ..
          "up to the chosen candidate in bypass order (hollow bypass points without induce/KL: bypass_only)" or ""),
    })
  end)
end

return M
