-- upstream: the Lua library. The C bindings live in upstream.core; this table adds to them
-- the experiment layer (docs/lua-api.md): upstream.experiment{...} and the modules it uses.
local core = require "upstream.core"
local M = {}
for k, v in pairs(core) do M[k] = v end

-- Loaded on first use, so a script that only uses the bindings pays nothing for them.
local lazy = {
  experiment = function() return require("upstream.experiment").new end,
  csv = function() return require "upstream.csv" end,
  config = function() return require "upstream.config" end,
  rank_compare = function() return require("upstream.stats").rank_compare end,
}
return setmetatable(M, {__index = function(t, k)
  local f = lazy[k]
  if not f then return nil end
  local v = f()
  rawset(t, k, v)
  return v
end})
