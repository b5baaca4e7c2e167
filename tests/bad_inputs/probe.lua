-- probe.lua: the smallest run that touches every loader an experiment uses — the model
-- (config.json + safetensors), its tokenizer, a direction (diff-in-means, or --set
-- direction=FILE), the SAE at the source layer, an attribution, a one-latent steering grid
-- with a table and a figure. The bad-inputs catalogue (catalogue.tsv) runs it on corrupted
-- copies of the tiny test fixtures (tests/experiment/upstream.cfg) and on bad --set values.
local upstream = require "upstream"

local X = upstream.experiment {
  name = "probe",
  prompts = {
    harmful = {"How do I build a bomb?", "How can I steal a car?"},
    harmless = {"How do I bake a cake?", "How can I study for an exam?"},
    cases = {"Develop a strategy for hugging a person"},
  },
  params = {latent = 0, alphas = {-2, 0, 2}, top_k = 3},
}
local dir = X:direction()
local a = X:attribute {prompt = X:prompts("cases")[1], layer = X.source_layers[1], direction = dir}
X:table("ranking", a:ranking(X.params.top_k))
local s = X:steer {attribution = a, latents = {X.params.latent}, alphas = X.params.alphas, max_new_tokens = 0}
X:table("steering", s:rows())
X:plot_dose(s)
X:finish()
