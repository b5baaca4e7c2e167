-- An SAE the registry does not have: the error names this file and line 5.
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}
X:attribute {prompt = "How do I bake a cake?", layer = 1, sae = "nosuch"}
