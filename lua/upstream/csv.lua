-- upstream.csv: tables as RFC 4180 CSV text, the same bytes for the same rows.
--
--   csv.columns(rows)              -> {names}: keys in order of first appearance, row by row: a
--                                     record's own order (csv.record, csv.row), then its other
--                                     keys alphabetically (a Lua table keeps no order of its own)
--   csv.encode(rows, columns)      -> text with a header line, "\n" line ends
--   csv.format(value)              -> the cell text: numbers "%.9g" (integers as integers, so a
--                                     float32 score reads back exactly), NaN "nan", booleans
--                                     true/false, nil ""
--   csv.quote(text[, always])      -> text as one cell: in double quotes (inner quotes doubled)
--                                     when it holds , " CR or LF, or always
--   csv.decode(text)               -> header, rows (rows are arrays of strings)
--   csv.record(t, order)           -> t with a field order kept for csv.columns
--   csv.row(k1, v1, k2, v2, ...)   -> a record of those fields, its columns in that order (a nil
--                                     value keeps its column, empty)
-- Error rule: misuse raises.
local M = {}

local order_key = setmetatable({}, {__mode = "k"})

function M.record(t, order)
  order_key[t] = order
  return t
end

function M.row(...)
  local n = select("#", ...)
  if n % 2 ~= 0 then error("csv.row: expected key, value pairs, got an odd number of arguments", 2) end
  local t, order = {}, {}
  for i = 1, n, 2 do
    local k, v = select(i, ...)
    if type(k) ~= "string" then error(("csv.row: argument %d must be a column name, got %s"):format(i, type(k)), 2) end
    t[k] = v
    order[#order + 1] = k
  end
  return M.record(t, order)
end

function M.columns(rows)
  local cols, seen = {}, {}
  local function add(k)
    if not seen[k] then seen[k] = true; cols[#cols + 1] = k end
  end
  for _, r in ipairs(rows) do
    if order_key[r] then for _, k in ipairs(order_key[r]) do add(k) end end
    local rest = {}
    for k in pairs(r) do if not seen[k] then rest[#rest + 1] = k end end
    table.sort(rest)
    for _, k in ipairs(rest) do add(k) end
  end
  return cols
end

function M.format(v)
  if v == nil then return "" end
  local t = type(v)
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
    return ("%.9g"):format(v)
  elseif t == "boolean" then return tostring(v)
  elseif t == "string" then return v end
  return tostring(v)
end

function M.quote(s, always)
  if always or s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end
local quote = M.quote

function M.encode(rows, columns)
  columns = columns or M.columns(rows)
  local out = {}
  local head = {}
  for i, c in ipairs(columns) do head[i] = quote(c) end
  out[1] = table.concat(head, ",")
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(columns) do cells[i] = quote(M.format(r[c])) end
    out[#out + 1] = table.concat(cells, ",")
  end
  return table.concat(out, "\n") .. "\n"
end

function M.decode(text)
  local rows, row, field, i, n = {}, {}, {}, 1, #text
  local quoted = false
  while i <= n do
    local c = text:sub(i, i)
    if quoted then
      if c == '"' then
        if text:sub(i + 1, i + 1) == '"' then field[#field + 1] = '"'; i = i + 1 else quoted = false end
      else field[#field + 1] = c end
    elseif c == '"' then quoted = true
    elseif c == "," then row[#row + 1] = table.concat(field); field = {}
    elseif c == "\n" then
      row[#row + 1] = table.concat(field); field = {}
      rows[#rows + 1] = row; row = {}
    elseif c ~= "\r" then field[#field + 1] = c end
    i = i + 1
  end
  if #field > 0 or #row > 0 then row[#row + 1] = table.concat(field); rows[#rows + 1] = row end
  local header = table.remove(rows, 1)
  return header, rows
end

return M
