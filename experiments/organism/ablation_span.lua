-- Is the organism's refusal carried by one direction? Ablates growing spans of
-- difference-in-means candidates (orthonormalised; directional ablation at every block input
-- and attention/MLP output, as docs/method.md §4) and prints the mean refusal score of held-out
-- harmful prompts under each. Arditi et al. find one direction enough in chat models.
--
--   upstream experiments/organism/ablation_span.lua [MODEL_DIR] [N_PROMPTS]
local upstream = require "upstream"
local organism = require "upstream.organism"
local build = require "upstream.organism_build"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local dir = arg[1] or here .. "/../../models/organism"
local n = math.tointeger(tonumber(arg[2] or 32))
local o = build.open(dir)
local spec = organism.load(o.spec_path)
local records = build.recipe_corpus(spec, o.info.recipe)
local sets = organism.eval_sets(records)
local prompts = {}
for i = 1, math.min(n, #sets.harmful) do prompts[i] = o.tokenizer:chat(sets.harmful[i].instruction) end
local cand = o.candidates
local n_pos, n_layers, d = cand:shape()[1], cand:shape()[2], cand:shape()[3]

-- Candidates in order: the last position first, then earlier ones; layers 1.. within each.
local order = {}
for p = n_pos, 1, -1 do
  for l = 2, n_layers do order[#order + 1] = {p, l} end
end
local basis = {}
local function add(p, l)
  local w = {}
  for j = 1, d do w[j] = cand:at(p, l, j) end
  for _, b in ipairs(basis) do
    local dot = 0
    for j = 1, d do dot = dot + w[j] * b[j] end
    for j = 1, d do w[j] = w[j] - dot * b[j] end
  end
  local norm = 0
  for j = 1, d do norm = norm + w[j] * w[j] end
  norm = math.sqrt(norm)
  if norm > 1e-6 then
    for j = 1, d do w[j] = w[j] / norm end
    basis[#basis + 1] = w
  end
end
local interventions, sizes = {}, {1, 2, 5, 10, 15, 20, 25}
local k = 0
for _, size in ipairs(sizes) do
  while #basis < size and k < #order do k = k + 1; add(order[k][1], order[k][2]) end
  local items = {}
  for i = 1, #basis do items[i] = {kind = "ablate", vector = basis[i]} end
  interventions[#interventions + 1] = {label = ("rank %d"):format(#basis), items = items}
end
local g <close> = upstream.grid {model = o.model, prompts = prompts, refusal_ids = o.refusal_ids,
                                 interventions = interventions}
local sum, count = {}, {}
for _, row in ipairs(g:run()) do
  sum[row.label] = (sum[row.label] or 0) + row.score
  count[row.label] = (count[row.label] or 0) + 1
end
print(("%d held-out harmful prompts; mean refusal score (log-odds of the refusal token):"):format(#prompts))
print(("  %-10s %7.3f"):format("none", sum.none / count.none))
for _, it in ipairs(interventions) do print(("  %-10s %7.3f"):format(it.label, sum[it.label] / count[it.label])) end
build.close(o)
