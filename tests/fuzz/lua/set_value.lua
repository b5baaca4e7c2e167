-- Fuzz driver (tests/fuzz/fuzz_lua.h): --set values. Each line of the input is one
-- `--set KEY=VALUE` (at most 8); the run options carry them as `upstream run` does
-- (lua_host.c: any argument holding an '='), and the experiment's constructor applies them
-- (lua/upstream/experiment/setup.lua: split into the experiment's fields and params and
-- settings, values read by util.parse_value, settings applied by config.load and checked
-- against the schema, fields against their declared types). The settings file keeps results,
-- plots and the cache in the harness's scratch directory, and names a model that does not
-- exist: the constructor applies and checks every --set before it looks the model up, and
-- stops there (a --set model=organism goes on through the whole constructor).
--
-- Not fuzzed, to keep the harness to its scratch directory: values naming absolute paths, "~"
-- or "..", and the keys results, plots and cache (a --set path is relative to the working
-- directory: the source tree); nor threads (a huge count starts that many threads).
-- Every value is also parsed against each kind of value it may replace (util.parse_value's
-- `like`).
local core = require "upstream.core"
local experiment = require "upstream.experiment"
local util = require "upstream.util"

local settings = [[
results = "results";
plots = "plots";
cache = "%s";
model = "none";
models = { organism = { defaults = { source_layers = [1]; }; }; };
saes = { s = { path = "s/layer_{layer}/{width}/params.npz"; width = "16k"; l0 = [10, 20, 30]; model = "organism"; }; };
experiments = { demo = { top_k = 3; }; };
]]

return function(input, dir)
  local sets = {}
  for line in (input .. "\n"):gmatch("([^\n]*)\n") do
    if line:find("=", 1, true) then
      local value = line:match("=(.*)$")
      local key = line:match("^([^=]*)=")
      if value:find("^%s*[/~]") or value:find("..", 1, true) or key:find("threads") or key:find("results")
        or key:find("plots") or key:find("cache") then return end
      sets[#sets + 1] = line
      for _, like in ipairs({false, "text", 3, {1}}) do util.parse_value(value, like or nil) end
    end
    if #sets >= 8 then break end
  end
  local path = dir .. "/upstream.cfg"
  local f = assert(io.open(path, "wb"))
  f:write(settings:format(dir .. "-cache"))
  f:close()
  core.run_options = {config = path, sets = sets, quiet = true, run_id = "r"}
  experiment.new({name = "demo", params = {top_k = 5, alphas = {1, 2}, label = "x"}})
end
