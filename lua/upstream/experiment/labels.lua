-- upstream.experiment.labels: the names of latents (X:label) and their Neuronpedia pages
-- (X:latent_url). Names come from organism.json, the SAE's settings labels, its Neuronpedia
-- export or its label_text's top tokens (the last two read once per (SAE, layer) on first
-- use), else organism.json's top tokens. A malformed export or label_text raises naming the
-- file.
local core = require "upstream.core"
local config = require "upstream.config"
local class = require "upstream.experiment.class"
local M, Experiment = class.M, class.Experiment

-- "~a/b/c" from the first three of an organism.json label's top-activating tokens (an entry
-- {"share": ..., "tokens": [...]} without a concept), so an unlabelled latent still says what
-- it reads; nil when the entry lists none. Pieces are trimmed, a newline shows as \n and a
-- blank piece as _.
local function organism_tokens(entry)
  if type(entry) ~= "table" or type(entry.tokens) ~= "table" or #entry.tokens == 0 then return nil end
  local pieces = {}
  for i = 1, math.min(3, #entry.tokens) do
    local piece = tostring(entry.tokens[i]):gsub("\n", "\\n"):gsub("^%s+", ""):gsub("%s+$", "")
    pieces[i] = piece ~= "" and piece or "_"
  end
  return "~" .. table.concat(pieces, "/")
end

-- The name of latent k of the SAE at layer: organism.json labels, then the settings' SAE
-- labels, then the SAE's Neuronpedia export, then its label_text's top-activating tokens,
-- then (none of those naming it) organism.json's top-activating tokens.
function Experiment:label(layer, k, sae_name)
  local org = self.organism and self.organism.labels
  local by_layer = type(org) == "table" and org[tostring(layer)] or nil
  local org_entry = type(by_layer) == "table" and by_layer[tostring(k)] or nil
  local name = org_entry
  if type(name) == "table" then name = name.concept or name.name end -- {"concept": ..., "auroc": ...}
  if type(name) ~= "string" then name = nil end -- a hand-edited entry of another type names nothing
  sae_name = sae_name or self.sae_name or ""
  local entry = self.settings.saes[sae_name]
  if not name and entry then
    -- Settings: labels = ({layer = L; latent = k; name = "...";}, ...) (libconfig names
    -- cannot be numbers, so not a group keyed by latent as organism.json has it).
    for _, l in ipairs(entry.labels or {}) do
      if l.layer == layer and l.latent == k then name = l.name end
    end
    if not name and entry.neuronpedia then name = self:_neuronpedia(sae_name, layer)[k] end
    if not name and entry.label_text then name = self:_text_labels(sae_name, layer)(k) end
  end
  if name == nil or name == "" then name = organism_tokens(org_entry) end
  return name or ""
end

-- The Neuronpedia page of latent k, or nil when the SAE has no neuronpedia_id.
function Experiment:latent_url(layer, k, sae_name)
  sae_name = sae_name or self.sae_name or ""
  local entry = self.settings.saes[sae_name]
  if not (entry and entry.neuronpedia_id) then return nil end
  return ("https://www.neuronpedia.org/%s/%d"):format(config.sae_fill(self.settings, sae_name, layer, "neuronpedia_id"), k)
end

-- Latent index -> description from the SAE's Neuronpedia export (a JSON array of
-- {modelId, layer, index, description, ...}), for the entries whose modelId/layer are the
-- SAE's neuronpedia_id at this layer. Read once per (SAE, layer); a latent with several
-- explanations keeps the first. A malformed file raises naming it.
function Experiment:_neuronpedia(sae_name, layer)
  local key = sae_name .. "@" .. layer
  self._np = self._np or {}
  if self._np[key] then return self._np[key] end
  local entry = self.settings.saes[sae_name]
  local path = entry.neuronpedia
  if not entry.neuronpedia_id then
    error(("saes.%s: neuronpedia = %s needs neuronpedia_id to pick its entries"):format(sae_name, path), 0)
  end
  local id = config.sae_fill(self.settings, sae_name, layer, "neuronpedia_id")
  local model_id, np_layer = id:match("^([^/]+)/(.+)$")
  if not model_id then
    error(("saes.%s.neuronpedia_id: '%s' is not MODEL/SOURCE (e.g. gemma-2-2b/{layer}-gemmascope-res-{width})"):format(
      sae_name, id), 0)
  end
  local ok, list = pcall(core.json_read, path)
  if not ok then
    list = tostring(list)
    error(list:find(path, 1, true) and list or ("Neuronpedia export %s: %s"):format(path, list), 0)
  end
  local function bad(fmt, ...) error(("Neuronpedia export %s: " .. fmt):format(path, ...), 0) end
  if type(list) ~= "table" or (next(list) ~= nil and list[1] == nil) then bad("expected a JSON array of explanations") end
  local names = {}
  for i, e in ipairs(list) do
    if type(e) ~= "table" then bad("entry %d is not an object", i) end
    for _, f in ipairs({"modelId", "layer", "index", "description"}) do
      if e[f] == nil or e[f] == core.json_null then bad("entry %d has no '%s'", i, f) end
    end
    local idx = math.tointeger(tonumber(e.index))
    if not idx or idx < 0 then bad("entry %d: index '%s' is not a latent index", i, tostring(e.index)) end
    if type(e.description) ~= "string" then bad("entry %d: description is not a string", i) end
    if e.modelId == model_id and e.layer == np_layer and not names[idx] then names[idx] = e.description end
  end
  self._np[key] = names
  self:log("Neuronpedia export %s: %d latents named for %s", path, (function()
    local n = 0
    for _ in pairs(names) do n = n + 1 end
    return n
  end)(), id)
  return names
end

-- Caps on label_text: the activations of every kept token are held at once (tokens x d_sae
-- floats), so the file is read as at most this many lines of at most this many tokens (BOS
-- included).
M.label_text_lines, M.label_text_tokens = 2000, 64

-- A function k -> "~a/b/c": the three token pieces on which latent k has its highest activation
-- over the SAE's label_text (each line tokenized with BOS, run to the SAE's layer, encoded);
-- "" when k never fires there. Computed once per (SAE, layer), on first use.
function Experiment:_text_labels(sae_name, layer)
  local key = sae_name .. "@" .. layer
  self._text_peaks = self._text_peaks or {}
  if self._text_peaks[key] then return self._text_peaks[key] end
  local entry = self.settings.saes[sae_name]
  local path = entry.label_text
  -- upstream.collect_activations reads the residual stream after the block, so an SAE on
  -- another hook would be encoding the wrong activations.
  local hook = entry.hook and config.sae_fill(self.settings, sae_name, layer, "hook")
  if hook and hook ~= ("blocks.%d.hook_resid_post"):format(layer) then
    error(("saes.%s.label_text: needs an SAE on blocks.%d.hook_resid_post, this one reads %s"):format(
      sae_name, layer, hook), 0)
  end
  local f, err = io.open(path, "r")
  if not f then error(("saes.%s.label_text: cannot read %s (%s)"):format(sae_name, path, tostring(err)), 0) end
  local tok, sae = self:tokenizer(), self:sae(layer, sae_name)
  local bos = tok:bos_id()
  local lists, groups, ids_of_group, group_of = {}, {}, {}, {}
  for line in f:lines() do
    if #lists >= M.label_text_lines then break end
    if line:match("%S") then
      local ids = {bos >= 0 and bos or nil}
      for _, id in ipairs(tok:encode(line)) do
        if #ids >= M.label_text_tokens then break end
        ids[#ids + 1] = id
        -- One group per distinct token id: collect_activations returns a row for every slot
        -- but BOS, in order, so row i's group is its token's.
        if not group_of[id] then ids_of_group[#ids_of_group + 1] = id; group_of[id] = #ids_of_group end
        groups[#groups + 1] = group_of[id]
      end
      if #ids > (bos >= 0 and 1 or 0) then lists[#lists + 1] = ids end
    end
  end
  f:close()
  if #lists == 0 then error(("saes.%s.label_text: %s has no text"):format(sae_name, path), 0) end
  self:log("label_text %s: top tokens of SAE %s layer %d over %d lines, %d tokens", path, sae_name, layer, #lists, #groups)
  local bar <close> = self:progress(("label_text %s layer %d"):format(sae_name, layer), #lists, {unit = "lines"})
  local X = core.collect_activations(self:model(), lists, layer, {batch = 16, progress = function(done)
    bar:update(done)
  end})
  if X:shape()[1] ~= #groups then
    error(("label_text %s: %d activation rows for %d tokens"):format(path, X:shape()[1], #groups), 0)
  end
  local peak = sae:encode(X):group_reduce(groups, #ids_of_group, "max")
  local memo = {}
  local function name(k)
    if memo[k] then return memo[k] end
    local tops = {}
    for g = 1, #ids_of_group do
      local a = peak:at(g, k + 1)
      if a > 0 then tops[#tops + 1] = {id = ids_of_group[g], a = a} end
    end
    table.sort(tops, function(x, y) return x.a > y.a or (x.a == y.a and x.id < y.id) end)
    local pieces = {}
    for i = 1, math.min(3, #tops) do pieces[i] = tok:decode({tops[i].id}) end
    memo[k] = #pieces > 0 and ("~" .. table.concat(pieces, "/")) or ""
    return memo[k]
  end
  self._text_peaks[key] = name
  return name
end

return {}
