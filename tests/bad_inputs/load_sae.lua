-- load_sae.lua PATH: loads an SAE the way a script does (upstream.sae), for the catalogue's
-- cases that go through a Lua call rather than a run.
local upstream = require "upstream"
upstream.sae(arg[1])
