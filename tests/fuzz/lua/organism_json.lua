-- Fuzz driver (tests/fuzz/fuzz_lua.h): an organism.json, as written by `upstream organism build`,
-- in a model directory, read by the project's readers of it: organism_defaults.read (the
-- commands' defaults for a model directory), the experiment's constructor (source and target
-- layers, the SAE map; lua/upstream/experiment/setup.lua) and its latent names (X:label:
-- organism.json's "labels" and top-activating tokens, labels.lua). The directory's config.json
-- is the organism's (it is read, the weights are not); results, plots and the cache go to the
-- harness's scratch directory. json_read is the host's jansson binding (lua/lua_json.c).
local core = require "upstream.core"
local experiment = require "upstream.experiment"
local organism_defaults = require "upstream.organism_defaults"
local util = require "upstream.util"

local config_json = util.read_file(core.source_dir .. "/models/organism/config.json")

local settings = [[
results = "results";
plots = "plots";
cache = "%s";
model = "m";
models = { m = { path = "model"; }; };
]]

return function(input, dir)
  local model = dir .. "/model"
  assert(core.mkdirs(model))
  local function write(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
  end
  write(model .. "/config.json", config_json)
  write(model .. "/organism.json", input)
  write(dir .. "/upstream.cfg", settings:format(dir .. "-cache"))
  local d = organism_defaults.read(model)
  if d ~= nil then
    assert(type(d.sae) == "string" and math.type(d.source_layer) == "integer" and math.type(d.target_layer) == "integer")
  end
  core.run_options = {config = dir .. "/upstream.cfg", quiet = true, run_id = "r"}
  local X = experiment.new({name = "demo"})
  for layer = 0, 2 do
    for k = 0, 3 do
      assert(type(X:label(layer, k)) == "string", "label is not a string")
    end
  end
end
