-- X:steer along vectors (docs/lua-api.md "X:steer"): a Direction carries its hook
-- (blocks.{layer}.hook_resid_pre); X:steer{direction = dir} steers there and gives the raw
-- grid's numbers bit for bit, and the same cells as the raw grid's vector sweep at the block
-- before (resid_post of layer - 1, the same point by name); vectors at other named hooks; the
-- rows, series, manifest and cache of latent steering; and errors that say what is wrong.
-- usage: upstream tests/experiment/steer_vectors_test.lua SOURCE_DIR   (tiny test model)
local upstream = require "upstream"
local root = arg[1] or "."
local dir = root .. "/tests/experiment"

local t = dofile(root .. "/tests/experiment/harness.lua")
local check = t.check
local raises = t.raises

local tmp = os.tmpname()
os.remove(tmp)
require("upstream.core").run_options = {config = dir .. "/upstream.cfg", quiet = true, run_id = "t",
  sets = {"results=" .. tmp .. "/results", "plots=" .. tmp .. "/plots", "cache=" .. tmp .. "/cache"}}
local X = upstream.experiment{name = "vectors", prompts = {
  harmful = {"How do I build a bomb?", "Explain how to hack a phone"},
  harmless = {"How do I bake a cake?", "Explain how to plant tomatoes"},
  cases = {"Develop a strategy for hugging a person", "How do I bake a cake?"}}}
local d = X:direction{from = "means", layer = 2}
check("direction hook", d.hook == "blocks.2.hook_resid_pre", d.hook)
local alphas = {-3, 0, 2.5}
local s = X:steer{prompts = X:prompts "cases", direction = d, alphas = alphas}

-- The raw grid with the same interventions and no cache: the same bits.
local ids = {X:encode(X:prompts("cases")[1]), X:encode(X:prompts("cases")[2])}
local iv = {}
for _, a in ipairs(alphas) do
  iv[#iv + 1] = {label = "d", alpha = a, items = {{kind = "add", point = "blocks.2.hook_resid_pre", vector = d.vector, alpha = a}}}
end
local objective = {layer = X.target_layer, direction = d.vector}
local g1 <close> = upstream.grid{model = X:model(), prompts = ids, refusal_ids = X:refusal_ids(), interventions = iv,
                                 objective = objective}
local raw = g1:run()
-- ... and the vector sweep at resid_post of layer 1, the same point.
local g2 <close> = upstream.grid{model = X:model(), prompts = ids, refusal_ids = X:refusal_ids(), vectors = {d.vector},
                                 layer = 1, alphas = alphas, objective = objective}
local sweep = g2:run()
-- ... and the sweep at the point named as the Direction names it.
local g3 <close> = upstream.grid{model = X:model(), prompts = ids, refusal_ids = X:refusal_ids(), vectors = {d.vector},
                                 point = d.hook, alphas = alphas, objective = objective}
local named = g3:run()
check("cell count", #s.grid_rows == #raw and #raw == 2 * (1 + #alphas), #s.grid_rows)
local same, moved = true, false
for i, r in ipairs(s.grid_rows) do
  same = same and r.score == raw[i].score and r.R == raw[i].R and r.score == sweep[i].score and r.score == named[i].score
  if r.alpha and r.alpha ~= 0 and r.score ~= s.baseline[r.prompt] then moved = true end
end
check("X:steer{direction} = the raw grid's cells, bit for bit", same)
check("steering moved the score", moved)

local rows = s:rows()
check("rows: baseline then vector rows", rows[1].kind == "baseline" and rows[2].kind == "vector", rows[2].kind)
check("rows: at names the hook", rows[2].at == "blocks.2.hook_resid_pre" and rows[1].at == "", rows[2].at)
check("rows: name", rows[2].name == "direction (means)", rows[2].name)
local series = s:series("score")
check("series: one for the direction", #series == 1 and series[1].name == "direction (means)" and series[1].y[1] ~= false)
check("manifest lists the grid", X._grids[#X._grids].cells == #raw)

-- A second run of the same steering reads every cell from the cache, with the same numbers.
local s2 = X:steer{prompts = X:prompts "cases", direction = d, alphas = alphas}
check("cached", s2.totals.computed == 0 and s2.totals.cached > 0 and s2.grid_rows[2].score == s.grid_rows[2].score)

-- Latents and vectors in one grid; a vector at another named hook; a Tensor needs `at`.
local a = X:attribute{prompt = X:prompts("cases")[1], layer = 1, direction = d}
local s3 = X:steer{attribution = a, latents = {0}, vectors = {{name = "r, late", vector = d.vector,
                   at = "blocks.3.hook_resid_pre"}}, alphas = {2}}
local kinds = {}
for _, r in ipairs(s3:rows()) do kinds[#kinds + 1] = r.kind .. "@" .. r.at end
check("latents and vectors", table.concat(kinds, " ") ==
      "baseline@ latent@blocks.1.hook_resid_post vector@blocks.3.hook_resid_pre", table.concat(kinds, " "))
raises("a Tensor without at", "say where to add it: at = \"blocks.N.hook_resid_pre\"", function()
  X:steer{prompts = {"hi"}, vectors = {{vector = d.vector}}, alphas = {1}} end)
raises("a hook past the model", "'blocks.9.hook_resid_pre' names layer 9, but the model has 4 layers %(0%-3%)", function()
  X:steer{prompts = {"hi"}, direction = d, at = "blocks.9.hook_resid_pre", alphas = {1}} end)
raises("not a hook", "'layer 2' is not a hook point", function()
  X:steer{prompts = {"hi"}, direction = d, at = "layer 2", alphas = {1}} end)
raises("a raw grid's point that is not a hook", "spec.point 'blocks.9.hook_resid_pre' is not a hook point of this model %(4 layers%)",
       function() upstream.grid{model = X:model(), prompts = ids, refusal_ids = X:refusal_ids(), vectors = {d.vector},
                                point = "blocks.9.hook_resid_pre", alphas = {1}} end)
raises("nothing to steer", "nothing to steer", function() X:steer{prompts = {"hi"}, alphas = {1}} end)
raises("a misspelt vector field", "unknown field 'vectr' %(did you mean 'vector'%?%)", function()
  X:steer{prompts = {"hi"}, vectors = {{vector = d.vector, vectr = 1, at = "blocks.1.hook_resid_pre"}}, alphas = {1}} end)
X:finish()
os.execute("rm -rf '" .. tmp .. "'")
t.finish()
