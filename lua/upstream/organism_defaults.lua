-- upstream.organism_defaults: what a model organism's directory supplies to the commands run
-- on it without naming every input (`upstream attribute --prompt ...` on models/organism).
--
--   organism_defaults.read(dir) -> {sae = DIR/<organism.json sae[source_layer]>,
--                                   direction = DIR/direction.safetensors:unit,
--                                   source_layer = l, target_layer = L} | nil
--
-- nil when dir holds no readable organism.json with integer source_layer and target_layer and
-- an SAE path for the source layer (any other checkpoint): the caller then needs its inputs
-- named. organism.json is written by `upstream organism build` (upstream.organism_build).
local core = require "upstream.core"

local M = {}

function M.read(dir)
  local ok, info = pcall(core.json_read, dir .. "/organism.json")
  if not ok or type(info) ~= "table" then return nil end
  local src, tgt = info.source_layer, info.target_layer
  if math.type(src) ~= "integer" or math.type(tgt) ~= "integer" then return nil end
  local sae = type(info.sae) == "table" and info.sae[tostring(src)]
  if type(sae) ~= "string" then return nil end
  return {sae = dir .. "/" .. sae, direction = dir .. "/direction.safetensors:unit", source_layer = src,
          target_layer = tgt}
end

return M
