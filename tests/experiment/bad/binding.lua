-- A failure inside a step (a latent out of the SAE's range, raised by the C binding): the
-- message starts with this file and line 8, not the library's.
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}
local a = X:attribute {prompt = "How do I bake a cake?", layer = 1}

X:steer {attribution = a, latents = {99999}, alphas = {1}}
