-- Fuzz driver (tests/fuzz/fuzz_lua.h): a Neuronpedia explanations export (a JSON array of
-- {modelId, layer, index, description}), read by the experiment's latent names (X:label through
-- Experiment:_neuronpedia, lua/upstream/experiment/labels.lua) for an SAE whose settings entry
-- names the export and its neuronpedia_id. The experiment is the real class with only the
-- fields these methods read.
local class = require "upstream.experiment.class"
require "upstream.experiment.labels"

return function(input, dir)
  local path = dir .. "/explanations.json"
  local f = assert(io.open(path, "wb"))
  f:write(input)
  f:close()
  local settings = {saes = {np = {neuronpedia = path, neuronpedia_id = "gemma-2-2b/{layer}-gemmascope-res-16k"}}}
  local X = setmetatable({settings = settings, sae_name = "np", quiet = true, log = function() end}, class.Experiment)
  for k = 0, 4 do
    local name = X:label(3, k, "np")
    assert(type(name) == "string", "label is not a string")
  end
  assert(X:latent_url(3, 7, "np") == "https://www.neuronpedia.org/gemma-2-2b/3-gemmascope-res-16k/7")
end
