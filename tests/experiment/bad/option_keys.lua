-- A misspelt field in a binding's option table raises with a suggestion, at this file's line,
-- instead of falling back to the field's default (errors_test.sh; WHICH picks the binding).
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", direction = "means", prompts = {harmful = {"a"}, harmless = {"b"}}}
local ids, which = X:encode("How do I bake a cake?"), os.getenv("WHICH")
if which == "grid" then upstream.grid {model = X:model(), prompts = {ids}, refusal_ids = {1}, max_new_tokes = 4} end
if which == "item" then
  upstream.grid {model = X:model(), prompts = {ids}, refusal_ids = {1},
                 interventions = {{label = "x", items = {{kind = "add", vector = {}, pont = "blocks.1.hook_resid_pre"}}}}}
end
if which == "attribute" then X:model():attribute(ids, X:sae(1), {target = 3, direction = {}, socre = "cosine"}) end
if which == "run" then X:model():run(ids, {hook = {"blocks.1.hook_resid_post"}}) end
