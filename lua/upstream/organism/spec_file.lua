-- upstream.organism.spec_file: reads an organism spec file, a Lua chunk that returns the spec
-- table (upstream.organism.load prepares it). The chunk runs in an environment of its own that
-- holds only what a variant needs to start from another spec and state what it changes:
--   base(PATH)                the table another spec file returns (PATH relative to this
--                             file's directory), fresh on each call, so the variant may edit it
--   concept(spec, NAME)       the entry of spec.concepts named NAME
--   replace(list, NAME, ...)  replaces the entry of list named NAME by the given entries, in
--                             order (none: removes it)
-- concept and replace raise when no entry has that name.
--
-- read(path) -> the table, and the paths of the base files it loaded (load order).
-- source(path) -> the text a built organism keeps as DIR/spec.lua: the file itself when it
--   loads no base (a copy reads the same), else the table written out as a self-contained spec
--   (a base's relative path means nothing next to DIR/spec.lua). Deterministic: keys sorted.
-- Errors: a file that does not load or fails raises "organism: cannot load spec PATH: ..." or
-- "organism: spec PATH failed: ...".
local util = require "upstream.util"

local M = {}

local function fail(fmt, ...) error("organism: " .. fmt:format(...), 0) end

local function find(list, name, what)
  for i, e in ipairs(list) do
    if type(e) == "table" and e.name == name then return i, e end
  end
  error(("%s: no entry named \"%s\""):format(what, name), 3)
end

local function read(path, bases)
  local env = {}
  function env.base(rel)
    local p = rel:sub(1, 1) == "/" and rel or util.dirname(path) .. "/" .. rel
    bases[#bases + 1] = p
    return read(p, bases)
  end
  function env.concept(spec, name)
    local _, c = find(spec.concepts, name, "concept")
    return c
  end
  function env.replace(list, name, ...)
    local i = find(list, name, "replace")
    table.remove(list, i)
    local new = table.pack(...)
    for k = new.n, 1, -1 do table.insert(list, i, new[k]) end
  end
  local chunk, err = loadfile(path, "t", env)
  if not chunk then fail("cannot load spec %s: %s", path, err) end
  local ok, spec = pcall(chunk)
  if not ok then fail("spec %s failed: %s", path, tostring(spec)) end
  return spec
end

function M.read(path)
  local bases = {}
  local spec = read(path, bases)
  return spec, bases
end

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat return then
            true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function literal(v, indent)
  local t = type(v)
  if t == "string" then return ("%q"):format(v)
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    local s = ("%.15g"):format(v)
    if tonumber(s) ~= v then s = ("%.17g"):format(v) end
    return s:find("[%.eEn]") and s or s .. ".0"
  elseif t ~= "table" then
    error(("spec_file: cannot write a %s"):format(t))
  end
  local n, keys = #v, {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  if n == 0 and #keys == 0 then return "{}" end
  table.sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) < type(b) end
    return a < b
  end)
  local inner, out = indent .. "  ", {}
  for i = 1, n do out[#out + 1] = inner .. literal(v[i], inner) .. "," end
  for _, k in ipairs(keys) do
    local key = (type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k]) and k
                or "[" .. literal(k, inner) .. "]"
    out[#out + 1] = inner .. key .. " = " .. literal(v[k], inner) .. ","
  end
  return "{\n" .. table.concat(out, "\n") .. "\n" .. indent .. "}"
end

function M.source(path)
  local spec, bases = M.read(path)
  if #bases == 0 then return util.read_file(path) end
  local names = {}
  for i, b in ipairs(bases) do names[i] = util.basename(b) end
  return ("-- %s with its base specs (%s) resolved: written by upstream organism build, read by eval.\nreturn %s\n")
         :format(util.basename(path), table.concat(names, ", "), literal(spec, ""))
end

return M
