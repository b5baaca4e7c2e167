-- upstream.experiment: the declarative layer a case study is written in (docs/lua-api.md).
--
--   local X = upstream.experiment{name = "hug", prompts = {...}, params = {...}}
--   local dir = X:direction()
--   local a = X:attribute{prompt = "...", layer = 1}
--   local s = X:steer{attribution = a, latents = a:top_latents(3), alphas = {-8, 0, 8}}
--   X:table("ranking", a:ranking(10)); X:plot_ranking(a, 10); X:finish()
--
-- What it owns: the run's directories (claimed with mkdir, so a run never reuses another's),
-- its tables (rewritten atomically after each X:table), the report and the manifest (rewritten
-- atomically after every step, so a dead run says how far it got), and the model, tokenizer
-- and SAEs it loads (closed by X:finish or the garbage collector). Steering cells live in the
-- grid cache of the settings, so a killed run's rerun computes only what is missing.
-- Latent names (X:label) come from organism.json, the SAE's settings labels, its Neuronpedia
-- export or its label_text's top tokens (the last two read once per (SAE, layer) on first
-- use), else organism.json's top tokens.
--
-- Error rule: misuse and failures raise with the experiment file's file:line first (see
-- upstream.util.fail / guarded); nothing returns nil, message.
--
-- Where each part lives (lua/upstream/experiment/):
--   setup.lua        upstream.experiment{...}: the declaration, overrides, settings, model entry
--                    and the claimed run directories
--   manifest.lua     the manifest, the log, and step (runs, times and records each step)
--   resources.lua    the model, tokenizer and SAEs (shared across runs on request), refusal ids,
--                    prompt sets
--   labels.lua       latent names and Neuronpedia urls
--   direction.lua    X:direction: from a file, a difference of means or Arditi's selection
--   attribution.lua  X:attribute and the Attribution it returns
--   steering.lua     X:steer (random controls, the grid) and the Steering it returns
--   outputs.lua      tables, figures, notes and X:finish
--   class.lua        the tables the others fill
local class = require "upstream.experiment.class"
for _, part in ipairs({"setup", "manifest", "resources", "labels", "direction", "attribution", "steering",
                       "outputs"}) do
  require("upstream.experiment." .. part)
end

-- lua_host.c calls this when an error nothing caught ends the script: open runs say "failed".
class.M.fail_open_runs = require("upstream.experiment.manifest").fail_open

return class.M
