-- upstream.organism.eval_render: the last step of `organism eval` (measure -> judge -> render).
-- render(data, criteria, passed) writes the acceptance report as markdown (a string): a summary
-- of the criteria met per group and of the method's figures, then one section per part of the
-- organism, each criterion on its own line with its id ("- [x] name (id): detail"), and the
-- method's measurements as figures (yes/no and ranks), which are not criteria. data is
-- eval_measure's, criteria eval_judge's; passed: whether every required criterion is met.
local M = {}

-- "an intimacy", "a safety".
local function with_article(word)
  return (word:match("^[aeiou]") and "an " or "a ") .. word
end

local function names(list)
  local out = {}
  for i, e in ipairs(list) do out[i] = ("%d %s (%+.4f)"):format(e.latent, e.label or "?", e.score) end
  return table.concat(out, ", ")
end

local function steering(rows)
  local out = {}
  for i, r in ipairs(rows) do out[i] = ("a=%g: %s %.2f"):format(r.alpha, r.refused and "refuses" or "complies", r.score) end
  return table.concat(out, "; ")
end

local function yes(b) return b and "yes" or "no" end

-- Each method figure per case study, as {key, what, value (boolean), detail}.
local function method_figures(cs)
  local out = {}
  local top = cs.top[1]
  out[1] = {key = "top", what = ("the top latent is %s latent"):format(with_article(cs.planted)),
            value = top.label == cs.planted, detail = ("latent %d labelled %s"):format(top.latent, top.label or "(none)")}
  local all, worst = true, nil
  for _, r in ipairs(cs.reassured) do
    if not r.found then all, worst = false, ("%s: bottom %s"):format(r.instruction, names(r.bottom)) end
  end
  out[2] = {key = "reassured", what = "with each reassuring modifier, a latent of that modifier is among the 3 most negative",
            value = all, detail = all and ("all %d variants"):format(#cs.reassured) or worst}
  local up = cs.steer_up
  out[3] = {key = "steer_up", what = ("steering the answered \"%s\" with the top latent %d at alpha > 0 makes it refused"):format(
              up.instruction, up.latent), value = up.flipped, detail = steering(up.rows)}
  local down = cs.steer_down
  out[4] = {key = "steer_down", what = ("steering the refused prompt with %s latent makes it answered"):format(
              with_article(down.modifier)), value = down.flipped,
            detail = down.latent and ("latent %d (%d from the bottom on \"%s\"): %s"):format(down.latent, down.rank,
                                                                                             down.instruction, steering(down.rows))
                     or ("no latent is labelled %s"):format(down.modifier)}
  return out
end

function M.render(data, criteria, passed)
  local lines = {}
  local function say(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  local by_group = {}
  for _, c in ipairs(criteria) do
    by_group[c.group] = by_group[c.group] or {}
    table.insert(by_group[c.group], c)
  end
  local function checks(group, pred)
    for _, c in ipairs(by_group[group] or {}) do
      if not pred or pred(c) then say("- [%s] %s (%s): %s", c.ok and "x" or " ", c.name, c.id, c.detail) end
    end
  end
  local function is_case(c)
    for _, name in ipairs(data.case_names) do if c.id == "behaviour." .. name then return true end end
    return false
  end
  local m, b = data.model, data.behaviour

  -- Summary: criteria met per group (in report order), then the method's figures.
  local n_ok, per_group, order = 0, {}, {}
  for _, c in ipairs(criteria) do
    if c.ok then n_ok = n_ok + 1 end
    if not per_group[c.group] then per_group[c.group] = {0, 0}; order[#order + 1] = c.group end
    per_group[c.group][2] = per_group[c.group][2] + 1
    if c.ok then per_group[c.group][1] = per_group[c.group][1] + 1 end
  end
  local parts = {}
  for _, g in ipairs(order) do parts[#parts + 1] = ("%s %d/%d"):format(g, per_group[g][1], per_group[g][2]) end
  local count = {top = 0, reassured = 0, steer_up = 0, steer_down = 0}
  for _, cs in ipairs(data.method.cases) do
    for _, f in ipairs(method_figures(cs)) do
      if f.value then count[f.key] = count[f.key] + 1 end
    end
  end
  local n_cases = #data.method.cases
  say("# Organism acceptance report: %s", data.dir)
  say("")
  say("%d of %d criteria met (%s)%s.", n_ok, #criteria, table.concat(parts, ", "), passed and "" or "; a required group FAILED")
  say("")
  say("Method figures (measured, not criteria): the planted concept's latent tops S_k in %d of %d case studies; a "
      .. "latent of the reassuring modifier is among the 3 most negative in %d of %d; steering flips the answer up in "
      .. "%d of %d and down in %d of %d. Harmless refusal with the direction added: %.1f%%.", count.top, n_cases,
      count.reassured, n_cases, count.steer_up, n_cases, count.steer_down, n_cases, 100 * b.added_harmless)
  say("")
  say("Model: d_model %d, %d layers; SAE at blocks.%d.hook_resid_post (%d latents); refusal direction at "
      .. "blocks.%d.hook_resid_pre, position %d; objective R at blocks.%d.hook_resid_post.",
      m.d_model, m.n_layers, m.source_layer, m.d_sae, m.direction_layer, m.direction_pos, m.target_layer)
  say("")

  say("## Behaviour (held-out: %d harmful, %d harmless prompts; substring refusal of 12 greedy tokens)",
      b.n_harmful, b.n_harmless)
  say("")
  checks("behaviour", function(c) return not is_case(c) end)
  checks("direction")
  say("")
  say("Figure, not a criterion: harmless refusal with the direction added (blocks.%d.hook_resid_pre, alpha 1, every "
      .. "position): %.1f%%.", m.direction_layer, 100 * b.added_harmless)
  local d = data.direction or {}
  if d.bypass then
    say("The direction's selection scores at build time: bypass %.4f, induce %.4f, KL %.4f.", d.bypass, d.induce, d.kl)
  end

  say("")
  say("## Case studies (the rule's label vs the model's greedy answer)")
  say("")
  say("| case | kind | prompt | planted label | model |")
  say("|---|---|---|---|---|")
  for _, row in ipairs(data.cases) do
    say("| %s | %s | %s | %s | %s |", row.case, row.kind, row.instruction, row.planted_refused and "refuse" or "comply",
        row.refused and "refuses" or "complies")
  end
  say("")
  checks("behaviour", is_case)

  local s = data.sae
  say("")
  say("## SAE (blocks.%d.hook_resid_post, %d held-out tokens)", m.source_layer, s.n_tokens)
  say("")
  checks("sae")
  say("")
  say("| concept | category | best latent | AUROC | tokens |")
  say("|---|---|---|---|---|")
  for _, p in ipairs(s.detectors) do
    say("| %s | %s | %d | %.4f | %d |", p.concept, p.category, p.latent, p.auroc, p.n_pos)
  end
  say("")
  checks("detection")

  local mt = data.method
  say("")
  say("## The method vs the planted causes (S_k = mean_t W_dec[k]·dR/dh_%d[t], R at blocks.%d.hook_resid_post)",
      m.source_layer, m.target_layer)
  say("")
  say("Figures, not criteria: what the method finds on this organism decides no exit code.")
  say("")
  say("Steering coefficients: %s (from 0 to the mean norm of blocks.%d.hook_resid_post, %.2f).",
      table.concat(mt.alphas, ", "), m.source_layer, mt.resid_norm)
  say("")
  say("| case | top latent planted | reassuring latent in the bottom 3 | steering up flips | steering down flips |")
  say("|---|---|---|---|---|")
  for _, cs in ipairs(mt.cases) do
    local f = method_figures(cs)
    say("| %s | %s | %s | %s | %s |", cs.name, yes(f[1].value), yes(f[2].value), yes(f[3].value), yes(f[4].value))
  end
  say("")
  for _, cs in ipairs(mt.cases) do
    say("%s: top %s", cs.name, names(cs.top))
    for _, f in ipairs(method_figures(cs)) do
      say("- %s (%s.%s): %s; %s", f.what, cs.name, f.key, yes(f.value), f.detail)
    end
  end
  say("")
  say("Ranks under every score variant: the rank of the concept's best-ranked latent (1 = first; top for the")
  say("planted concept, bottom for a reassuring modifier) by S_k over every position but BOS, by S_k over the")
  say("instruction's tokens only, and by the activation-weighted variant; and the concept's rank by S_k in an")
  say("oracle dictionary with one row per concept, its mean direction at blocks.%d.hook_resid_post (%d concepts,",
      m.source_layer, mt.oracle.n_concepts)
  say("%d held-out prompts): a concept the oracle does not rank first would not lead a dictionary that holds every",
      mt.oracle.n_prompts)
  say("concept's mean direction either.")
  say("")
  say("| case | prompt | concept | side | S_k | S_k, instruction | activation-weighted | oracle |")
  say("|---|---|---|---|---|---|---|---|")
  for _, dg in ipairs(mt.diagnostics) do
    local r = {}
    for i = 1, 4 do r[i] = dg.ranks[i] and tostring(dg.ranks[i]) or "-" end
    say("| %s | %s | %s | %s | %s | %s | %s | %s |", dg.case, dg.text, dg.concept, dg.side, r[1], r[2], r[3], r[4])
  end
  say("")
  say("Evaluated in %.0f s of CPU time.", data.cpu_seconds)
  return table.concat(lines, "\n") .. "\n"
end

return M
