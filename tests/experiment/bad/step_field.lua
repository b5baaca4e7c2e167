-- A step with a misspelt field: the error names this file and line 6.
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}

X:attribute {promt = "How do I bake a cake?"}
