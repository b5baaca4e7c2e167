-- A plain Lua error in the experiment: Lua's own file:line (line 6).
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}
local a = X:attribute {prompt = "How do I bake a cake?", layer = 1}
local n = a.no_such_field + 1
