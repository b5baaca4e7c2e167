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

local rep = build.eval(out, {smoke = true})
for _, section in ipairs {"## Behaviour", "## Case studies", "## SAE", "## The method"} do
  assert(rep.text:find(section, 1, true), "report lacks " .. section)
end
assert(#rep.criteria >= 20, "report checks too few criteria: " .. #rep.criteria)
print(("ok: smoke organism built (loss %.3f -> %.3f), resumed, evaluated (%d criteria)"):format(
  ctx.train.first_loss, ctx.train.last_loss, #rep.criteria))
