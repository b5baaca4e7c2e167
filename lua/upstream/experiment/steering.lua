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
  direction = "table|upstream.Tensor", target = "integer", latents = "integers", alphas = "numbers",
  controls = "integer", where = "string|strings", max_new_tokens = "integer", batch = "integer", label = "string",
}

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
  local layer = spec.layer or (a and a.layer) or (self.source_layers and self.source_layers[1])
  if not layer then util.fail("steer: no layer") end
  local sae = type(spec.sae) == "string" and self:sae(layer, spec.sae) or spec.sae or (a and a.sae) or self:sae(layer)
  local dir = spec.direction or (a and a.direction) or self:direction()
  local target = spec.target or (a and a.target) or self.target_layer
  if not spec.latents or #spec.latents == 0 then util.fail("steer: field 'latents' (a non-empty list) is required") end
  if not spec.alphas or #spec.alphas == 0 then util.fail("steer: field 'alphas' (a non-empty list) is required") end
  local d_sae = sae:info().d_sae
  local controls = draw_controls(self.seed, layer, spec.controls or 0, d_sae, spec.latents)
  local all = {}
  for _, k in ipairs(spec.latents) do all[#all + 1] = k end
  for _, k in ipairs(controls) do all[#all + 1] = k end
  local is_control = {}
  for _, k in ipairs(controls) do is_control[k] = true end
  local gprompts = {}
  for i, ids in ipairs(prompts) do gprompts[i] = {ids = ids, label = labels[i]} end
  local tok = self:tokenizer()
  local max_new = spec.max_new_tokens or 0
  local label = spec.label or ((a and a.label or labels[1]) .. "_L" .. layer)
  -- The positions axis: one grid per `where`, rows tagged with it; the unsteered baseline is
  -- the same for every `where`, so only the first grid's is kept.
  local wheres = type(spec.where) == "table" and spec.where or {spec.where or "all"}
  if #wheres == 0 then util.fail("steer: where must name at least one of all, prompt, generated") end
  self:log("steer %s: %d latents (%d random controls) x %d alphas x %d prompts x %d position rules", label, #all,
           #controls, #spec.alphas, #prompts, #wheres)
  -- The attribution's gradient serves the prediction (no second backward pass) when it is of
  -- the grid's objective at the steered layer; the grid checks the objective, else computes.
  local gradients = a and a.grad and {{prompt = 1, layer = a.layer, grad = a.grad, objective =
    {layer = a.target, direction = direction_vector(a.direction), positions = a.objective_positions}}}
  local rows, totals = {}, {cells = 0, cached = 0, computed = 0}
  for wi, where in ipairs(wheres) do
    local grid <close> = core.grid{
      model = self:model(), prompts = gprompts, refusal_ids = self:refusal_ids(), sae = sae, latents = all,
      alphas = spec.alphas, layer = layer, where = where, max_new_tokens = max_new,
      objective = {layer = target, direction = direction_vector(dir)}, gradients = gradients,
      tokenizer = max_new > 0 and tok or nil, cache = self.settings.cache .. "/grid",
      identity = {tokenizer = self._manifest.tokenizer.sha256 or "none"},
      batch = spec.batch or 16, progress = not self.quiet,
    }
    -- Cells are cached as their batch finishes: a killed run's rerun computes only what is missing.
    local got = grid:run()
    for _, r in ipairs(got) do
      if wi == 1 or r.intervention ~= 1 then r.where = where; rows[#rows + 1] = r end
    end
    local t = grid:totals()
    totals.cells, totals.cached, totals.computed = totals.cells + t.cells, totals.cached + t.cached, totals.computed + t.computed
  end
  self._grids[#self._grids + 1] = {label = label, cells = totals.cells, cached = totals.cached, computed = totals.computed}
  self:log("steer %s: %d cells, %d from the cache, %d computed", label, totals.cells, totals.cached, totals.computed)
  local s = setmetatable({experiment = self, label = label, layer = layer, latents = spec.latents, controls = controls,
    is_control = is_control, alphas = spec.alphas, grid_rows = rows, totals = totals, baseline = {}, sae_name =
    (self._sae_names or {})[sae] or "", prompt_labels = labels, wheres = wheres}, Steering)
  for _, r in ipairs(rows) do
    if r.intervention == 1 then s.baseline[r.prompt] = r.score end
  end
  return s
end)

local steer_cols = {"prompt", "layer", "kind", "latent", "name", "where", "alpha", "max_new_tokens", "score", "dscore",
                    "p_refusal", "R", "dR", "predicted_dR", "refused", "text"}
local steer_url_cols = util.copy(steer_cols)
table.insert(steer_url_cols, 6, "url")

-- The grid keeps alphas in float32; a Lua double from spec.alphas finds its cells only after
-- the same rounding.
local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

function Steering:rows()
  local out = {}
  local X = self.experiment
  -- Each row's alpha as the experiment asked for it (1.3, not the grid's float32 1.29999995).
  local requested = {}
  for _, al in ipairs(self.alphas) do requested[f32(al)] = requested[f32(al)] or al end
  -- url (after name) only for an SAE with a neuronpedia_id, so other tables keep their columns.
  local has_url = X:latent_url(self.layer, 0, self.sae_name) ~= nil
  for _, r in ipairs(self.grid_rows) do
    local kind = r.intervention == 1 and "baseline" or (self.is_control[r.latent] and "control" or "latent")
    out[#out + 1] = csv.record({prompt = self.prompt_labels[r.prompt], layer = self.layer, kind = kind, latent = r.latent,
      name = r.latent and X:label(self.layer, r.latent, self.sae_name) or "", where = r.where,
      alpha = r.alpha and requested[r.alpha] or r.alpha,
      url = has_url and (r.latent and X:latent_url(self.layer, r.latent, self.sae_name) or "") or nil,
      max_new_tokens = r.max_new_tokens, score = r.score, dscore = r.dscore, p_refusal = r.p_refusal, R = r.R, dR = r.dR,
      predicted_dR = r.predicted_dR, refused = r.refused, text = r.text}, has_url and steer_url_cols or steer_cols)
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
      acc[r.latent] = acc[r.latent] or {}
      local key = f32(r.alpha)
      local cell = acc[r.latent][key] or {sum = 0, n = 0}
      if v and v == v then cell.sum, cell.n = cell.sum + v, cell.n + 1 end
      acc[r.latent][key] = cell
    end
  end
  local alphas = util.copy(self.alphas)
  table.sort(alphas)
  local out = {}
  local function add(k, control)
    local ys = {}
    for i, al in ipairs(alphas) do
      local c = acc[k] and acc[k][f32(al)]
      ys[i] = (c and c.n > 0) and c.sum / c.n or false
    end
    local name = self.experiment:label(self.layer, k, self.sae_name)
    out[#out + 1] = {name = control and ("random #" .. k) or ("#" .. k .. (name ~= "" and (" " .. name) or "")),
                     x = alphas, y = ys, control = control}
  end
  for _, k in ipairs(self.latents) do add(k, false) end
  for _, k in ipairs(self.controls) do add(k, true) end
  return out
end

return {}
