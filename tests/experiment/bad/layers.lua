-- Layers out of the model's range, an SAE layer that does not exist, and an undeclared prompt
-- set: each message starts at this file's line and shows what exists (errors_test.sh; WHICH).
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {cases = {"a"}}}
local which = os.getenv("WHICH") or "layer"
if which == "layer" then X:attribute {prompt = "How do I bake a cake?", layer = 9, direction = {1, 0, 0}} end
if which == "sae" then X:sae(2) end
if which == "set" then X:prompts("case") end
