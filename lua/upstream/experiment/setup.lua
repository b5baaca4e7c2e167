-- upstream.experiment.setup: upstream.experiment{...} (M.new). It checks the declaration,
-- merges its fields and params with the settings' experiments.<name> and --set (in that order
-- of precedence, each value still of its declared type), resolves the model entry, its
-- organism.json, SAE, layers and thread count, and claims the run's results and plots
-- directories (mkdir, so two runs never share one). --set NAME=FILE (or prompts.NAME=FILE), or
-- the settings' experiments.<name>.NAME = "FILE", on a declared prompt set replaces it with the
-- file's prompts, read here, before any model loads or directory is made (resources.lua,
-- prompt_file). Misuse raises with the experiment's file:line (upstream.util.fail); a bad
-- override names where the value came from.
local core = require "upstream.core"
local util = require "upstream.util"
local config = require "upstream.config"
local report = require "upstream.report"
local class = require "upstream.experiment.class"
require "upstream.experiment.resources" -- M.prompt_file
local M, Experiment = class.M, class.Experiment

local decl_fields = {
  name = "string", title = "string", description = "string", model = "string", sae = "string",
  source_layers = "integers|integer", target_layer = "integer", direction = "string|table",
  prompts = "table", params = "table", seed = "integer", refusal = "table",
}
-- Fields --set and the settings' experiments.<name> may override (the rest describe the study).
local overridable = {model = true, sae = true, source_layers = true, target_layer = true, direction = true, seed = true}

local is_setting = {}
for _, k in ipairs(config.setting_keys()) do is_setting[k] = true end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return core.cwd() .. "/" .. path
end

-- --set KEY=VALUE pairs split into the experiment's own (fields, params, prompt files) and
-- settings. A key both a param and a prompt set is the param; prompts.NAME names the set.
local function split_sets(decl, sets)
  local mine, settings = {}, {}
  for _, kv in ipairs(sets or {}) do
    local key, value = kv:match("^([^=]+)=(.*)$")
    if not key then error(("--set %s: takes KEY=VALUE, and the key is empty"):format(kv), 0) end
    local pkey = key:match("^params%.(.+)$")
    local set = key:match("^prompts%.(.+)$")
    if set and not (decl.prompts and decl.prompts[set] ~= nil) then
      local names = util.sorted_keys(decl.prompts or {})
      error(("--set %s: the experiment declares no prompt set '%s' (%s)"):format(key, set,
        #names > 0 and table.concat(names, ", ") or "it declares none"), 0)
    end
    if overridable[key] then mine[#mine + 1] = {field = key, value = value}
    elseif pkey or (decl.params and decl.params[key] ~= nil) then mine[#mine + 1] = {param = pkey or key, value = value}
    elseif set or (decl.prompts and decl.prompts[key] ~= nil) then
      mine[#mine + 1] = {prompts = set or key, key = key, value = value}
    elseif decl_fields[key] then error(("--set %s: the experiment's %s cannot be overridden"):format(key, key), 0)
    elseif not key:find(".", 1, true) and not is_setting[key] then
      -- Neither this experiment's nor a setting: suggest from everything --set can name here.
      local names = util.sorted_keys(overridable)
      for _, t in ipairs({decl.params or {}, decl.prompts or {}}) do
        for _, k in ipairs(util.sorted_keys(t)) do names[#names + 1] = k end
      end
      for _, k in ipairs(config.setting_keys()) do names[#names + 1] = k end
      local params = util.sorted_keys(decl.params or {})
      error(("--set %s: not a param, field or prompt set of experiment '%s', nor a setting%s; its params: %s"):format(
        key, decl.name, util.suggest(key, names), #params > 0 and table.concat(params, ", ") or "none"), 0)
    else settings[#settings + 1] = {key = key, value = value} end
  end
  return mine, settings
end

local function show(v)
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for i = 1, #v do parts[i] = tostring(v[i]) end
  return table.concat(parts, ",")
end

-- A param's value must have the type of its declared default: an integer for an integer, a
-- number for a number, a boolean for a boolean, a list of numbers for a list of numbers
-- (integers or not: alphas = {-4, 0, 4} takes 0.5; one number makes a one-element list), a
-- list of strings for one (entries made strings). Returns the value so coerced, and what it
-- must be when it does not fit (nil when it does, or when the param has no default).
local function fit_param(v, default)
  if default == nil then return v end
  local dt = math.type(default) or type(default)
  if dt == "integer" and math.type(v) ~= "integer" then return v, "an integer"
  elseif dt == "float" and type(v) ~= "number" then return v, "a number"
  elseif dt == "boolean" and type(v) ~= "boolean" then return v, "true or false"
  elseif dt == "table" and #default > 0 then
    local kind = type(default[1])
    for _, x in ipairs(default) do if type(x) ~= kind then kind = nil end end
    if kind and type(v) ~= "table" then v = {v} end
    for i, x in ipairs((kind == "number" or kind == "string") and v or {}) do
      if kind == "number" and type(x) ~= "number" then
        return v, ("a list of numbers (entry %d, '%s', is not one)"):format(i, tostring(x))
      elseif kind == "string" then v[i] = tostring(x) end
    end
  end
  return v
end

-- A param given by --set (text): parsed, then fitted to its default; raises naming the key,
-- the text and the default.
local function checked_param(key, text, default)
  local v, want = fit_param(util.parse_value(text, default), default)
  if want then error(("--set %s=%s: must be %s, like the default %s"):format(key, text, want, show(default)), 0) end
  return v
end

-- A model directory's organism.json (written by `upstream organism build`), with the types of
-- the fields the experiment reads checked, so a file edited by hand fails with a message naming
-- it and the field (found by tests/fuzz/fuzz_organism_json).
local function read_organism(path)
  local org = core.json_read(path)
  local function bad(key, want) error(("%s: %s must be %s"):format(path, key, want), 0) end
  if type(org) ~= "table" then bad("the file", "a JSON object") end
  for _, k in ipairs({"source_layer", "target_layer"}) do
    if org[k] ~= nil and math.type(org[k]) ~= "integer" then bad(k, "an integer") end
  end
  if org.sae_layers ~= nil and not util.type_checks.integers(org.sae_layers) then bad("sae_layers", "a list of integers") end
  if org.sae ~= nil then
    if type(org.sae) ~= "table" then bad("sae", 'an object {"LAYER": "path"}') end
    for l, rel in pairs(org.sae) do
      if type(rel) ~= "string" then bad("sae." .. tostring(l), "a path (a string)") end
    end
  end
  if org.labels ~= nil and type(org.labels) ~= "table" then bad("labels", 'an object {"LAYER": {...}}') end
  return org
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
  self.started_wall = util.clock()
  self.quiet = opts.quiet or core.dist.rank ~= 0 -- one rank speaks for a job of several
  self._report = report.new(decl.title or decl.name, decl.description)
  self._tables, self._table_order = {}, {}
  self._figures = {}
  self._timings = {}
  self._grids = {}
  self._saes, self._sae_files = {}, {}
  self._labels = {}

  local mine, settings_sets = split_sets(decl, opts.sets)
  -- Prompt files first: a missing or bad one fails before anything is loaded or created.
  self._prompt_files = {}
  for _, s in ipairs(mine) do
    if s.prompts then
      local where = ("--set %s=%s"):format(s.key, s.value)
      self._prompt_files[s.prompts] = M.prompt_file(where, s.value, core.cwd())
    end
  end
  -- Declared sets that name a file, read now for the same reason (relative to the experiment).
  self._declared_files = {}
  for _, set in ipairs(util.sorted_keys(decl.prompts or {})) do
    local p = decl.prompts[set]
    if type(p) == "string" and not self._prompt_files[set] then
      local ok, f = pcall(M.prompt_file, "prompts." .. set, p, util.dirname(self.file))
      if not ok then util.fail("experiment: %s", f) end
      self._declared_files[set] = f
    end
  end
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
    elseif decl.prompts and decl.prompts[k] ~= nil and not (decl.params and decl.params[k] ~= nil)
      and type(section[k]) == "string" then
      if not self._prompt_files[k] then -- a --set of the same set wins
        local line = cfg.lines and cfg.lines[("experiments.%s.%s"):format(decl.name, k)]
        self._prompt_files[k] = M.prompt_file(("%s:%s: experiments.%s.%s"):format(cfg.file or "settings",
          tostring(line or "?"), decl.name, k), section[k], absolute(util.dirname(cfg.file or ".")))
      end
    else
      -- checked like a --set value, naming the settings file's line
      local v, want = fit_param(type(section[k]) == "table" and util.copy(section[k]) or section[k], params[k])
      if want then
        local line = cfg.lines and cfg.lines[("experiments.%s.%s"):format(decl.name, k)]
        error(("%s:%s: experiments.%s.%s: must be %s, like the default %s"):format(cfg.file or "settings",
          tostring(line or "?"), decl.name, k, want, show(params[k])), 0)
      end
      params[k] = v
    end
  end
  self.overrides = {}
  for _, s in ipairs(mine) do
    if s.field then fields[s.field] = util.parse_value(s.value, fields[s.field])
    elseif s.param then params[s.param] = checked_param(s.param, s.value, params[s.param]) end
    self.overrides[#self.overrides + 1] = (s.field or s.param or s.prompts) .. "=" .. s.value
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
  self:_model_config() -- a malformed config.json fails here, before anything is made
  self.model_name = entry.name
  local org_path = entry.path .. "/organism.json"
  if util.exists(org_path) then self.organism = util.guarded(read_organism, org_path) end
  local org = self.organism or {}
  local dflt = entry.defaults

  self.source_layers = as_list(fields.source_layers) or dflt.source_layers or as_list(org.sae_layers)
    or as_list(org.source_layer)
  self.target_layer = fields.target_layer or dflt.target_layer or org.target_layer
  if self.target_layer then self:_check_layer(self.target_layer, "target_layer") end
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
    local mc = self:_model_config()
    if type(mc) == "table" and (mc.hidden_size or 0) > 0 and mc.hidden_size <= 256 then cfg.threads = 1 end
  end
  self.seed = fields.seed or 0
  if cfg.threads and cfg.threads > 0 then core.set_threads(cfg.threads) end

  -- Claim the run directories: mkdir fails when the name is taken, so two runs never share one.
  -- Under several ranks (upstream.dist) rank 0 alone claims them and writes there; the others
  -- learn the run id from it, and fail with it when the claim fails.
  local results_base = absolute(cfg.results) .. "/" .. decl.name
  local plots_base = absolute(cfg.plots) .. "/" .. decl.name
  local function claim_run()
    -- A directory that cannot be made (a file in the way, no permission) fails here, naming
    -- the setting, before anything is loaded or written.
    local function claim_base(key, d)
      local mk, err = core.mkdirs(d)
      if not mk then error(("cannot create the %s directory: %s (the setting '%s' must name a directory you can write)"):format(key, err, key), 0) end
    end
    claim_base("results", results_base)
    claim_base("plots", plots_base)
    claim_base("cache", cfg.cache)
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
    return id
  end
  local id
  if core.dist.size == 1 then
    id = claim_run()
  else
    -- Every rank has passed its checks (settings, model entry, config.json) before anything is
    -- made: a rank that failed has ended the job naming itself, and no run directory is left.
    core.dist_agree(true)
    local ok, got = true, nil
    if core.dist.rank == 0 then ok, got = pcall(claim_run) end
    local all_ok, why = core.dist_agree(ok, not ok and tostring(got) or nil)
    if not all_ok then error(why, 0) end
    id = core.dist_share(core.dist.rank == 0 and got or nil)
  end
  self.run_id = id
  self.results_dir = results_base .. "/" .. id
  self.plots_dir = plots_base .. "/" .. id
  self.memo = cfg.cache .. "/filehash"

  self._manifest = self:_base_manifest(opts)
  -- The prompt files given in place of declared sets: path, sha256, count, and (once used) read.
  if next(self._prompt_files) then
    self._manifest.prompt_files = {}
    for set, f in pairs(self._prompt_files) do
      self._manifest.prompt_files[set] = {path = f.path, sha256 = f.sha256, n = f.n, read = false}
    end
  end
  self:_write_manifest()
  self:log("run %s: model %s, results in %s", id, entry.name, self.results_dir)
  return self
end

return {}
