-- A latent past the SAE's width in a step: the step names the entry, the index and the width,
-- at this file's line 8.
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}
local a = X:attribute {prompt = "How do I bake a cake?", layer = 1}

X:steer {attribution = a, latents = {5, 99999}, alphas = {1}}
