-- upstream.experiment: the declarative layer a case study is written in (docs/lua-api.md).
--
--   local X = upstream.experiment{name = "hug", prompts = {...}, params = {...}}
--   local dir = X:direction()
--   local a = X:attribute{prompt = "...", layer = 1}
--   local s = X:steer{attribution = a, latents = a:top_latents(3), alphas = {-8, 0, 8}}
--   X:table("ranking", a:ranking(10)); X:plot_ranking(a, 10); X:finish()
--
-- What it owns: the run's directories (claimed with mkdir, so a run never reuses another's),
-- its tables (rewritten atomically after each X:table), the report and the manifest (rewritten
-- atomically after every step, so a dead run says how far it got), and the model, tokenizer
-- and SAEs it loads (closed by X:finish or the garbage collector). Steering cells live in the
-- grid cache of the settings, so an interrupted run's rerun computes only what is missing.
-- Latent names (X:label) come from organism.json, the SAE's settings labels, its Neuronpedia
-- export or its label_text's top tokens, the last two read once per (SAE, layer) on first use.
--
-- Error rule: misuse and failures raise with the experiment file's file:line first (see
-- upstream.util.fail / guarded); nothing returns nil, message.
local core = require "upstream.core"
local util = require "upstream.util"
local config = require "upstream.config"
local csv = require "upstream.csv"
local report = require "upstream.report"
local organism_lib = require "upstream.organism"

local M = {}
local Experiment = {}
Experiment.__index = Experiment
M.Experiment = Experiment

local decl_fields = {
  name = "string", title = "string", description = "string", model = "string", sae = "string",
  source_layers = "integers|integer", target_layer = "integer", direction = "string|table",
  prompts = "table", params = "table", seed = "integer", refusal = "table",
}
-- Fields --set and the settings' experiments.<name> may override (the rest describe the study).
local overridable = {model = true, sae = true, source_layers = true, target_layer = true, direction = true, seed = true}

local function wall()
  -- Wall time with sub-second resolution where the platform gives it; os.time() otherwise.
  local f = io.open("/proc/uptime", "r")
  if f then
    local up = f:read("n")
    f:close()
    if up then return up end
  end
  return os.time()
end

local function git_info(root)
  local function run(cmd)
    local p = io.popen(cmd .. " 2>/dev/null")
    if not p then return nil end
    local out = p:read("a")
    p:close()
    return out
  end
  local q = "'" .. root:gsub("'", "'\\''") .. "'"
  local rev = run("git -C " .. q .. " rev-parse HEAD")
  rev = rev and rev:match("%x+")
  if not rev then return {revision = "unknown"} end
  local status = run("git -C " .. q .. " status --porcelain --untracked-files=no") or ""
  return {revision = rev, dirty = status:match("%S") ~= nil}
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return (os.getenv("PWD") or ".") .. "/" .. path
end

-- --set KEY=VALUE pairs split into the experiment's own (fields, params) and settings.
local function split_sets(decl, sets)
  local mine, settings = {}, {}
  for _, kv in ipairs(sets or {}) do
    local key, value = kv:match("^([^=]+)=(.*)$")
    local pkey = key:match("^params%.(.+)$")
    if overridable[key] then mine[#mine + 1] = {field = key, value = value}
    elseif pkey or (decl.params and decl.params[key] ~= nil) then mine[#mine + 1] = {param = pkey or key, value = value}
    elseif decl_fields[key] then error(("--set %s: the experiment's %s cannot be overridden"):format(key, key), 0)
    else settings[#settings + 1] = {key = key, value = value} end
  end
  return mine, settings
end

local function as_list(v)
  if type(v) == "number" then return {v} end
  return v
end

function M.new(decl)
  util.check_fields(decl, decl_fields, "experiment")
  if not decl.name then util.fail("experiment: field 'name' is required") end
  if not decl.name:match("^[%w_.-]+$") or decl.name:match("^%.") then
    util.fail("experiment: name '%s' must be letters, digits, '_', '-' or '.'", decl.name)
  end
  local file = util.where(2) and util.where(2):match("^(.*):%d+$") or "?"
  local opts = core.run_options or {}
  local self = setmetatable({}, Experiment)
  self.decl = decl
  self.name = decl.name
  self.file = absolute(opts.script or file)
  self.started_wall = wall()
  self.quiet = opts.quiet or false
  self._report = report.new(decl.title or decl.name, decl.description)
  self._tables, self._table_order = {}, {}
  self._figures = {}
  self._timings = {}
  self._grids = {}
  self._saes, self._sae_files = {}, {}
  self._labels = {}

  local mine, settings_sets = split_sets(decl, opts.sets)
  if opts.threads then settings_sets[#settings_sets + 1] = {key = "threads", value = tostring(opts.threads)} end
  local ok, cfg = pcall(config.load, {path = opts.config, sets = settings_sets})
  if not ok then error(cfg, 0) end
  self.settings = cfg

  -- Fields: --set > settings' experiments.<name> > the file > model defaults > organism.json.
  local fields = {}
  for k in pairs(overridable) do fields[k] = decl[k] end
  local params = util.copy(decl.params or {})
  local section = cfg.experiments[decl.name] or {}
  for _, k in ipairs(util.sorted_keys(section)) do
    if overridable[k] then fields[k] = section[k]
    elseif decl_fields[k] then
      error(("%s: experiments.%s.%s cannot be overridden"):format(cfg.file or "settings", decl.name, k), 0)
    else params[k] = section[k] end
  end
  self.overrides = {}
  for _, s in ipairs(mine) do
    if s.field then fields[s.field] = util.parse_value(s.value, fields[s.field])
    else params[s.param] = util.parse_value(s.value, params[s.param]) end
    self.overrides[#self.overrides + 1] = (s.field or s.param) .. "=" .. s.value
  end
  for _, s in ipairs(settings_sets) do self.overrides[#self.overrides + 1] = s.key .. "=" .. s.value end
  -- Overridden fields must still have their declared type; say where the bad value came from.
  local from_set = {}
  for _, m in ipairs(mine) do if m.field then from_set[m.field] = true end end
  for _, k in ipairs(util.sorted_keys(overridable)) do
    local v = fields[k]
    if v ~= nil then
      local ok = false
      for ty in decl_fields[k]:gmatch("[^|]+") do ok = ok or util.type_checks[ty](v) end
      if not ok then
        local what = decl_fields[k]:gsub("|", " or ")
        if from_set[k] then error(("--set %s: must be %s"):format(k, what), 0) end
        if section[k] ~= nil then
          local line = cfg.lines and cfg.lines[("experiments.%s.%s"):format(decl.name, k)]
          error(("%s:%s: experiments.%s.%s: must be %s"):format(cfg.file or "settings", tostring(line or "?"),
            decl.name, k, what), 0)
        end
      end
    end
  end
  if opts.model then fields.model = opts.model end
  self.params = params

  local entry = config.model(cfg, fields.model or cfg.model)
  self.model_entry = entry
  self.model_name = entry.name
  local org_path = entry.path .. "/organism.json"
  if util.exists(org_path) then self.organism = core.json_read(org_path) end
  local org = self.organism or {}
  local dflt = entry.defaults

  self.source_layers = as_list(fields.source_layers) or dflt.source_layers or as_list(org.sae_layers)
    or as_list(org.source_layer)
  self.target_layer = fields.target_layer or dflt.target_layer or org.target_layer
  self.sae_name = fields.sae or dflt.sae
  if not self.sae_name then
    -- A model directory that carries its own SAEs (the organism's layout, or organism.json's
    -- "sae" map {"L": "relative path"}) registers them as "<model>/sae".
    local files, pattern = nil, nil
    if type(org.sae) == "table" then
      files = {}
      for l, rel in pairs(org.sae) do files[tostring(l)] = util.expand(rel, entry.path) end
    end
    if util.exists(entry.path .. "/sae") or files then pattern = entry.path .. "/sae/layer_{layer}/params.npz" end
    if pattern and not cfg.saes[entry.name .. "/sae"] then
      cfg.saes[entry.name .. "/sae"] = {path = pattern, files = files, format = "gemmascope",
                                        hook = "blocks.{layer}.hook_resid_post", model = entry.name}
    end
  end
  if not self.sae_name then
    for _, n in ipairs(util.sorted_keys(cfg.saes)) do
      if cfg.saes[n].model == entry.name and not self.sae_name then self.sae_name = n end
    end
  end
  self.direction_spec = fields.direction or "auto"
  -- threads = 0 means the library default, except on tiny models: their 32- to 64-wide
  -- products gain nothing from threads, and OpenMP/OpenBLAS waiting on a busy machine makes
  -- them many times slower. Any explicit threads setting (or --threads) is kept.
  if (cfg.threads or 0) <= 0 then
    local okc, mc = pcall(core.json_read, entry.path .. "/config.json")
    if okc and type(mc) == "table" and (mc.hidden_size or 0) > 0 and mc.hidden_size <= 256 then cfg.threads = 1 end
  end
  self.seed = fields.seed or 0
  if cfg.threads and cfg.threads > 0 then core.set_threads(cfg.threads) end

  -- Claim the run directories: mkdir fails when the name is taken, so two runs never share one.
  local results_base = absolute(cfg.results) .. "/" .. decl.name
  local plots_base = absolute(cfg.plots) .. "/" .. decl.name
  for _, d in ipairs({results_base, plots_base}) do
    local mk, err = core.mkdirs(d)
    if not mk then error(err, 0) end
  end
  -- Both directories must be new: a name taken in either (say plots left from a run whose
  -- results were deleted) moves on to the next suffix.
  local base_id = opts.run_id or os.date("!%Y%m%d-%H%M%S")
  local id, n = base_id, 1
  while true do
    local mk, err, why = core.mkdir(results_base .. "/" .. id)
    if mk then
      local pk, perr, pwhy = core.mkdir(plots_base .. "/" .. id)
      if pk then break end
      os.remove(results_base .. "/" .. id) -- empty, just made
      if pwhy ~= "exists" then error(perr, 0) end
      err, why = perr, pwhy
    end
    if why ~= "exists" or opts.run_id then
      error(why == "exists" and ("run '%s' exists already in %s or %s; a run never overwrites another"):format(
        id, results_base, plots_base) or err, 0)
    end
    n = n + 1
    id = ("%s-%d"):format(base_id, n)
  end
  self.run_id = id
  self.results_dir = results_base .. "/" .. id
  self.plots_dir = plots_base .. "/" .. id
  self.memo = cfg.cache .. "/filehash"
  core.mkdirs(cfg.cache)

  self._manifest = self:_base_manifest(opts)
  self:_write_manifest()
  self:log("run %s: model %s, results in %s", id, entry.name, self.results_dir)
  return self
end

function Experiment:_base_manifest(opts)
  local exp_text = util.read_file(self.file)
  local entry = self.model_entry
  local tok_path = entry.tokenizer
  if util.exists(tok_path .. "/tokenizer.json") then tok_path = tok_path .. "/tokenizer.json" end
  local cfg_json = core.json_read(entry.path .. "/config.json")
  return {
    experiment = {name = self.name, title = self.decl.title, file = self.file,
                  sha256 = exp_text and core.sha256(exp_text) or nil},
    run_id = self.run_id,
    status = "running",
    started = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    command = {script = opts.script, config = opts.config, model = opts.model, sets = opts.sets,
               run_id = opts.run_id, threads = opts.threads},
    overrides = self.overrides,
    settings = config.public(self.settings),
    model = {name = entry.name, path = entry.path, sha256 = core.hash_path(entry.path, self.memo), config = cfg_json},
    tokenizer = {path = tok_path, sha256 = util.exists(tok_path) and core.hash_path(tok_path, self.memo) or nil,
                 template = entry.template},
    organism = self.organism,
    saes = {},
    git = git_info(core.source_dir),
    versions = core.versions(),
    threads = core.threads(),
    seed = self.seed,
    params = self.params,
    source_layers = self.source_layers,
    target_layer = self.target_layer,
    sae = self.sae_name,
    timings = self._timings,
    grids = self._grids,
    outputs = {results = self.results_dir, plots = self.plots_dir, tables = {}, figures = {}},
  }
end

function Experiment:_write_manifest()
  local m = self._manifest
  m.target_layer = self.target_layer
  m.outputs.tables = {}
  for _, name in ipairs(self._table_order) do m.outputs.tables[#m.outputs.tables + 1] = name .. ".csv" end
  m.outputs.figures = {}
  for _, f in ipairs(self._figures) do m.outputs.figures[#m.outputs.figures + 1] = f .. ".png" end
  if self._direction then m.outputs.direction = "direction.safetensors" end
  util.write_atomic(self.results_dir .. "/manifest.json", core.json_encode(m) .. "\n")
end

-- The manifest as a PNG text chunk: compact JSON of the run so far.
function Experiment:manifest_json() return core.json_encode(self._manifest, {indent = 0}) end

function Experiment:log(fmt, ...)
  if self.quiet then return end
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  io.stderr:write(("[%s %6.1fs] %s\n"):format(self.name, wall() - self.started_wall, msg))
  io.stderr:flush()
end

-- Runs a step: logs it, times it, re-raises errors with the experiment's file:line, and
-- rewrites the manifest afterwards.
local function step(name, fn)
  return function(self, ...)
    local t0 = wall()
    local res = table.pack(util.guarded(fn, self, ...))
    self._timings[#self._timings + 1] = {step = name, seconds = wall() - t0}
    self:_write_manifest()
    return table.unpack(res, 1, res.n)
  end
end

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

function Experiment:tokenizer()
  if not self._tok then self._tok = open_shared("tokenizer", self.model_entry.tokenizer, core.tokenizer) end
  return self._tok
end

function Experiment:sae(layer, name)
  name = name or self.sae_name
  if not name then util.fail("no SAE: declare sae = NAME or set models.%s.defaults.sae", self.model_name) end
  local key = name .. "@" .. layer
  if not self._saes[key] then
    local path = config.sae_path(self.settings, name, layer)
    if not util.exists(path) and not util.exists(path .. "/cfg.json") then
      util.fail("SAE '%s' layer %d: no file at %s", name, layer, path)
    end
    self._saes[key] = open_shared("sae", path, core.sae)
    local info = self._saes[key]:info()
    self._manifest.saes[#self._manifest.saes + 1] = {name = name, layer = layer, path = path,
      sha256 = core.hash_path(path, self.memo), d_sae = info.d_sae, architecture = info.architecture}
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

-- The name of latent k of the SAE at layer: organism.json labels, then the settings' SAE
-- labels, then the SAE's Neuronpedia export, then its label_text's top-activating tokens.
function Experiment:label(layer, k, sae_name)
  local org = self.organism and self.organism.labels
  local by_layer = org and org[tostring(layer)]
  local name = by_layer and by_layer[tostring(k)]
  if type(name) == "table" then name = name.concept or name.name end -- {"concept": ..., "auroc": ...}
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
  local X = core.collect_activations(self:model(), lists, layer, {batch = 16})
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

function Experiment:prompts(set)
  local p = self.decl.prompts and self.decl.prompts[set]
  if p == nil then util.fail("no prompt set '%s' (declare prompts = {%s = {...}})", tostring(set), tostring(set)) end
  if type(p) == "string" then
    local path = util.expand(p, util.dirname(self.file))
    return core.prompts(path)
  end
  return p
end

function Experiment:encode(text)
  return self:tokenizer():chat(text, self.model_entry.template)
end

local function ids_of(self, list)
  local out = {}
  for i, p in ipairs(list) do out[i] = type(p) == "string" and self:encode(p) or p end
  return out
end

-- ---------------------------------------------------------------- direction

local direction_fields = {
  from = "string", path = "string", pos = "integer", layer = "integer", harmful = "string|table",
  harmless = "string|table", max_layer_frac = "number", max_kl = "number", min_induce = "number", batch = "integer",
  -- Selection on a large model: score only these layers / positions (default all), skip the
  -- layers max_layer_frac drops anyway, and score on the first n_eval prompts of each set.
  layers = "integers", positions = "integers", skip_late_layers = "boolean", n_eval = "integer",
}

local function prompt_set(self, v, default)
  if type(v) == "table" then return v end
  return self:prompts(v or default)
end

function Experiment:_candidates(spec)
  local m, tok = self:model(), self:tokenizer()
  local harmful = ids_of(self, prompt_set(self, spec.harmful, "harmful"))
  local harmless = ids_of(self, prompt_set(self, spec.harmless, "harmless"))
  local n_pos = tok:post_instruction_count(self.model_entry.template)
  self:log("difference-in-means candidates: %d harmful, %d harmless prompts", #harmful, #harmless)
  return m:directions(harmful, harmless, {positions = n_pos, batch = spec.batch or 8}), harmful, harmless, n_pos
end

local function candidate(cands, n_pos, pos, layer, d)
  local v = {}
  for j = 1, d do v[j] = cands:at(n_pos + pos + 1, layer + 1, j) end
  return v
end

Experiment.direction = step("direction", function(self, spec)
  if spec == nil and self._direction then return self._direction end
  spec = spec or self.direction_spec
  if type(spec) == "string" then
    -- A path (--set direction=results/direction/<run>/direction.safetensors) is a saved direction.
    if spec:match("%.safetensors$") then spec = {from = "file", path = spec} else spec = {from = spec} end
  end
  util.check_fields(spec, direction_fields, "direction")
  local from = spec.from or "auto"
  local m = self:model()
  local cfgm = m:config()
  local d = cfgm.d_model
  local dirfile = spec.path or (self.model_entry.path .. "/direction.safetensors")
  if from == "auto" then from = util.exists(dirfile) and "file" or "select" end
  local org_dir = self.organism and self.organism.direction or {}
  local result = {from = from}
  local vec
  if from == "file" then
    if not util.exists(dirfile) then util.fail("direction: no file %s", dirfile) end
    local t, meta = core.load_safetensors(dirfile)
    -- Where the vector was taken: the spec, else the file's own metadata (a run's
    -- direction.safetensors, an organism's), else organism.json, else the target layer.
    local function meta_int(k) return meta and math.tointeger(tonumber(meta[k] or "")) end
    result.path = dirfile
    result.pos = spec.pos or meta_int("pos") or org_dir.pos
    result.layer = spec.layer or meta_int("layer") or org_dir.layer or self.target_layer
    if t.direction and not (spec.pos and t.candidates) then
      vec = t.direction
    elseif t.candidates then
      local shape = t.candidates:shape()
      if not result.pos or not result.layer then util.fail("direction: %s has candidates only; give pos and layer", dirfile) end
      vec = candidate(t.candidates, shape[1], result.pos, result.layer, d)
    else
      util.fail("direction: %s has neither 'direction' nor 'candidates'", dirfile)
    end
  elseif from == "means" or from == "select" then
    local cands, harmful, harmless, n_pos = self:_candidates(spec)
    if from == "select" then
      local eval_harmful, eval_harmless = harmful, harmless
      if spec.n_eval then
        if spec.n_eval < 1 then util.fail("direction: n_eval must be at least 1, got %d", spec.n_eval) end
        eval_harmful = table.move(harmful, 1, math.min(spec.n_eval, #harmful), 1, {})
        eval_harmless = table.move(harmless, 1, math.min(spec.n_eval, #harmless), 1, {})
      end
      self:log("selecting the direction among %d positions x %d layers, on %d harmful and %d harmless prompts",
               n_pos, cfgm.n_layers, #eval_harmful, #eval_harmless)
      local sel = m:select_direction(cands, eval_harmful, eval_harmless, {refusal_ids = self:refusal_ids(),
        max_layer_frac = spec.max_layer_frac, max_kl = spec.max_kl, min_induce = spec.min_induce, batch = spec.batch,
        layers = spec.layers, positions = spec.positions, skip_late_layers = spec.skip_late_layers})
      result.selection = sel
      local n_scored = 0
      for _, sc in ipairs(sel.scores) do n_scored = n_scored + (sc.dropped:find("unscored", 1, true) and 0 or 1) end
      self:log("scored %d of %d candidates, %d kept", n_scored, #sel.scores, sel.n_kept)
      local rows = {}
      for _, s in ipairs(sel.scores) do
        local chosen = sel.best and s.pos == sel.best.pos and s.layer == sel.best.layer or false
        rows[#rows + 1] = csv.record({pos = s.pos, layer = s.layer, bypass = s.bypass, induce = s.induce, kl = s.kl,
          dropped = type(s.dropped) == "string" and s.dropped or "", chosen = chosen}, {"pos", "layer", "bypass", "induce", "kl", "dropped", "chosen"})
      end
      self:table("direction_selection", rows, {title = "Direction selection (Arditi et al.): every candidate", show = 10})
      if sel.best then
        vec, result.pos, result.layer = sel.direction, sel.best.pos, sel.best.layer
      else
        from = "means"
        self:note(("No candidate passed the selection filters (%d kept); the direction falls back to the " ..
          "difference of means at the last position of layer %s."):format(sel.n_kept or 0, tostring(spec.layer or self.target_layer)))
      end
      result.n_pos = n_pos
      self._selection_for_plot = {sel = sel, n_pos = n_pos, n_layers = cfgm.n_layers}
    end
    if not vec then
      result.pos = spec.pos or -1
      result.layer = spec.layer or self.target_layer or cfgm.n_layers // 2
      if result.pos >= 0 or -result.pos > n_pos then util.fail("direction: pos must be in -%d..-1", n_pos) end
      vec = candidate(cands, n_pos, result.pos, result.layer, d)
    end
    result.from = from
  else
    util.fail("direction: from must be auto, file, means or select, got '%s'", from)
  end
  local unit, norm = core.normalize(vec)
  result.vector, result.norm = unit, norm
  -- The unit vector every later step used, so a table can be recomputed without this run.
  core.save_safetensors(self.results_dir .. "/direction.safetensors", {direction = unit},
    {from = result.from, layer = tostring(result.layer), pos = tostring(result.pos), norm = ("%.9g"):format(norm)})
  if not self.target_layer then self.target_layer = result.layer end
  self._manifest.direction = {from = result.from, path = result.path, pos = result.pos, layer = result.layer, norm = norm}
  self._direction = result
  self:log("direction: %s, layer %s, position %s, norm %.4g", result.from, tostring(result.layer), tostring(result.pos), norm)
  return result
end)

-- ---------------------------------------------------------------- attribution

local Attribution = {}
Attribution.__index = Attribution
M.Attribution = Attribution

local attribute_fields = {
  prompt = "string|table", layer = "integer", direction = "table|upstream.Tensor", target = "integer",
  sae = "string|upstream.Sae", score = "string", positions = "string|table", include_bos = "boolean", label = "string",
  score_positions = "string|table",
}

local function direction_vector(dir)
  if type(dir) == "table" and dir.vector then return dir.vector end
  return dir
end

-- A short label per distinct prompt (p1, p2, ... in order of first use, or the one given),
-- listed in the table "prompts" with its text and token count.
function Experiment:_prompt_label(prompt, ids, given)
  local key = type(prompt) == "string" and prompt or table.concat(prompt, ",")
  self._prompt_labels = self._prompt_labels or {n = 0}
  if not self._prompt_labels[key] then
    self._prompt_labels.n = self._prompt_labels.n + 1
    local label = given or ("p" .. self._prompt_labels.n)
    self._prompt_labels[key] = label
    local text = type(prompt) == "string" and prompt or self:tokenizer():decode(prompt)
    self:table("prompts", {csv.record({label = label, text = text, tokens = #ids}, {"label", "text", "tokens"})},
               {title = "Prompts"})
  end
  return self._prompt_labels[key]
end

Experiment.attribute = step("attribute", function(self, spec)
  util.check_fields(spec, attribute_fields, "attribute")
  if not spec.prompt then util.fail("attribute: field 'prompt' is required") end
  local layer = spec.layer or (self.source_layers and self.source_layers[1])
  if not layer then util.fail("attribute: no source layer (declare source_layers or pass layer)") end
  local dir = spec.direction or self:direction()
  local target = spec.target or self.target_layer
  if not target then util.fail("attribute: no target layer") end
  if layer >= target then util.fail("attribute: source layer %d must be below the target layer %d", layer, target) end
  local sae = type(spec.sae) == "string" and self:sae(layer, spec.sae) or spec.sae or self:sae(layer)
  local ids = type(spec.prompt) == "string" and self:encode(spec.prompt) or spec.prompt
  local positions
  if spec.positions == "all" then
    positions = {}
    for t = 0, #ids - 1 do positions[#positions + 1] = t end
  elseif type(spec.positions) == "table" then positions = spec.positions
  elseif spec.positions ~= nil and spec.positions ~= "last" then
    util.fail("attribute: positions must be \"last\", \"all\" or a list, got '%s'", spec.positions)
  end
  -- The tokens S_k averages over: "all" (every token but BOS), "instruction" (the user's text
  -- inside the chat template: what differs between prompts), or a list of token indices.
  local score_positions
  if spec.score_positions == "instruction" then
    score_positions = util.instruction_positions(self:tokenizer(), function(x) return self:encode(x) end, ids)
  elseif type(spec.score_positions) == "table" then score_positions = spec.score_positions
  elseif spec.score_positions ~= nil and spec.score_positions ~= "all" then
    util.fail("attribute: score_positions must be \"all\", \"instruction\" or a list, got '%s'", spec.score_positions)
  end
  local label = self:_prompt_label(spec.prompt, ids, spec.label)
  self:log("attribute %s: layer %d -> target %d", label, layer, target)
  local res = self:model():attribute(ids, sae, {source = layer, target = target, direction = direction_vector(dir),
    score = spec.score or "gradient", include_bos = spec.include_bos or false, positions = positions,
    score_positions = score_positions})
  local tok = self:tokenizer()
  local tokens = {}
  for i, id in ipairs(ids) do tokens[i] = tok:piece(id) or tostring(id) end
  local a = setmetatable({
    experiment = self, prompt = type(spec.prompt) == "string" and spec.prompt or tok:decode(ids), label = label,
    ids = ids, tokens = tokens, layer = layer, target = target, R = res.R, scores = res.scores, rg = res.rg,
    include = res.include, sae = sae, sae_name = (self._sae_names or {})[sae] or (type(spec.sae) == "string" and spec.sae) or "",
    direction = dir, score_kind = spec.score or "gradient",
    grad = res.grad, objective_positions = positions, -- the gradient and its objective's positions (nil: last), for steer
  }, Attribution)
  return a
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

local ranking_cols = {"prompt", "layer", "target", "side", "rank", "latent", "name", "score", "sum_rg"}
local ranking_url_cols = {"prompt", "layer", "target", "side", "rank", "latent", "name", "score", "sum_rg", "url"}
function Attribution:ranking(k)
  local rows = {}
  for _, side in ipairs({"top", "bottom"}) do
    for _, r in ipairs(ranked(self, k, side)) do
      -- url only for an SAE with a neuronpedia_id, so other tables keep their columns.
      rows[#rows + 1] = csv.record({prompt = self.label, layer = self.layer, target = self.target, side = side,
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

-- ---------------------------------------------------------------- steering

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
  local rng = organism_lib.rng(seed * 1000003 + layer)
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
  local stop_after = tonumber(os.getenv("UPSTREAM_STOP_AFTER_CELLS") or "")
  local progress = not self.quiet
  if stop_after then
    -- A test hook: stop once this many cells were computed, as a killed run would.
    progress = function(p)
      if not self.quiet and p.line then io.stderr:write(p.line, "\n") end
      if p.computed >= stop_after then return "stop" end
    end
  end
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
      batch = spec.batch or 16, progress = progress,
    }
    local got, msg = grid:run()
    if not got then
      error(("steering interrupted (%s); finished cells are cached in %s, rerun to resume"):format(
        tostring(msg), self.settings.cache .. "/grid"), 0)
    end
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

function Steering:rows()
  local out = {}
  local X = self.experiment
  -- url (after name) only for an SAE with a neuronpedia_id, so other tables keep their columns.
  local has_url = X:latent_url(self.layer, 0, self.sae_name) ~= nil
  for _, r in ipairs(self.grid_rows) do
    local kind = r.intervention == 1 and "baseline" or (self.is_control[r.latent] and "control" or "latent")
    out[#out + 1] = csv.record({prompt = self.prompt_labels[r.prompt], layer = self.layer, kind = kind, latent = r.latent,
      name = r.latent and X:label(self.layer, r.latent, self.sae_name) or "", where = r.where, alpha = r.alpha,
      url = has_url and (r.latent and X:latent_url(self.layer, r.latent, self.sae_name) or "") or nil,
      max_new_tokens = r.max_new_tokens, score = r.score, dscore = r.dscore, p_refusal = r.p_refusal, R = r.R, dR = r.dR,
      predicted_dR = r.predicted_dR, refused = r.refused, text = r.text}, has_url and steer_url_cols or steer_cols)
  end
  return out
end

-- The grid keeps alphas in float32; a Lua double from spec.alphas finds its cells only after
-- the same rounding.
local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

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

-- ---------------------------------------------------------------- tables, figures, notes

local table_opts = {columns = "strings", title = "string", show = "integer"}

Experiment.table = step("table", function(self, name, rows, opts)
  if type(name) ~= "string" or not name:match("^[%w_.-]+$") then
    util.fail("table: name must be letters, digits, '_', '-' or '.', got %s", tostring(name))
  end
  if type(rows) ~= "table" then util.fail("table: rows must be a list of records") end
  opts = util.check_fields(opts or {}, table_opts, "table")
  local t = self._tables[name]
  if not t then
    t = {name = name, rows = {}, title = opts.title, show = opts.show or 20}
    self._tables[name] = t
    self._table_order[#self._table_order + 1] = name
    self._report:add{kind = "table", name = name}
  end
  if opts.columns then t.columns = opts.columns end
  for _, r in ipairs(rows) do t.rows[#t.rows + 1] = r end
  t.columns = t.columns or nil
  local cols = t.columns or csv.columns(t.rows)
  t.current_columns = cols
  return util.write_atomic(self.results_dir .. "/" .. name .. ".csv", csv.encode(t.rows, cols))
end)

function Experiment:_figure(kind, spec)
  local fn = core.plot[kind]
  if not fn or kind == "info" then util.fail("figure: unknown kind '%s'", tostring(kind)) end
  if type(spec) ~= "table" or type(spec.name) ~= "string" or not spec.name:match("^[%w_.-]+$") then
    util.fail("figure: spec.name (letters, digits, '_', '-', '.') is required")
  end
  local name = spec.name
  local taken = {}
  for _, f in ipairs(self._figures) do taken[f] = true end
  local n = 1
  while taken[name] do n = n + 1; name = ("%s-%d"):format(spec.name, n) end
  local caption = spec.caption
  local args = {}
  for k, v in pairs(spec) do if k ~= "name" and k ~= "caption" then args[k] = v end end
  args.path = self.plots_dir .. "/" .. name .. ".png"
  self._figures[#self._figures + 1] = name
  local meta = {manifest = self:manifest_json(), experiment = self.name, run_id = self.run_id, figure = name}
  if args.meta then for k, v in pairs(args.meta) do meta[k] = v end end
  args.meta = meta
  fn(args)
  self._report:add{kind = "figure", name = name, path = args.path, caption = caption or spec.title}
  return args.path
end

Experiment.figure = step("figure", Experiment._figure)

function Experiment:section(title) self._report:add{kind = "section", text = title} end
function Experiment:note(text) self._report:add{kind = "note", text = text} end

require("upstream.figures").install(Experiment, step)

function Experiment:finish()
  util.guarded(function()
    local m = self._manifest
    m.status = "complete"
    m.finished = os.date("!%Y-%m-%dT%H:%M:%SZ")
    m.seconds = wall() - self.started_wall
    self:_write_manifest()
    local text = self._report:render(self)
    util.write_atomic(self.results_dir .. "/report.md", text)
    for _, obj in pairs(self._saes) do release(obj) end
    release(self._tok)
    release(self._model)
    self:log("done: %s", self.results_dir)
  end)
  return self.results_dir
end

return M
