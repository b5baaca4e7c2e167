-- A failure inside a binding (a latent past the SAE's width, raised by upstream.grid in C): the
-- message starts with this file and line 9, not the library's, and shows the index and the
-- width. (X:steer checks the same before the grid: latent.lua.)
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}
local a = X:attribute {prompt = "How do I bake a cake?", layer = 1}

local g = upstream.grid {model = X:model(), prompts = {a.ids}, refusal_ids = X:refusal_ids(), sae = a.sae, layer = 1,
                         latents = {3, 99999}, alphas = {1}}
