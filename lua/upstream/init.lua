-- upstream: the Lua library. The C bindings live in upstream.core; this table adds to them.
local core = require "upstream.core"
local M = {}
for k, v in pairs(core) do M[k] = v end
return M
