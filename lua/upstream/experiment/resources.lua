-- upstream.experiment.resources: what a run loads and reads. The model, tokenizer and SAEs
-- (opened on first use; shared by the experiments of one process while M.share_loaded(true),
-- else closed by X:finish through release), the refusal token ids, and the declared prompt
-- sets (declared, or replaced from the command line by --set NAME=FILE) and their chat
-- encoding. A missing SAE or refusal token raises with the experiment's file:line; a prompt
-- file that cannot be used raises naming the setting and the path.
local core = require "upstream.core"
local util = require "upstream.util"
local config = require "upstream.config"
local class = require "upstream.experiment.class"
local M, Experiment = class.M, class.Experiment

-- ---------------------------------------------------------------- loaded objects

-- Objects shared by the experiments of one process (experiments/all.lua runs six on one
-- checkpoint: 5 GB of weights each on gemma-2-2b-it). While sharing is on, a model, tokenizer
-- or SAE is opened once per path and X:finish() leaves it open for the next experiment;
-- M.share_loaded(false) closes them all. Off by default: a lone run frees what it loaded.
local shared, shared_objs = nil, setmetatable({}, {__mode = "k"})

function M.share_loaded(on)
  if on then
    shared = shared or {model = {}, tokenizer = {}, sae = {}}
    return
  end
  for _, kind in pairs(shared or {}) do
    for _, obj in pairs(kind) do
      shared_objs[obj] = nil
      obj:close()
    end
  end
  shared = nil
end

local function open_shared(kind, path, open)
  if not shared then return open(path), false end
  local obj = shared[kind][path]
  if obj then return obj, true end
  obj = open(path)
  shared[kind][path], shared_objs[obj] = obj, true
  return obj, false
end

local function release(obj)
  if obj and not shared_objs[obj] then obj:close() end
end

function Experiment:model()
  if not self._model then
    local reused
    self._model, reused = open_shared("model", self.model_entry.path, core.model)
    self:log("%s model %s", reused and "reusing the loaded" or "loading", self.model_entry.path)
  end
  return self._model
end

-- A tokenizer whose ids run past the model's vocabulary belongs to another model: refused at
-- load, naming both, rather than when the first such id reaches the embedding.
function Experiment:tokenizer()
  if not self._tok then
    local tok = open_shared("tokenizer", self.model_entry.tokenizer, core.tokenizer)
    local ok, c = pcall(core.json_read, self.model_entry.path .. "/config.json")
    local vocab = ok and type(c) == "table" and math.tointeger(c.vocab_size)
    if vocab and tok:vocab_size() > vocab then
      util.fail("the tokenizer %s has %d ids, but model '%s' has a vocabulary of %d (config.json vocab_size): " ..
                "they do not belong together", self.model_entry.tokenizer, tok:vocab_size(), self.model_name, vocab)
    end
    self._tok = tok
  end
  return self._tok
end

-- The checkpoint's config.json, read once (no weights loaded) for the layer count, the thread
-- rule and the manifest; a malformed one is the user's file, named with the experiment's line.
function Experiment:_model_config()
  if not self._config_json then
    self._config_json = util.guarded(core.json_read, self.model_entry.path .. "/config.json")
  end
  return self._config_json
end

-- The model's layer count, from its config.json.
function Experiment:_n_layers()
  local c = self:_model_config()
  return type(c) == "table" and math.tointeger(c.num_hidden_layers) or nil
end

-- Raises "<what> N is not a layer of model 'M' (L layers: 0-(L-1))" unless 0 <= layer < L.
function Experiment:_check_layer(layer, what)
  local n = self:_n_layers()
  if n and (layer < 0 or layer >= n) then
    util.fail("%s %d is not a layer of model '%s' (%d layers: 0-%d)", what, layer, self.model_name, n, n - 1)
  end
end

-- The layers SAE `name` has a file for: its `layers` list, else each layer of the model whose
-- filled-in path exists.
local function sae_layers(self, name)
  local entry = self.settings.saes[name]
  if entry and entry.layers then return entry.layers end
  local out = {}
  for l = 0, (self:_n_layers() or 0) - 1 do
    local ok, p = pcall(config.sae_path, self.settings, name, l)
    if ok and (util.exists(p) or util.exists(p .. "/cfg.json")) then out[#out + 1] = l end
  end
  return out
end

function Experiment:sae(layer, name)
  name = name or self.sae_name
  if not name then util.fail("no SAE: declare sae = NAME or set models.%s.defaults.sae", self.model_name) end
  self:_check_layer(layer, ("SAE '%s': layer"):format(name))
  local key = name .. "@" .. layer
  if not self._saes[key] then
    if not self.settings.saes[name] then config.sae_path(self.settings, name, layer) end -- raises: not registered
    local ok, path = pcall(config.sae_path, self.settings, name, layer)
    if not ok or (not util.exists(path) and not util.exists(path .. "/cfg.json")) then
      local have = sae_layers(self, name)
      util.fail("SAE '%s' has no layer %d%s; it has %s", name, layer, ok and (" (no file at " .. path .. ")") or "",
        #have > 0 and ("layer" .. (#have > 1 and "s " or " ") .. table.concat(have, ", ")) or "no layer with a file")
    end
    self._saes[key] = open_shared("sae", path, core.sae)
    local info = self._saes[key]:info()
    self._manifest.saes[#self._manifest.saes + 1] = {name = name, layer = layer, path = path,
      sha256 = self:_digest(path), d_sae = info.d_sae, architecture = info.architecture}
    self._sae_names = self._sae_names or {}
    self._sae_names[self._saes[key]] = name
  end
  return self._saes[key]
end

function Experiment:refusal_ids()
  if self._refusal_ids then return self._refusal_ids end
  local r = self.decl.refusal or {}
  local ids = r.ids or self.model_entry.refusal_ids or (self.organism and self.organism.refusal_ids)
  if not ids then
    local tok = self:tokenizer()
    ids = {}
    for _, piece in ipairs(r.tokens or self.model_entry.refusal_tokens or {"I"}) do
      local id = tok:id(piece)
      if not id then util.fail("refusal token '%s' is not in the tokenizer; set refusal = {ids = {...}}", piece) end
      ids[#ids + 1] = id
    end
  end
  self._refusal_ids = ids
  self._manifest.refusal_ids = ids
  return ids
end

-- A prompt set from a file given in place of a declared one: {path (absolute), sha256 (of
-- the file's bytes), n, prompts}. where names the setting for the messages ("--set
-- harmful=FILE", or "upstream.cfg:12: experiments.direction.harmful"); a relative value is
-- taken from base (the directory upstream runs in for --set, the settings file's for
-- settings). Formats as upstream.prompts (core/formats/prompts.h). A missing, unreadable,
-- empty or malformed file raises "<where>: ..." naming the path; setup calls this before
-- anything is loaded, so a bad file costs no checkpoint load.
function M.prompt_file(where, value, base)
  if value == "" then error(where .. ": no file named", 0) end
  local path = util.expand(value, base)
  local f, why = io.open(path, "rb")
  if not f then error(("%s: cannot read %s"):format(where, why), 0) end
  local text, rwhy = f:read("a")
  f:close()
  if not text then error(("%s: cannot read %s: %s"):format(where, path, tostring(rwhy)), 0) end
  if not text:match("%S") then error(("%s: %s is empty"):format(where, path), 0) end
  local ok, list = pcall(core.prompts, path)
  if not ok then error(("%s: %s"):format(where, list), 0) end
  return {path = path, sha256 = core.sha256(text), n = #list, prompts = list}
end

function Experiment:prompts(set)
  return util.guarded(function()
    local file = self._prompt_files and self._prompt_files[set]
    if file then
      -- The manifest's prompt_files.<set>.read: whether the run used the file it was given.
      self._manifest.prompt_files[set].read = true
      return util.copy(file.prompts)
    end
    local p = self.decl.prompts and self.decl.prompts[set]
    if p == nil then
      local names = util.sorted_keys(self.decl.prompts or {})
      util.fail("no prompt set '%s'%s; the experiment declares %s", tostring(set),
        util.suggest(tostring(set), names), #names > 0 and table.concat(names, ", ") or "none (prompts = {name = {...}})")
    end
    -- A file (relative to the experiment file): read and checked when the experiment was
    -- declared (setup.lua), so a bad one fails at the declaration, before any model loads.
    if type(p) == "string" then return util.copy(self._declared_files[set].prompts) end
    return p
  end)
end

function Experiment:encode(text)
  return self:tokenizer():chat(text, self.model_entry.template)
end

return {release = release}
