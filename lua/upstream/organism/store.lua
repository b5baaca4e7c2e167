-- upstream.organism.store: a built organism directory on disk, opened for use.
--   DIR/config.json, model.safetensors, tokenizer.json   the model (upstream.model / tokenizer)
--   DIR/direction.safetensors   direction, unit, candidates; metadata pos, layer, norm, bypass,
--                               induce, kl (Arditi's selection scores of the chosen candidate)
--   DIR/sae/layer_{l}/params.npz   the SAE (M.sae_path)
--   DIR/organism.json   recipe, layers, labels, detectors, case studies, refusal ids
--   DIR/spec.lua        the copy of the spec the build started from
-- open() returns a table owning the model, tokenizer and SAE; close() frees them. A directory
-- without organism.json raises.
local upstream = require "upstream"
local organism = require "upstream.organism"
local util = require "upstream.util"

local fail, exists = organism.fail, util.exists

local M = {}

function M.sae_path(dir, layer) return ("%s/sae/layer_%d/params.npz"):format(dir, layer) end

-- The chosen direction's metadata (DIR/direction.safetensors): {pos, layer, norm, bypass,
-- induce, kl}, numbers; nil when the direction stage has not run.
function M.direction_meta(dir)
  local path = dir .. "/direction.safetensors"
  if not exists(path) then return nil end
  local _, meta = upstream.load_safetensors(path)
  return {pos = math.tointeger(tonumber(meta.pos)), layer = math.tointeger(tonumber(meta.layer)), norm = tonumber(meta.norm),
          bypass = tonumber(meta.bypass), induce = tonumber(meta.induce), kl = tonumber(meta.kl)}
end

-- Loads an organism directory: model, tokenizer, SAE, direction (and its metadata,
-- direction_meta) and organism.json; spec_path is the copy of the spec its build stored
-- (DIR/spec.lua), else the path it recorded.
function M.open(dir)
  if not exists(dir .. "/organism.json") then
    fail("%s has no organism.json: not a built organism (upstream organism build SPEC.lua --out DIR makes one)", dir)
  end
  local info = upstream.json_read(dir .. "/organism.json")
  local spec_path = exists(dir .. "/spec.lua") and dir .. "/spec.lua" or info.spec
  local tensors = upstream.load_safetensors(dir .. "/direction.safetensors")
  local dmeta = M.direction_meta(dir)
  local layer = info.source_layer
  return {
    dir = dir, info = info, spec_path = spec_path,
    model = upstream.model(dir), tokenizer = upstream.tokenizer(dir),
    sae = upstream.sae(dir .. "/" .. info.sae[tostring(layer)]),
    direction = tensors.direction, unit = tensors.unit, candidates = tensors.candidates,
    direction_meta = dmeta, direction_layer = dmeta.layer, direction_pos = dmeta.pos,
    source_layer = layer, target_layer = info.target_layer, labels = info.labels[tostring(layer)] or {},
    refusal_ids = info.refusal_ids,
  }
end

function M.close(o)
  o.model:close(); o.tokenizer:close(); o.sae:close()
end

return M
