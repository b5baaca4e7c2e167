-- upstream.util: helpers every experiment module shares — where an error belongs in the
-- experiment file, checks of declaration tables, atomic file writes, value parsing, the clock.
--
-- Errors are raised as "file:line: message" with the line of the *experiment* (the first
-- stack frame outside lua/upstream/), because the person reading the message wrote that
-- file, not this library. Error rule for the experiment layer: misuse and failures raise;
-- nothing here returns nil, message.
local core = require "upstream.core"
local M = {}

-- The directory holding this library's files; frames from here are never "the experiment".
local libdir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ""

local function is_library(source)
  return source:sub(1, 1) ~= "@" or source:sub(2, #libdir + 1) == libdir
end

-- Whether the file named at the head of an error message ("path:12: ...") is this library's.
-- Lua shortens a long path to "...its/tail" (LUA_IDSIZE), so a tail counts when its start
-- overlaps the end of libdir .. "/" by at least 12 characters (or all of it).
local function names_library(id)
  if id:sub(1, 3) ~= "..." then return is_library("@" .. id) end
  local tail, dir = id:sub(4), libdir .. "/"
  for k = math.min(#tail, #dir), math.min(12, #dir), -1 do
    if dir:sub(-k) == tail:sub(1, k) then return true end
  end
  return false
end
M._names_library = names_library -- for tests

-- "file:line" of the nearest caller outside the library, or nil (e.g. called from C only).
function M.where(level)
  level = level or 2
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.currentline and info.currentline > 0 and not is_library(info.source) then
      return info.source:sub(2) .. ":" .. info.currentline
    end
    level = level + 1
  end
end

-- Raises msg prefixed with the experiment's file:line.
function M.fail(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  local loc = M.where(3)
  error((loc and (loc .. ": ") or "") .. msg, 0)
end

-- Runs fn(...) and re-raises any error with the experiment's file:line in front (once): a
-- binding's "bad argument #3 to 'attribute'" then says which line of the experiment led there.
function M.guarded(fn, ...)
  local loc = M.where(3)
  local file = loc and loc:match("^(.*):%d+$")
  local res = table.pack(xpcall(fn, function(e)
    if type(e) ~= "string" then e = tostring(e) end
    if not loc or e:sub(1, #file + 1) == file .. ":" then return e end
    -- The library's own file:line says nothing to the experiment's author: replace it.
    local lib = e:match("^[^:\n]*:%d+: ")
    if lib and names_library(lib:match("^([^:]*)")) then e = e:sub(#lib + 1) end
    return loc .. ": " .. e
  end, ...))
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- Edit distance with adjacent transpositions (optimal string alignment), for "did you mean":
-- a swapped pair of letters is the commonest slip.
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = {[0] = i} end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end

function M.suggest(name, allowed)
  local best, bd
  for _, a in ipairs(allowed) do
    local d = distance(name, a)
    if not bd or d < bd then best, bd = a, d end
  end
  if best and bd <= math.max(2, #name // 3) then return (" (did you mean '%s'?)"):format(best) end
  return ""
end

local type_checks = {
  string = function(v) return type(v) == "string" end,
  number = function(v) return type(v) == "number" end,
  integer = function(v) return math.type(v) == "integer" end,
  boolean = function(v) return type(v) == "boolean" end,
  table = function(v) return type(v) == "table" end,
  ["function"] = function(v) return type(v) == "function" end,
  integers = function(v)
    if type(v) ~= "table" then return false end
    for i = 1, #v do if math.type(v[i]) ~= "integer" then return false end end
    return true
  end,
  numbers = function(v)
    if type(v) ~= "table" then return false end
    for i = 1, #v do if type(v[i]) ~= "number" then return false end end
    return true
  end,
  strings = function(v)
    if type(v) ~= "table" then return false end
    for i = 1, #v do if type(v[i]) ~= "string" then return false end end
    return true
  end,
  any = function() return true end,
}
M.type_checks = type_checks

-- Checks a declaration table against fields = {name = "type" | "type|type"}; raises with the
-- experiment's file:line naming the first unknown or mistyped field. what: "experiment",
-- "attribute", ...
function M.check_fields(t, fields, what)
  if type(t) ~= "table" then M.fail("%s: expected a table, got %s", what, type(t)) end
  local names = {}
  for k in pairs(fields) do names[#names + 1] = k end
  table.sort(names)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local spec = fields[k]
    if not spec then
      M.fail("%s: unknown field '%s'%s", what, tostring(k), type(k) == "string" and M.suggest(k, names) or "")
    end
    local ok = false
    for ty in spec:gmatch("[^|]+") do
      if type_checks[ty] then ok = ok or type_checks[ty](t[k])
      else ok = ok or (type(t[k]) == "userdata" and (getmetatable(t[k]) or {}).__name == ty) end
    end
    if not ok then M.fail("%s: field '%s' must be %s, got %s", what, k, spec:gsub("|", " or "), type(t[k])) end
  end
  return t
end

-- Writes text to path atomically (temporary name in the same directory, then rename).
local counter = 0
function M.write_atomic(path, text)
  -- A job of several ranks has one writer, rank 0 (upstream.dist): the others run the same
  -- script and would write the same bytes to the same names.
  if core.dist.rank ~= 0 then return path end
  counter = counter + 1
  local tmp = ("%s.tmp.%d.%d"):format(path, os.time(), counter)
  local f, err = io.open(tmp, "wb")
  if not f then error("cannot write " .. path .. ": " .. err, 0) end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    error("cannot write " .. path .. ": " .. tostring(werr or cerr), 0)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    error("cannot rename onto " .. path .. ": " .. tostring(rerr), 0)
  end
  return path
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function M.dirname(path) return path:match("^(.*)/[^/]*$") or "." end
function M.basename(path) return path:match("([^/]*)/*$") end

-- "a/./b/../c" -> "a/c" (textually, as a reader would; symlinks are not resolved).
function M.normalize(path)
  local abs = path:sub(1, 1) == "/"
  local parts = {}
  for p in path:gmatch("[^/]+") do
    if p == ".." and #parts > 0 and parts[#parts] ~= ".." then parts[#parts] = nil
    elseif p ~= "." and not (p == ".." and abs) then parts[#parts + 1] = p end
  end
  local s = table.concat(parts, "/")
  if abs then return "/" .. s end
  return s == "" and "." or s
end

-- "~/x" -> $HOME/x; relative paths joined to base (nil: left relative).
function M.expand(path, base)
  if path:sub(1, 2) == "~/" then return M.normalize((os.getenv("HOME") or "") .. path:sub(2)) end
  if path:sub(1, 1) ~= "/" and base then return M.normalize(base .. "/" .. path) end
  return M.normalize(path)
end

-- A --set value: "1,2" -> {1, 2}; "3" -> 3; "true" -> true; anything else a string. like is the
-- value it replaces: a table there makes even one element a list.
function M.parse_value(text, like)
  local function scalar(s)
    if s == "true" then return true elseif s == "false" then return false end
    local n = math.tointeger(tonumber(s)) or tonumber(s)
    if n and s:match("^%s*[-+]?[%d.]") then return n end
    return s
  end
  if text:find(",", 1, true) or type(like) == "table" then
    local list = {}
    for part in (text .. ","):gmatch("([^,]*),") do
      if part ~= "" then list[#list + 1] = scalar(part) end
    end
    return list
  end
  local v = scalar(text)
  if type(like) == "string" then return text end
  return v
end

-- How many ids a chat-formatted prompt has before its instruction (BOS and the user turn's
-- header): chat(text) formats a prompt (measured on "x"), tok encodes plain text, and the
-- template ends with 5 post-instruction tokens (docs/method.md §1).
function M.chat_prefix_length(tok, chat)
  return #chat("x") - #tok:encode("x") - 5
end

-- The 0-based indices of the instruction's tokens in a chat-formatted prompt `ids`: what lies
-- between the template's prefix and its 5 post-instruction tokens. chat(text) must format a
-- prompt as ids was; tok encodes plain text.
function M.instruction_positions(tok, chat, ids)
  local n_prefix = M.chat_prefix_length(tok, chat)
  local out = {}
  for t = n_prefix, #ids - 6 do out[#out + 1] = t end
  return out
end

-- The library's one clock, for durations (log stamps, step timings, a run's seconds): the
-- core's monotonic clock (base/clock.h, up_clock_seconds). Only differences mean anything.
M.clock = core.clock

function M.copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = M.copy(v) end
  return c
end

function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

M.core = core
return M
