-- upstream.report: report.md of a run — sections, notes, tables and figures in the order the
-- experiment produced them, with the run's identity at the top.
--
--   local r = report.new(title, description)
--   r:add{kind = "section" | "note" | "table" | "figure", text =, name =, path =, caption =}
--   r:render(X) -> markdown text  (X: the Experiment, for its tables, directories, manifest)
--
-- Tables show their first `show` rows (the CSV has them all), numbers at four significant
-- digits (the CSV keeps %.9g); figures are embedded by a path relative to the results
-- directory, so the report renders from results/<exp>/<run>/.
-- Error rule: misuse raises.
local csv = require "upstream.csv"
local M = {}
local Report = {}
Report.__index = Report

function M.new(title, description)
  return setmetatable({title = title, description = description, items = {}}, Report)
end

function Report:add(item) self.items[#self.items + 1] = item end

-- Path of `to` relative to directory `from` (both absolute).
local function relative(from, to)
  local a, b = {}, {}
  for p in from:gmatch("[^/]+") do a[#a + 1] = p end
  for p in to:gmatch("[^/]+") do b[#b + 1] = p end
  local i = 1
  while i <= #a and i < #b and a[i] == b[i] do i = i + 1 end
  local out = {}
  for _ = i, #a do out[#out + 1] = ".." end
  for j = i, #b do out[#out + 1] = b[j] end
  return table.concat(out, "/")
end
M.relative = relative

-- A number as a reader wants it: four significant digits (0.04228, 1.25e-05); a float holding
-- a whole number below 1e9 whole, as the CSV writes it (an alpha of 20, not 20.00). The CSV
-- keeps the full %.9g.
local function readable(v)
  if math.type(v) ~= "float" or v ~= v or v == math.huge or v == -math.huge then return csv.format(v) end
  if v == math.floor(v) and math.abs(v) < 1e9 then return csv.format(v) end
  return ("%.4g"):format(v)
end
M.readable = readable

local function cell(v)
  local s = readable(v):gsub("|", "\\|"):gsub("\n", " ")
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return s
end

local function md_table(t)
  local cols = t.current_columns or csv.columns(t.rows)
  local out = {"| " .. table.concat(cols, " | ") .. " |"}
  local sep = {}
  for i, c in ipairs(cols) do
    local v = t.rows[1] and t.rows[1][c]
    sep[i] = type(v) == "number" and "---:" or "---"
  end
  out[#out + 1] = "|" .. table.concat(sep, "|") .. "|"
  for i = 1, math.min(#t.rows, t.show) do
    local cells = {}
    for j, c in ipairs(cols) do cells[j] = cell(t.rows[i][c]) end
    out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
  end
  return table.concat(out, "\n")
end

function Report:render(X)
  local m = X._manifest
  local out = {"# " .. self.title, ""}
  if self.description then out[#out + 1] = self.description; out[#out + 1] = "" end
  local sae = {}
  for _, s in ipairs(m.saes) do sae[#sae + 1] = ("%s (layer %d, %d latents)"):format(s.name, s.layer, s.d_sae) end
  local dir = m.direction
  out[#out + 1] = ("- **Run** `%s` of `%s` (experiment file sha256 `%s`), %s → %s"):format(
    m.run_id, m.experiment.name, (m.experiment.sha256 or "?"):sub(1, 12), m.started, m.finished or "unfinished")
  out[#out + 1] = ("- **Model** %s (`%s`, sha256 `%s`)"):format(m.model.name, m.model.path, m.model.sha256:sub(1, 12))
  if #sae > 0 then out[#out + 1] = "- **SAE** " .. table.concat(sae, ", ") end
  if dir then
    out[#out + 1] = ("- **Direction** %s, layer %s, position %s; objective at layer %s"):format(
      dir.from, tostring(dir.layer), tostring(dir.pos), tostring(X.target_layer))
  end
  out[#out + 1] = ("- **Code** git %s%s, %d threads, seed %d; settings `%s`"):format(
    m.git.revision:sub(1, 12), m.git.dirty and " (modified)" or "", m.threads, m.seed, X.settings.file or "built-in")
  if #m.overrides > 0 then out[#out + 1] = "- **Overrides** `" .. table.concat(m.overrides, "`, `") .. "`" end
  out[#out + 1] = "- Full record: [manifest.json](manifest.json)"
  out[#out + 1] = ""
  for _, it in ipairs(self.items) do
    if it.kind == "section" then
      out[#out + 1] = "## " .. it.text
    elseif it.kind == "note" then
      out[#out + 1] = it.text
    elseif it.kind == "table" then
      local t = X._tables[it.name]
      out[#out + 1] = ("**%s** — [%s.csv](%s.csv), %d rows%s"):format(t.title or it.name, it.name, it.name, #t.rows,
        #t.rows > t.show and (", first " .. t.show .. " shown") or "")
      out[#out + 1] = ""
      out[#out + 1] = md_table(t)
    elseif it.kind == "figure" then
      local rel = relative(X.results_dir, it.path)
      out[#out + 1] = ("![%s](%s)"):format(it.name, rel)
      if it.caption then out[#out + 1] = ""; out[#out + 1] = "*" .. it.caption .. "*" end
    end
    out[#out + 1] = ""
  end
  return table.concat(out, "\n")
end

return M
