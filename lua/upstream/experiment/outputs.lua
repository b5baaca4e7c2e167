-- upstream.experiment.outputs: what a run leaves behind. X:table (a CSV per name, rewritten
-- atomically after each call), X:figure and the ready-made figures (upstream.figures), notes
-- and sections of the report, and X:finish (the manifest marked complete, report.md written,
-- what the run loaded released).
local core = require "upstream.core"
local util = require "upstream.util"
local csv = require "upstream.csv"
local manifest = require "upstream.experiment.manifest"
local step = manifest.step
local release = require("upstream.experiment.resources").release
local class = require "upstream.experiment.class"
local Experiment = class.Experiment

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
  if core.dist.rank == 0 then fn(args) end -- one writer in a job of several ranks
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
    m.ms = manifest.elapsed_ms(self.started_wall)
    self:_write_manifest()
    if core.dist.rank == 0 then -- the writer; the other ranks of a job hashed nothing to report
      util.write_atomic(self.results_dir .. "/report.md", self._report:render(self))
    end
    for _, obj in pairs(self._saes) do release(obj) end
    release(self._tok)
    release(self._model)
    self:log("done: %s", self.results_dir)
  end)
  return self.results_dir
end

return {}
