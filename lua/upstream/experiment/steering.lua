-- upstream.experiment.steering: X:steer (steering grids of latents x alphas x prompts x
-- position rules, with random control latents, through the grid cache of the settings, so an
-- interrupted run's rerun computes only what is missing) and the Steering it returns, with its
-- table rows and per-latent dose series.
local core = require "upstream.core"
local random = require "upstream.rng"
local util = require "upstream.util"
local csv = require "upstream.csv"
local step = require("upstream.experiment.manifest").step
local direction_vector = require("upstream.experiment.direction").vector
local class = require "upstream.experiment.class"
local M, Experiment = class.M, class.Experiment

local Steering = {}
Steering.__index = Steering
M.Steering = Steering

local steer_fields = {
  attribution = "table", prompts = "table", layer = "integer", sae = "string|upstream.Sae",
  latents = "integers", direction = "table|upstream.Tensor", vectors = "table", at = "string",
  objective = "table|upstream.Tensor", target = "integer", alphas = "numbers",
  controls = "integer", where = "string|strings", max_new_tokens = "integer", batch = "integer", label = "string",
}
local vector_fields = {name = "string", vector = "table|upstream.Tensor", at = "string"}

-- Random control latents: a splitmix64 stream seeded by the experiment's seed and the layer,
-- so the same run settings always draw the same controls.
local function draw_controls(seed, layer, n, d_sae, exclude)
  local rng = random.new(seed * 1000003 + layer)
  local taken, out = {}, {}
  for _, k in ipairs(exclude) do taken[k] = true end
  local tries = 0
  while #out < n and tries < 100 * (n + 1) do
    local k = rng:int(d_sae) - 1
    if not taken[k] then taken[k] = true; out[#out + 1] = k end
    tries = tries + 1
  end
  return out
end

-- "blocks.6.hook_resid_pre" -> the same string, checked against the model's layers, so a typo
-- fails before any cell runs; "where" names the field in errors.
local function check_hook(name, n_layers, where)
  local l, kind = tostring(name):match("^blocks%.(%d+)%.hook_resid_(%a+)$")
  if not l or (kind ~= "pre" and kind ~= "post") then
    util.fail("%s: '%s' is not a hook point (blocks.N.hook_resid_pre or blocks.N.hook_resid_post)", where, tostring(name))
  end
  if tonumber(l) >= n_layers then
    util.fail("%s: '%s' names layer %s, but the model has %d layers (0-%d)", where, name, l, n_layers, n_layers - 1)
  end
  return name
end

-- The vectors to steer along, each {name, vector, at}: spec.direction (at its own hook, the
-- block input of its layer, unless spec.at says otherwise) and spec.vectors. A vector is used
-- as given (a Direction: its unit vector), so alpha is in the residual stream's units.
local function steered_vectors(self, spec)
  local out, n_layers = {}, self:model():config().n_layers
  local function add(name, v, at, where)
    if at == nil then
      util.fail("%s: say where to add it: at = \"blocks.N.hook_resid_pre\" (or _post); a layer number could be read " ..
                "either way", where)
    end
    out[#out + 1] = {name = name, vector = direction_vector(v), at = check_hook(at, n_layers, where .. ".at")}
  end
  local function hook_of(v) return type(v) == "table" and v.hook or nil end
  if spec.direction then
    local dir = spec.direction
    add(type(dir) == "table" and dir.from and ("direction (" .. dir.from .. ")") or "direction", dir,
        spec.at or hook_of(dir), "steer: direction")
  end
  for i, v in ipairs(spec.vectors or {}) do
    local where = ("steer: vectors[%d]"):format(i)
    if type(v) ~= "table" or not v.vector then util.fail("%s: expected {name = ..., vector = ..., at = ...}", where) end
    util.check_fields(v, vector_fields, where)
    add(v.name or ("vector " .. i), v.vector, v.at or spec.at or hook_of(v.vector), where)
  end
  return out
end

Experiment.steer = step("steer", function(self, spec)
  util.check_fields(spec, steer_fields, "steer")
  local a = spec.attribution
  local prompts, labels = {}, {}
  if a then
    prompts[1], labels[1] = a.ids, a.label
  elseif spec.prompts then
    for i, p in ipairs(spec.prompts) do
      prompts[i] = type(p) == "string" and self:encode(p) or p
      labels[i] = self:_prompt_label(p, prompts[i])
    end
  else
    util.fail("steer: give attribution = a or prompts = {...}")
  end
  local latents = spec.latents or {}
  local vectors = steered_vectors(self, spec)
  if #latents == 0 and #vectors == 0 then
    util.fail("steer: nothing to steer: give latents = {k, ...}, direction = dir or vectors = {...}")
  end
  if not spec.alphas or #spec.alphas == 0 then util.fail("steer: field 'alphas' (a non-empty list) is required") end
  -- layer is the latents' SAE layer; a steering of vectors only has none (its rows say `at`).
  local layer = spec.layer or (a and a.layer) or (#latents > 0 and self.source_layers and self.source_layers[1]) or nil
  if #latents > 0 and not layer then util.fail("steer: no layer for the latents' SAE") end
  local sae
  if #latents > 0 then
    sae = type(spec.sae) == "string" and self:sae(layer, spec.sae) or spec.sae or (a and a.sae) or self:sae(layer)
    local d_sae = sae:info().d_sae
    for i, k in ipairs(latents) do
      if k < 0 or k >= d_sae then
        util.fail("steer: latents[%d] = %d is past the SAE's width: %d latents, indices 0-%d (0-based)", i, k, d_sae, d_sae - 1)
      end
    end
  end
  local objective = spec.objective or (a and a.direction) or self:direction()
  local target = spec.target or (a and a.target) or self.target_layer
  if (spec.controls or 0) > 0 and not sae then util.fail("steer: controls are random latents; give latents too") end
  local controls = sae and draw_controls(self.seed, layer, spec.controls or 0, sae:info().d_sae, latents) or {}
  local all = {}
  for _, k in ipairs(latents) do all[#all + 1] = k end
  for _, k in ipairs(controls) do all[#all + 1] = k end
  local is_control = {}
  for _, k in ipairs(controls) do is_control[k] = true end
  local gprompts = {}
  for i, ids in ipairs(prompts) do gprompts[i] = {ids = ids, label = labels[i]} end
  local tok = self:tokenizer()
  local max_new = spec.max_new_tokens or 0
  local label = spec.label or ((a and a.label or labels[1]) .. (layer and ("_L" .. layer) or ""))
  -- The positions axis: one grid per `where`, rows tagged with it; the unsteered baseline is
  -- the same for every `where`, so only the first grid's is kept.
  local wheres = type(spec.where) == "table" and spec.where or {spec.where or "all"}
  if #wheres == 0 then util.fail("steer: where must name at least one of all, prompt, generated") end
  self:log("steer %s: %d latents (%d random controls) + %d vectors x %d alphas x %d prompts x %d position rules", label,
           #all, #controls, #vectors, #spec.alphas, #prompts, #wheres)
  -- The attribution's gradient serves the prediction (no second backward pass) when it is of
  -- the grid's objective at the steered layer; the grid checks the objective, else computes.
  local gradients = a and a.grad and {{prompt = 1, layer = a.layer, grad = a.grad, objective =
    {layer = a.target, direction = direction_vector(a.direction), positions = a.objective_positions}}}
  local rows, totals = {}, {cells = 0, cached = 0, computed = 0}
  for wi, where in ipairs(wheres) do
    -- Vectors are explicit interventions (one per vector and alpha) at their named hook point.
    local interventions = {}
    for _, v in ipairs(vectors) do
      for _, alpha in ipairs(spec.alphas) do
        interventions[#interventions + 1] = {label = v.name, alpha = alpha, items = {{kind = "add", point = v.at,
          vector = v.vector, alpha = alpha, where = where}}}
      end
    end
    local grid <close> = core.grid{
      model = self:model(), prompts = gprompts, refusal_ids = self:refusal_ids(),
      sae = #all > 0 and sae or nil, latents = #all > 0 and all or nil, layer = #all > 0 and layer or nil,
      alphas = spec.alphas, where = where, interventions = #interventions > 0 and interventions or nil,
      max_new_tokens = max_new, objective = {layer = target, direction = direction_vector(objective)},
      gradients = gradients, tokenizer = max_new > 0 and tok or nil, cache = self.settings.cache .. "/grid",
      identity = {tokenizer = self._manifest.tokenizer.sha256 or "none"},
      batch = spec.batch or 16, progress = not self.quiet,
    }
    -- Cells are cached as their batch finishes: a killed run's rerun computes only what is missing.
    local got = grid:run()
    local n_sweep = 1 + #all * #spec.alphas -- "none", then the latents' sweep, then the vectors
    for _, r in ipairs(got) do
      if r.intervention > n_sweep then r.vector = vectors[(r.intervention - n_sweep - 1) // #spec.alphas + 1] end
      if wi == 1 or r.intervention ~= 1 then r.where = where; rows[#rows + 1] = r end
    end
    local t = grid:totals()
    totals.cells, totals.cached, totals.computed = totals.cells + t.cells, totals.cached + t.cached, totals.computed + t.computed
  end
  self._grids[#self._grids + 1] = {label = label, cells = totals.cells, cached = totals.cached, computed = totals.computed}
  self:log("steer %s: %d cells, %d from the cache, %d computed", label, totals.cells, totals.cached, totals.computed)
  local s = setmetatable({experiment = self, label = label, layer = layer, latents = latents, controls = controls,
    vectors = vectors, is_control = is_control, alphas = spec.alphas, grid_rows = rows, totals = totals, baseline = {},
    sae_name = sae and (self._sae_names or {})[sae] or "", prompt_labels = labels, wheres = wheres}, Steering)
  for _, r in ipairs(rows) do
    if r.intervention == 1 then s.baseline[r.prompt] = r.score end
  end
  return s
end)

local steer_cols = {"prompt", "layer", "kind", "latent", "name", "where", "alpha", "max_new_tokens", "score", "dscore",
                    "p_refusal", "R", "dR", "predicted_dR", "refused", "text"}
-- url (after name) only for an SAE with a neuronpedia_id, and at (the hook point, after layer)
-- only where vectors were steered, so other tables keep their columns.
local function columns(has_url, has_at)
  local cols = util.copy(steer_cols)
  if has_url then table.insert(cols, 6, "url") end
  if has_at then table.insert(cols, 3, "at") end
  return cols
end

-- The grid keeps alphas in float32; a Lua double from spec.alphas finds its cells only after
-- the same rounding.
local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

function Steering:rows()
  local out = {}
  local X = self.experiment
  -- Each row's alpha as the experiment asked for it (1.3, not the grid's float32 1.29999995).
  local requested = {}
  for _, al in ipairs(self.alphas) do requested[f32(al)] = requested[f32(al)] or al end
  local has_url = self.sae_name ~= "" and X:latent_url(self.layer, 0, self.sae_name) ~= nil
  local has_at = #(self.vectors or {}) > 0
  local cols = columns(has_url, has_at)
  local sae_hook = self.layer and ("blocks.%d.hook_resid_post"):format(self.layer) or ""
  for _, r in ipairs(self.grid_rows) do
    local kind = r.intervention == 1 and "baseline" or r.vector and "vector" or (self.is_control[r.latent] and "control" or "latent")
    local name = r.vector and r.vector.name or r.latent and X:label(self.layer, r.latent, self.sae_name) or ""
    out[#out + 1] = csv.record({prompt = self.prompt_labels[r.prompt], layer = self.layer, kind = kind, latent = r.latent,
      at = has_at and (r.vector and r.vector.at or (r.latent and sae_hook) or "") or nil,
      name = name, where = r.where, alpha = r.alpha and requested[r.alpha] or r.alpha,
      url = has_url and (r.latent and X:latent_url(self.layer, r.latent, self.sae_name) or "") or nil,
      max_new_tokens = r.max_new_tokens, score = r.score, dscore = r.dscore, p_refusal = r.p_refusal, R = r.R, dR = r.dR,
      predicted_dR = r.predicted_dR, refused = r.refused, text = r.text}, cols)
  end
  return out
end

-- Mean over prompts of a metric per (latent, alpha), one series per latent, controls last.
function Steering:series(metric, where)
  metric = metric or "score"
  where = where or (self.wheres and self.wheres[1])
  local acc = {}
  for _, r in ipairs(self.grid_rows) do
    if r.intervention ~= 1 and (where == nil or r.where == nil or r.where == where) then
      local v = r[metric]
      if type(v) == "boolean" then v = v and 1 or 0 end
      local unit = r.vector or r.latent -- a vector's series is keyed by its entry, a latent's by k
      acc[unit] = acc[unit] or {}
      local key = f32(r.alpha)
      local cell = acc[unit][key] or {sum = 0, n = 0}
      if v and v == v then cell.sum, cell.n = cell.sum + v, cell.n + 1 end
      acc[unit][key] = cell
    end
  end
  local alphas = util.copy(self.alphas)
  table.sort(alphas)
  local out = {}
  local function ys_of(unit)
    local ys = {}
    for i, al in ipairs(alphas) do
      local c = acc[unit] and acc[unit][f32(al)]
      ys[i] = (c and c.n > 0) and c.sum / c.n or false
    end
    return ys
  end
  local function add(k, control)
    local name = self.experiment:label(self.layer, k, self.sae_name)
    out[#out + 1] = {name = control and ("random #" .. k) or ("#" .. k .. (name ~= "" and (" " .. name) or "")),
                     x = alphas, y = ys_of(k), control = control}
  end
  for _, v in ipairs(self.vectors or {}) do out[#out + 1] = {name = v.name, x = alphas, y = ys_of(v), control = false} end
  for _, k in ipairs(self.latents) do add(k, false) end
  for _, k in ipairs(self.controls) do add(k, true) end
  return out
end

return {}
