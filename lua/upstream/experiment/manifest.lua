-- upstream.experiment.manifest: the run's record. The manifest (manifest.json: what ran, on
-- which files and digests, with which settings, how far it got) is rewritten atomically after
-- every step, so a dead run says where it stopped; X:log writes progress lines to stderr, and
-- X:progress a long step's bar (upstream.progress; both silent under --quiet); and
-- step(name, fn) wraps a method so that it is logged, timed, re-raises errors with the
-- experiment's file:line and rewrites the manifest afterwards (every other module's steps use it).
local core = require "upstream.core"
local util = require "upstream.util"
local config = require "upstream.config"
local progress = require "upstream.progress"
local class = require "upstream.experiment.class"
local Experiment = class.Experiment

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

-- A file's or directory's SHA-256 for the manifest (memoised in the cache's filehash). Only
-- rank 0 writes manifests, so the other ranks of a job skip the hashing (nil).
function Experiment:_digest(path)
  if core.dist.rank ~= 0 then return nil end
  return core.hash_path(path, self.memo)
end

function Experiment:_base_manifest(opts)
  local exp_text = util.read_file(self.file)
  local entry = self.model_entry
  local tok_path = entry.tokenizer
  if util.exists(tok_path .. "/tokenizer.json") then tok_path = tok_path .. "/tokenizer.json" end
  local cfg_json = self:_model_config()
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
    model = {name = entry.name, path = entry.path, sha256 = self:_digest(entry.path), config = cfg_json},
    tokenizer = {path = tok_path, sha256 = util.exists(tok_path) and self:_digest(tok_path) or nil,
                 template = entry.template},
    organism = self.organism,
    saes = {},
    git = git_info(core.source_dir),
    versions = core.versions(),
    threads = core.threads(),
    -- the processes of the job: threads is per rank (upstream.dist; one rank without mpirun)
    ranks = {n = core.dist.size, hosts = core.dist.hosts, threads_per_rank = core.threads()},
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

-- Runs whose manifest says "running": what fail_open marks "failed" when an error ends the
-- script (lua_host.c calls it for an error nothing caught). Weak, so a dropped run goes.
local open_runs = setmetatable({}, {__mode = "k"})

function Experiment:_write_manifest()
  local m = self._manifest
  open_runs[self] = m.status == "running" or nil
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
  progress.clear() -- a bar drawn on the terminal gives way; it is redrawn at its next update
  io.stderr:write(("[%s %6.1fs] %s\n"):format(self.name, util.clock() - self.started_wall, msg))
  io.stderr:flush()
end

-- A progress bar on stderr for a long part of a step (upstream.progress.new; opts.unit names
-- what is counted); silent under --quiet.
function Experiment:progress(label, total, opts)
  local o = {quiet = self.quiet}
  for k, v in pairs(opts or {}) do o[k] = v end
  return progress.new(label, total, o)
end

-- Milliseconds since t0 (util.clock), a whole number: the manifest's timings read 87, where
-- seconds would print as the JSON encoder's 17 digits (0.086999999999999994).
local function elapsed_ms(t0) return math.floor((util.clock() - t0) * 1000 + 0.5) end

-- Runs a step: logs it, times it, re-raises errors with the experiment's file:line, and
-- rewrites the manifest afterwards.
local function step(name, fn)
  return function(self, ...)
    local t0 = util.clock()
    local res = table.pack(util.guarded(fn, self, ...))
    self._timings[#self._timings + 1] = {step = name, ms = elapsed_ms(t0)}
    self:_write_manifest()
    return table.unpack(res, 1, res.n)
  end
end

-- Marks every open run "failed" with the message (its first paragraph: no Lua stack) and
-- the time, and rewrites its manifest; a run whose manifest cannot be written is skipped.
local function fail_open(message)
  local text = tostring(message):gsub("\nstack traceback:.*$", "")
  for X in pairs(open_runs) do
    X._manifest.status, X._manifest.error = "failed", text
    X._manifest.finished = os.date("!%Y-%m-%dT%H:%M:%SZ")
    pcall(X._write_manifest, X)
  end
end

return {step = step, elapsed_ms = elapsed_ms, fail_open = fail_open}
