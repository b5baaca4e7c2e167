-- Fuzz driver (tests/fuzz/fuzz_lua.h): a settings file (upstream.cfg, libconfig syntax), read
-- the way every run reads it: config.load (lua/upstream/config.lua) calls the upstream.settings
-- binding (lua/settings.c + lua/lua_settings.c: libconfig), checks the tree against the schema
-- and merges it over the built-in defaults; then the registry look-ups a run makes, for every
-- model and SAE the file names.
local config = require "upstream.config"

return function(input, dir)
  local path = dir .. "/upstream.cfg"
  local f = assert(io.open(path, "wb"))
  f:write(input)
  f:close()
  local cfg = config.load({path = path})
  assert(type(cfg.models) == "table" and type(cfg.saes) == "table", "settings without registries")
  for name in pairs(cfg.models) do pcall(config.model, cfg, name) end
  for name in pairs(cfg.saes) do
    for layer = 0, 2 do
      local ok, p = pcall(config.sae_path, cfg, name, layer)
      if ok then assert(p == nil or type(p) == "string") end
      pcall(config.sae_fill, cfg, name, layer, "neuronpedia_id")
    end
  end
  config.public(cfg)
end
