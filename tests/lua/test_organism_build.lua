-- The organism pipeline end to end at smoke size: every stage runs, training lowers the loss,
-- every output loads, a rerun resumes (every stage kept), and the evaluation report has every
-- section. Usage: upstream tests/lua/test_organism_build.lua SOURCE_DIR SCRATCH_DIR
local upstream = require "upstream"
local build = require "upstream.organism_build"
local root, out = arg[1], arg[2] .. "/organism_smoke"
assert(root and arg[2], "usage: test_organism_build.lua SOURCE_DIR SCRATCH_DIR")
os.execute(("rm -rf '%s' && mkdir -p '%s'"):format(out, arg[2]))

local spec = root .. "/experiments/organism/refusal.lua"
local ctx = build.build(spec, out, {smoke = true, command = "test"})
assert(ctx.train, "the model stage did not train")
assert(ctx.train.last_loss < ctx.train.first_loss - 0.5,
       ("training did not lower the loss: %.3f -> %.3f"):format(ctx.train.first_loss, ctx.train.last_loss))
for _, f in ipairs {"tokenizer.json", "config.json", "model.safetensors", "direction.safetensors", "organism.json",
                    "recipe.json", "build.log", "sae/layer_1/params.npz"} do
  local h = io.open(out .. "/" .. f, "rb")
  assert(h, "missing " .. f)
  h:close()
end
assert(not io.open(out .. "/work/train.state", "rb"), "the training state should be removed after the save")

local o = build.open(out)
local cfg = o.model:config()
assert(cfg.vocab_size == o.tokenizer:vocab_size(), "model and tokenizer disagree on the vocabulary")
assert(o.sae:info().d_in == cfg.d_model and o.sae:info().d_sae == 128, "SAE shape")
assert(#o.direction == cfg.d_model, "direction length")
assert(o.target_layer > o.source_layer, "target layer must be above the SAE layer")
assert(#o.refusal_ids == 1 and o.tokenizer:piece(o.refusal_ids[1]) == "I", "refusal token should be \"I\"")
build.close(o)

-- A rerun keeps every stage.
local log_before = io.open(out .. "/build.log"):read("a")
local ctx2 = build.build(spec, out, {smoke = true, command = "test"})
assert(ctx2.train == nil, "rerun retrained the model")
local log = io.open(out .. "/build.log"):read("a"):sub(#log_before + 1)
for _, stage in ipairs {"tokenizer", "model", "direction", "sae", "labels"} do
  assert(log:find(stage .. ": [^\n]* exists, kept"), "rerun did not keep the " .. stage .. " stage:\n" .. log)
end

-- --set reaches the recipe and rejects unknown keys.
local r = build.recipe(require("upstream.organism").load(spec), {smoke = true, set = {"train.steps=7", "sae.arch=relu"}})
assert(r.train.steps == 7 and r.sae.arch == "relu", "--set not applied")
local ok, err = pcall(build.recipe, require("upstream.organism").load(spec), {set = {"train.stepz=7"}})
assert(not ok and err:find("train.stepz"), "an unknown --set key must be an error: " .. tostring(err))

-- The concept oracle: each row is the unit vector along the concept's mean activation at its
-- marked tokens minus the mean over all tokens (re-derived here from token_labels), and a
-- ranking orders concepts by row · gbar.
do
  local organism = require "upstream.organism"
  local ospec = organism.load(spec)
  local o2 = build.open(out)
  local recs = {}
  for _, rec in ipairs(build.recipe_corpus(ospec, o2.info.recipe)) do
    if rec.split == "heldout" and #recs < 60 then recs[#recs + 1] = rec end
  end
  local layer = o2.source_layer
  local cd = build.concept_directions(ospec, o2.model, o2.tokenizer, recs, layer)
  assert(#cd.names >= 5, "oracle: too few concepts with tokens: " .. #cd.names)
  local ids_list, rows, marks = build.token_labels(ospec, o2.tokenizer, recs)
  local X = upstream.collect_activations(o2.model, ids_list, layer, {batch = 8})
  local d = X:shape()[2]
  local mu = {}
  for j = 1, d do
    mu[j] = 0
    for i = 1, #rows do mu[j] = mu[j] + X:at(i, j) / #rows end
  end
  for _, name in ipairs(cd.names) do
    local v, sum, dot, nsum = cd.rows[name], {}, 0, 0
    local nv = 0
    for j = 1, d do sum[j] = 0; nv = nv + v[j] ^ 2 end
    assert(math.abs(nv - 1) < 1e-9, name .. ": oracle row is not a unit vector")
    for i, m in pairs(marks[name]) do
      if m == 1 then
        for j = 1, d do sum[j] = sum[j] + X:at(i, j) - mu[j] end
      end
    end
    for j = 1, d do dot, nsum = dot + sum[j] * v[j], nsum + sum[j] ^ 2 end
    assert(dot / math.sqrt(nsum) > 1 - 1e-6, name .. ": oracle row is not the concept's mean direction")
  end
  local toy = {names = {"a", "b", "c"}, rows = {a = {1, 0}, b = {0, 1}, c = {-1, 0}}}
  local list = build.concept_ranking(toy, {0.5, 0.2})
  assert(list[1].name == "a" and list[2].name == "b" and list[3].name == "c", "oracle ranking order")
  assert(build.concept_place(list, "a", "top") == 1 and build.concept_place(list, "c", "bottom") == 1
         and build.concept_place(list, "b", "bottom") == 2 and build.concept_place(list, "z", "top") == nil,
         "oracle places")
  local ids = o2.tokenizer:chat("Develop a strategy for hugging a person")
  local g = o2.model:gradient(ids, {source = layer, target = o2.target_layer, direction = o2.unit})
  local gbar = build.mean_rows(g, {2, 4})
  assert(math.abs(gbar[3] - (g:at(2, 3) + g:at(4, 3)) / 2) < 1e-12, "mean_rows")
  build.close(o2)
end

local rep = build.eval(out, {smoke = true})
for _, section in ipairs {"## Behaviour", "## Case studies", "## SAE", "## The method",
                          "| S_k | S_k, instruction | activation-weighted | oracle |"} do
  assert(rep.text:find(section, 1, true), "report lacks " .. section)
end
assert(#rep.criteria >= 18, "report checks too few criteria: " .. #rep.criteria)
-- Every criterion has a unique id GROUP.KEY, printed on its line; --require takes ids as well
-- as groups, and a name that is neither, or matches nothing, is an error.
do
  local seen = {}
  for _, c in ipairs(rep.criteria) do
    assert(c.id:match("^(%a+)%.") == c.group, "criterion id " .. c.id .. " is not in group " .. c.group)
    assert(not seen[c.id], "criterion id repeated: " .. c.id)
    seen[c.id] = true
    assert(rep.text:find("(" .. c.id .. "): ", 1, true), "report does not print " .. c.id)
  end
  for _, id in ipairs {"direction.ablated", "direction.induce", "detection.intimacy", "sae.fve"} do
    assert(seen[id], "no criterion " .. id)
  end
  -- Requiring one criterion: passed is that criterion's result, whatever the others'.
  local pass_id, fail_id
  for _, c in ipairs(rep.criteria) do
    if c.ok and not pass_id then pass_id = c.id end
    if not c.ok and not fail_id then fail_id = c.id end
  end
  assert(pass_id and fail_id, "the smoke organism should both meet and miss some criterion")
  assert(build.eval(out, {smoke = true, require = pass_id}).passed == true, "require " .. pass_id)
  assert(build.eval(out, {smoke = true, require = pass_id .. "," .. fail_id}).passed == false, "require " .. fail_id)
  -- criterion_ids lists exactly the report's ids, in order.
  local declared = build.criterion_ids(require("upstream.organism").load(spec))
  assert(#declared == #rep.criteria, ("criterion_ids: %d ids, report %d criteria"):format(#declared, #rep.criteria))
  for i, c in ipairs(rep.criteria) do assert(declared[i] == c.id, "criterion_ids order at " .. c.id) end
  -- The method's measurements are figures, not criteria: no method id or group is accepted.
  for _, bad in ipairs {"bogus", "method", "method.nothing", "method.hugging", "method.hugging.steer_down"} do
    local ok, err = pcall(build.eval, out, {smoke = true, require = "behaviour," .. bad})
    assert(not ok and err:find("--require " .. bad .. ": not a group", 1, true), ("require %s: %s"):format(bad, tostring(err)))
  end
end
-- The method's figures: every case study's top latents, reassured variants and steering both
-- ways are in the report's data and text. Down-steering steers with a latent of the reassuring
-- modifier, never with whatever latent the reassured prompt ranks most negative.
do
  local o3 = build.open(out)
  local seen = 0
  for _, cs in ipairs(rep.data.method.cases) do
    assert(#cs.top == 3 and #cs.reassured >= 1 and #cs.steer_up.rows >= 2, cs.name .. ": method figures missing")
    for _, key in ipairs {"top", "reassured", "steer_up", "steer_down"} do
      assert(rep.text:find("(" .. cs.name .. "." .. key .. "): ", 1, true), "report does not print " .. cs.name .. "." .. key)
    end
    local down = cs.steer_down
    seen = seen + 1
    if down.latent then
      local l = o3.labels[tostring(down.latent)]
      assert(l and l.concept == down.modifier, ("%s: steered latent %d is labelled %s"):format(cs.name, down.latent,
             l and l.concept or "(none)"))
    else
      assert(not down.flipped, cs.name .. ": flipped without a latent")
    end
  end
  assert(seen == 3, "down-steering figures: " .. seen)
  build.close(o3)
end
print(("ok: smoke organism built (loss %.3f -> %.3f), resumed, evaluated (%d criteria)"):format(
  ctx.train.first_loss, ctx.train.last_loss, #rep.criteria))
