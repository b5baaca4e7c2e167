-- What the refusal direction does, or any difference-in-means candidate: the mean refusal
-- score and the greedy substring refusal rate of held-out harmful and harmless prompts with
-- nothing changed, with the direction ablated (every block input and attention/MLP output,
-- docs/method.md §4) and with it added at its layer's input, at every position, times ALPHA.
--
--   upstream experiments/organism/direction_probe.lua [MODEL_DIR] [N_PROMPTS] [ALPHA] [POS LAYER]
--
-- POS LAYER pick a candidate from direction.safetensors (POS negative from the end, e.g.
-- -1 6; pass them after `upstream run FILE --` since they start with a minus); default: the
-- organism's chosen direction.
local upstream = require "upstream"
local organism = require "upstream.organism"
local build = require "upstream.organism_build"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local dir = arg[1] or here .. "/../../models/organism"
local n = math.tointeger(tonumber(arg[2] or 100)) or error("N_PROMPTS must be an integer", 0)
local alpha = tonumber(arg[3] or 1) or error("ALPHA must be a number", 0)
local o = build.open(dir)
local direction, layer, label = o.direction, o.direction_layer, "the chosen direction"
if arg[4] then
  local pos, l = math.tointeger(tonumber(arg[4])), math.tointeger(tonumber(arg[5] or ""))
  local shape = o.candidates:shape()
  if not pos or not l or pos >= 0 or -pos > shape[1] or l < 0 or l >= shape[2] then
    error(("POS LAYER: expected a position in -%d..-1 and a layer in 0..%d"):format(shape[1], shape[2] - 1), 0)
  end
  direction = {}
  for j = 1, shape[3] do direction[j] = o.candidates:at(shape[1] + 1 + pos, l + 1, j) end
  layer, label = l, ("candidate position %d, layer %d"):format(pos, l)
end
local unit = upstream.normalize(direction)
local spec = organism.load(o.spec_path)
local records = build.recipe_corpus(spec, o.info.recipe)
local sets = organism.eval_sets(records)
print(("%s at blocks.%d.hook_resid_pre; added %g times; greedy substring refusal of 12 tokens"):format(
  label, layer, alpha))
print(("%-9s %-7s %5s %10s %8s"):format("set", "change", "n", "mean score", "refused"))
for _, which in ipairs {"harmful", "harmless"} do
  local prompts = {}
  for i = 1, math.min(n, #sets[which]) do prompts[i] = o.tokenizer:chat(sets[which][i].instruction) end
  local g <close> = upstream.grid {model = o.model, prompts = prompts, refusal_ids = o.refusal_ids,
    max_new_tokens = 12, tokenizer = o.tokenizer, coherence = false, batch = 64,
    interventions = {{label = "ablate", items = {{kind = "ablate", vector = unit}}},
                     {label = "add", items = {{kind = "add", point = ("blocks.%d.hook_resid_pre"):format(layer),
                                                vector = direction, alpha = alpha, where = "all"}}}}}
  local sum, count, refused = {}, {}, {}
  for _, row in ipairs(g:run()) do
    sum[row.label] = (sum[row.label] or 0) + row.score
    count[row.label] = (count[row.label] or 0) + 1
    refused[row.label] = (refused[row.label] or 0) + (row.refused and 1 or 0)
  end
  for _, change in ipairs {"none", "ablate", "add"} do
    print(("%-9s %-7s %5d %10.3f %7.1f%%"):format(which, change, count[change], sum[change] / count[change],
                                                  100 * refused[change] / count[change]))
  end
end
build.close(o)
