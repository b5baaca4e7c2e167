-- upstream.rng: the project's deterministic pseudo-random numbers, for anything that must draw
-- the same sequence on every build and platform (the organism corpus, random controls): a
-- splitmix64 stream on Lua's 64-bit integers, never math.random.
--
--   local rng = require("upstream.rng").new(seed)   -- seed: an integer, else raises
--   rng:next()  -> a 64-bit integer      rng:uniform() -> [0, 1)
--   rng:int(n)  -> 1..n                  rng:pick(list), rng:shuffle(list) (in place; returns it)
--   mix64(z)    the splitmix64 finalizer (also a hash's last step)
local M = {}

local Rng = {}
Rng.__index = Rng

function M.mix64(z)
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end
local mix64 = M.mix64

-- Integer arithmetic wraps in Lua 5.4 and >> is a logical shift, so this gives the reference
-- sequence on every build.
function M.new(seed)
  local s = math.tointeger(seed)
  if not s then error(("rng: seed must be an integer, got %s"):format(tostring(seed)), 2) end
  return setmetatable({state = s}, Rng)
end

function Rng:next()
  self.state = self.state + 0x9E3779B97F4A7C15
  return mix64(self.state)
end

function Rng:uniform() return (self:next() >> 11) * 0x1p-53 end -- [0, 1)
function Rng:int(n) return (self:next() >> 1) % n + 1 end     -- 1..n; bias n/2^63
function Rng:pick(list) return list[self:int(#list)] end

function Rng:shuffle(list)
  for i = #list, 2, -1 do
    local j = self:int(i)
    list[i], list[j] = list[j], list[i]
  end
  return list
end

return M
