-- upstream.experiment.attribution: X:attribute and X:attribute_all (the refusal gradient onto an SAE's decoder
-- rows at a source layer: S_k and RG[t, k]) and the Attribution it returns, with its rankings
-- and token tables (a ranking row names its score variant: score_kind). X:_prompt_label names
-- each prompt (p1, p2, ... or the label given) and lists it in the table "prompts".
local core = require "upstream.core"
local util = require "upstream.util"
local csv = require "upstream.csv"
local step = require("upstream.experiment.manifest").step
local direction_vector = require("upstream.experiment.direction").vector
local class = require "upstream.experiment.class"
local M, Experiment = class.M, class.Experiment

local Attribution = {}
Attribution.__index = Attribution
M.Attribution = Attribution

local attribute_fields = {
  prompt = "string|table", layer = "integer", direction = "table|upstream.Tensor", target = "integer",
  sae = "string|upstream.Sae", score = "string", positions = "string|table", include_bos = "boolean", label = "string",
  score_positions = "string|table",
}

-- A short label per prompt, listed in the table "prompts" with its text and token count, so the
-- other tables name prompts by it. Without `given`, a prompt keeps the label it got first (p1,
-- p2, ... in order of first use, or the one given then); a `given` label is always the one used:
-- new to this prompt, it gets its own row (the same text under a second label, so a second
-- attribution of a prompt, with another score say, can be told apart); a label naming another
-- prompt raises, since the tables could not then say which prompt a row is about.
function Experiment:_prompt_label(prompt, ids, given)
  local key = type(prompt) == "string" and prompt or table.concat(prompt, ",")
  local known = self._prompt_labels or {n = 0, first = {}, prompt_of = {}}
  self._prompt_labels = known
  if not known.first[key] then known.n = known.n + 1 end -- p<n> counts distinct prompts, labelled or not
  local label = given or known.first[key]
  if not label then -- p<n>, or the next free number when the user gave that name to another prompt
    local i = known.n
    while known.prompt_of["p" .. i] do i = i + 1 end
    label = "p" .. i
  end
  if known.prompt_of[label] == key then return label end
  if known.prompt_of[label] then
    util.fail("label '%s' already names another prompt (%q); give each prompt its own", label, known.prompt_of[label])
  end
  known.first[key] = known.first[key] or label
  known.prompt_of[label] = key
  local text = type(prompt) == "string" and prompt or self:tokenizer():decode(prompt)
  self:table("prompts", {csv.record({label = label, text = text, tokens = #ids}, {"label", "text", "tokens"})},
             {title = "Prompts"})
  return label
end

-- One attribution's request: everything X:attribute checks and derives before the gradient
-- runs (`what` starts its error messages: "attribute", or "attribute_all: specs[i]").
local function prepare(self, spec, what)
  util.check_fields(spec, attribute_fields, what)
  if not spec.prompt then util.fail("%s: field 'prompt' is required", what) end
  local layer = spec.layer or (self.source_layers and self.source_layers[1])
  if not layer then util.fail("%s: no source layer (declare source_layers or pass layer)", what) end
  local dir = spec.direction or self:direction()
  local target = spec.target or self.target_layer
  if not target then util.fail("%s: no target layer", what) end
  self:_check_layer(layer, what .. ": source layer")
  self:_check_layer(target, what .. ": target layer")
  if layer >= target then util.fail("%s: source layer %d must be below the target layer %d", what, layer, target) end
  local sae = type(spec.sae) == "string" and self:sae(layer, spec.sae) or spec.sae or self:sae(layer)
  local ids = type(spec.prompt) == "string" and self:encode(spec.prompt) or spec.prompt
  local positions
  if spec.positions == "all" then
    positions = {}
    for t = 0, #ids - 1 do positions[#positions + 1] = t end
  elseif type(spec.positions) == "table" then positions = spec.positions
  elseif spec.positions ~= nil and spec.positions ~= "last" then
    util.fail("%s: positions must be \"last\", \"all\" or a list, got '%s'", what, spec.positions)
  end
  -- The tokens S_k averages over: "all" (every token but BOS), "instruction" (the user's text
  -- inside the chat template: what differs between prompts), or a list of token indices.
  local score_positions
  if spec.score_positions == "instruction" then
    score_positions = util.instruction_positions(self:tokenizer(), function(x) return self:encode(x) end, ids)
  elseif type(spec.score_positions) == "table" then score_positions = spec.score_positions
  elseif spec.score_positions ~= nil and spec.score_positions ~= "all" then
    util.fail("%s: score_positions must be \"all\", \"instruction\" or a list, got '%s'", what, spec.score_positions)
  end
  local label = self:_prompt_label(spec.prompt, ids, spec.label)
  return {spec = spec, ids = ids, sae = sae, layer = layer, target = target, dir = dir, positions = positions,
          label = label, opts = {source = layer, target = target, direction = direction_vector(dir),
          score = spec.score or "gradient", include_bos = spec.include_bos or false, positions = positions,
          score_positions = score_positions}}
end

-- The Attribution of a prepared request and its result (model:attribute's table).
local function wrap(self, q, res)
  local spec, ids = q.spec, q.ids
  local tok = self:tokenizer()
  local tokens = {}
  for i, id in ipairs(ids) do tokens[i] = tok:piece(id) or tostring(id) end
  return setmetatable({
    experiment = self, prompt = type(spec.prompt) == "string" and spec.prompt or tok:decode(ids), label = q.label,
    ids = ids, tokens = tokens, layer = q.layer, target = q.target, R = res.R, scores = res.scores, rg = res.rg,
    include = res.include, sae = q.sae,
    sae_name = (self._sae_names or {})[q.sae] or (type(spec.sae) == "string" and spec.sae) or "",
    direction = q.dir, score_kind = spec.score or "gradient",
    grad = res.grad, objective_positions = q.positions, -- the gradient and its objective's positions (nil: last), for steer
  }, Attribution)
end

Experiment.attribute = step("attribute", function(self, spec)
  local q = prepare(self, spec, "attribute")
  self:log("attribute %s: layer %d -> target %d", q.label, q.layer, q.target)
  return wrap(self, q, self:model():attribute(q.ids, q.sae, q.opts))
end)

-- Many attributions at once: the same as X:attribute for each spec, in order, but computed as
-- work units, so a job of several ranks (mpirun) spreads them; one progress bar for all.
Experiment.attribute_all = step("attribute_all", function(self, specs)
  if type(specs) ~= "table" then util.fail("attribute_all: expected a list of attribute specs, got %s", type(specs)) end
  local qs, items = {}, {}
  for i, spec in ipairs(specs) do
    if type(spec) ~= "table" then util.fail("attribute_all: specs[%d] must be a table, got %s", i, type(spec)) end
    qs[i] = prepare(self, spec, ("attribute_all: specs[%d]"):format(i))
    items[i] = {qs[i].ids, qs[i].sae, qs[i].opts}
  end
  if #qs == 0 then return {} end
  self:log("attribute_all: %d attributions", #qs)
  local bar <close> = self:progress("attributions", #qs, {unit = "attributions"})
  local results = self:model():attribute_all(items, function(done) bar:update(done) end)
  local out = {}
  for i, q in ipairs(qs) do out[i] = wrap(self, q, results[i]) end
  return out
end)

function Attribution:sum_rg(k)
  local s, T = 0, #self.ids
  for t = 1, T do s = s + self.rg:at(t, k + 1) end
  return s
end

local function ranked(a, k, side)
  local out = {}
  for i, r in ipairs(core.rank(a.scores, k, side)) do
    out[i] = {rank = i, latent = r.latent, score = r.score, sum_rg = a:sum_rg(r.latent),
              name = a.experiment:label(a.layer, r.latent, a.sae_name), side = side,
              url = a.experiment:latent_url(a.layer, r.latent, a.sae_name)}
  end
  return out
end

function Attribution:top(k) return ranked(self, k, "top") end
function Attribution:bottom(k) return ranked(self, k, "bottom") end
function Attribution:top_latents(k)
  local out = {}
  for i, r in ipairs(self:top(k)) do out[i] = r.latent end
  return out
end
function Attribution:bottom_latents(k)
  local out = {}
  for i, r in ipairs(self:bottom(k)) do out[i] = r.latent end
  return out
end

local ranking_cols = {"prompt", "layer", "target", "score_kind", "side", "rank", "latent", "name", "score", "sum_rg"}
local ranking_url_cols = util.copy(ranking_cols)
ranking_url_cols[#ranking_url_cols + 1] = "url"
function Attribution:ranking(k)
  local rows = {}
  for _, side in ipairs({"top", "bottom"}) do
    for _, r in ipairs(ranked(self, k, side)) do
      -- url only for an SAE with a neuronpedia_id, so other tables keep their columns.
      rows[#rows + 1] = csv.record({prompt = self.label, layer = self.layer, target = self.target,
        score_kind = self.score_kind, side = side,
        rank = r.rank, latent = r.latent, name = r.name, score = r.score, sum_rg = r.sum_rg, url = r.url},
        r.url and ranking_url_cols or ranking_cols)
    end
  end
  return rows
end

function Attribution:token_rows(latents)
  local rows = {}
  for _, k in ipairs(latents) do
    for t = 1, #self.ids do
      rows[#rows + 1] = csv.record({prompt = self.label, layer = self.layer, latent = k, t = t - 1, token = self.tokens[t],
        rg = self.rg:at(t, k + 1)}, {"prompt", "layer", "latent", "t", "token", "rg"})
    end
  end
  return rows
end

return {}
