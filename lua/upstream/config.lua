-- upstream.config: the settings an experiment runs under — upstream.cfg (found by
-- core/settings' search order through the upstream.settings binding), checked against the
-- schema below with file:line errors, merged over built-in defaults that point at the model
-- organism, with --set overrides applied; plus the registry look-ups (models, SAEs).
--
--   local cfg = config.load{path = FILE|nil, sets = {{key, value}, ...}}
--   cfg.threads, cfg.cache, cfg.results, cfg.plots (absolute or as given), cfg.model (name),
--   cfg.models[name], cfg.saes[name], cfg.experiments[name], cfg.file (or nil)
--   config.model(cfg, name_or_dir)      -> entry {name, path, tokenizer, template, refusal_tokens,
--                                          refusal_ids, defaults}
--   config.sae_path(cfg, name, layer)   -> path, entry
--   config.sae_fill(cfg, name, layer, key) -> the entry's pattern `key` (path, neuronpedia_id)
--                                          with {layer}, {width}, {l0} filled in
--   config.public(cfg)                  -> a copy fit for the manifest
--
-- Paths: values from the file are relative to the file's directory, --set ones relative to the
-- working directory. "~/" is $HOME. Built-in defaults: the organism in the source tree; results
-- and plots under the directory of a settings file named by --config or $UPSTREAM_CONFIG, else
-- under the working directory; the cache in ~/.cache/upstream.
-- Error rule: everything raises; a bad file says "file:line: key: message", a bad --set says
-- "--set key: message".
local core = require "upstream.core"
local util = require "upstream.util"
local M = {}

local model_fields = {
  path = "string", tokenizer = "string", template = "string", refusal_tokens = "strings",
  refusal_ids = "integers", defaults = {source_layers = "integers", target_layer = "integer", sae = "string"},
}
local sae_fields = {
  path = "string", format = "string", hook = "string", model = "string", width = "string",
  l0 = "integers", layers = "integers", labels = "table",
  -- Latent names when labels have none: a Neuronpedia explanations export (JSON) and its
  -- source id pattern, and a local text file for top-activating tokens (experiment/labels.lua).
  neuronpedia = "string", neuronpedia_id = "string", label_text = "string",
}
local schema = {
  threads = "integer", cache = "string", results = "string", plots = "string", model = "string",
  models = {["*"] = model_fields}, saes = {["*"] = sae_fields}, experiments = {["*"] = "table"},
}
-- The top-level keys, for "did you mean" over everything --set can name.
function M.setting_keys()
  local keys = {}
  for k in pairs(schema) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local path_keys = {cache = true, results = true, plots = true, path = true, tokenizer = true, neuronpedia = true,
                   label_text = true}

-- root: the source tree (the organism ships in it); out: where results and plots go by default.
local function builtin(root, out)
  return {
    threads = 0,
    cache = (os.getenv("HOME") or root) .. "/.cache/upstream",
    results = out .. "/results",
    plots = out .. "/plots",
    model = "organism",
    models = {organism = {path = root .. "/models/organism", template = "gemma"}},
    saes = {organism = {path = root .. "/models/organism/sae/layer_{layer}/params.npz", format = "gemmascope",
                        hook = "blocks.{layer}.hook_resid_post", model = "organism"}},
    experiments = {},
  }
end

-- Checks tree against sch; where(path, message) raises the message for a dotted path.
local function validate(tree, sch, prefix, where)
  for _, k in ipairs(util.sorted_keys(tree)) do
    local v = tree[k]
    local path = prefix == "" and k or (prefix .. "." .. k)
    local spec = sch[k] or sch["*"]
    if k ~= "_file" and k ~= "_dir" then
      if not spec then
        local names = {}
        for n in pairs(sch) do if n ~= "*" then names[#names + 1] = n end end
        table.sort(names)
        where(path, "unknown setting" .. util.suggest(k, names))
      elseif type(spec) == "table" then
        -- A list ([...] or (...)) is a table too, keyed 1..n (found by tests/fuzz/fuzz_settings).
        if type(v) ~= "table" or #v > 0 then where(path, "must be a group { ... }") end
        validate(v, spec, path, where)
      elseif not util.type_checks[spec](v) then
        where(path, ("must be %s, got %s"):format(spec, type(v)))
      end
    end
  end
end

-- Resolves relative paths in place; from_file[dotted] says the value came from the file.
local function resolve_paths(tree, prefix, base, cli)
  for k, v in pairs(tree) do
    local path = prefix == "" and k or (prefix .. "." .. k)
    if type(v) == "table" then resolve_paths(v, path, base, cli)
    elseif type(v) == "string" and path_keys[k] and not (prefix:match("^experiments")) then
      tree[k] = util.expand(v, cli[path] and core.cwd() or base)
    end
  end
end

local function merge(into, from)
  for k, v in pairs(from) do
    if type(v) == "table" and type(into[k]) == "table" and #v == 0 and next(v) ~= nil then merge(into[k], v)
    else into[k] = v end
  end
  return into
end

-- opts.path: explicit settings file; opts.sets: {{key = "a.b", value = "text"}, ...} that are
-- settings (the experiment has taken its own keys already).
function M.load(opts)
  opts = opts or {}
  local root = core.source_dir
  local ok, tree, lines = pcall(core.settings, opts.path)
  if not ok then error(tree, 0) end
  local file = tree._file
  local function where(path, msg)
    local loc = (lines[path] and file) and (file .. ":" .. lines[path]) or file or "settings"
    error(("%s: %s: %s"):format(loc, path, msg), 0)
  end
  tree._file, tree._dir = nil, nil
  validate(tree, schema, "", where)
  local cwd = core.cwd()
  local base = file and util.dirname(file) or root
  if base:sub(1, 1) ~= "/" then base = cwd .. "/" .. base end
  -- Outputs go where the user is: next to a settings file they named (--config,
  -- $UPSTREAM_CONFIG), else the working directory (also for ./upstream.cfg and the one in
  -- ~/.config, which is shared by every project of the user).
  local named = file and (opts.path or os.getenv("UPSTREAM_CONFIG"))
  local out = named and base or cwd
  local cli = {}
  for _, s in ipairs(opts.sets or {}) do
    local node, parts = tree, {}
    for part in s.key:gmatch("[^.]+") do parts[#parts + 1] = part end
    if #parts == 0 then error(("--set %s: the key names no setting"):format(s.key), 0) end -- found by fuzz_set_value
    for i = 1, #parts - 1 do
      node[parts[i]] = node[parts[i]] or {}
      node = node[parts[i]]
      if type(node) ~= "table" then error(("--set %s: %s is not a group"):format(s.key, parts[i]), 0) end
    end
    node[parts[#parts]] = util.parse_value(s.value, node[parts[#parts]])
    cli[s.key] = true
  end
  validate(tree, schema, "", function(path, msg)
    if cli[path] then error(("--set %s: %s"):format(path, msg), 0) end
    where(path, msg)
  end)
  -- A chat template is a row of core/text/chat.c: a misspelt name fails here, at its line,
  -- not when the first prompt is encoded.
  for _, name in ipairs(util.sorted_keys(tree.models or {})) do
    local t = tree.models[name].template
    if t and not core.chat_template_known(t) then
      local key, known = "models." .. name .. ".template", core.chat_templates()
      local msg = ("unknown chat template '%s'%s; known: %s"):format(t, util.suggest(t, known), table.concat(known, ", "))
      if cli[key] then error(("--set %s: %s"):format(key, msg), 0) end
      where(key, msg)
    end
  end
  resolve_paths(tree, "", base, cli)
  local cfg = merge(builtin(root, out), tree)
  cfg.file = file
  cfg.lines = lines
  return cfg
end

function M.model(cfg, name)
  local entry = cfg.models[name]
  if entry then
    entry = util.copy(entry)
    entry.name = name
  elseif util.exists(name .. "/config.json") then
    entry = {name = util.basename(name), path = name}
  else
    local names = util.sorted_keys(cfg.models)
    error(("model '%s' is neither in the settings' registry (%s) nor a checkpoint directory"):format(
      name, table.concat(names, ", ")), 0)
  end
  if not entry.path then error(("models.%s: no path"):format(name), 0) end
  if not util.exists(entry.path .. "/config.json") then
    local hint = name == "organism" and " (the model organism is not built yet: see README, or pass --model)" or ""
    error(("model '%s': no checkpoint at %s (no config.json there)%s"):format(name, entry.path, hint), 0)
  end
  entry.tokenizer = entry.tokenizer or entry.path
  entry.template = entry.template or "gemma"
  entry.defaults = entry.defaults or {}
  return entry
end

-- The registry entry of an SAE, and its file for a layer (patterns {layer}, {width}, {l0}).
function M.sae_path(cfg, name, layer)
  local entry = cfg.saes[name]
  if not entry then
    error(("SAE '%s' is not in the settings' registry (%s)"):format(name, table.concat(util.sorted_keys(cfg.saes), ", ")), 0)
  end
  if entry.layers then
    local found = false
    for _, l in ipairs(entry.layers) do found = found or l == layer end
    if not found then error(("SAE '%s' has no layer %d"):format(name, layer), 0) end
  end
  -- files: a per-layer map registered from a model directory's organism.json (not a setting).
  if entry.files and entry.files[tostring(layer)] then return entry.files[tostring(layer)], entry end
  return M.sae_fill(cfg, name, layer, "path"), entry
end

function M.sae_fill(cfg, name, layer, key)
  local entry = cfg.saes[name]
  if not entry then
    error(("SAE '%s' is not in the settings' registry (%s)"):format(name, table.concat(util.sorted_keys(cfg.saes), ", ")), 0)
  end
  if not entry[key] then return nil end
  local l0 = entry.l0 and entry.l0[layer + 1]
  return (entry[key]:gsub("{(%w+)}", function(k)
    if k == "layer" then return tostring(layer)
    elseif k == "width" and entry.width then return entry.width
    elseif k == "l0" and l0 then return tostring(l0) end
    error(("SAE '%s': %s needs {%s}, which the entry does not give for layer %d"):format(name, key, k, layer), 0)
  end))
end

function M.public(cfg)
  local c = util.copy(cfg)
  c.lines = nil
  return c
end

return M
