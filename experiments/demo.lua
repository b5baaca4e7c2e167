-- demo.lua: the seed method end to end on the random-weight test checkpoint.
--
-- Until the model organism ships (see README), this is upstream's main job: it loads the
-- tiny Gemma-2 checkpoint written by tests/reference/gemma2_ref.py, builds a stand-in
-- "refusal direction" as a difference of means between two groups of token sequences, takes
-- the gradient of <h_L, r> with respect to the layer-1 residual stream, ranks the latents of
-- the layer-1 SAE fixture by it, and checks the first-order prediction by steering.
-- Random weights mean the latents carry no meaning: this shows the machinery, not a finding.
local upstream = require "upstream"

local root = arg and arg[1] or "."
local model <close> = upstream.model(root .. "/tests/golden/tiny_f32")
local sae <close> = upstream.sae(root .. "/tests/fixtures/sae/saelens_jumprelu")
local cfg = model:config()
local info = sae:info()
print(("model: %d layers, d_model %d; SAE: %s, %d latents at %s"):format(
  cfg.n_layers, cfg.d_model, info.architecture, info.d_sae, info.hook))

-- Two groups of prompts as token ids (BOS = 2); the "direction" separates them at layer 3.
local function seq(seed, n)
  local ids, x = {2}, seed
  for i = 2, n do x = (x * 1103515245 + 12345) % 2147483648; ids[i] = 3 + x % 300 end
  return ids
end
local group_a, group_b = {}, {}
for i = 1, 8 do group_a[i] = seq(i, 10 + i % 3); group_b[i] = seq(100 + i, 10 + i % 4) end
local candidates = model:directions(group_a, group_b, {positions = 1})
local target = 3
local r = {}
for j = 1, cfg.d_model do r[j] = candidates:at(1, target + 1, j) end
local direction, norm = upstream.normalize(r)
print(("direction: difference of means at blocks.%d.hook_resid_pre, norm %.4f"):format(target, norm))

local prompt = seq(7, 16)
local result = model:attribute(prompt, sae, {source = info.layer, target = target, direction = direction})
print(("R = <h_%d[last], r> = %.4f"):format(target, result.R))
print("top latents (raise R)         bottom latents (lower R)")
local top, bottom = upstream.rank(result.scores, 5, "top"), upstream.rank(result.scores, 5, "bottom")
for i = 1, 5 do
  print(("  %4d  %+.5f               %4d  %+.5f"):format(top[i].latent, top[i].score, bottom[i].latent, bottom[i].score))
end

-- Linearity: adding alpha * W_dec[k] at every position should move R by ~ alpha * sum_t RG[t,k].
local k = top[1].latent
local slope = 0
for t = 1, #prompt do slope = slope + result.rg:at(t, k + 1) end
print(("first-order prediction for latent %d: dR/dalpha = %.5f"):format(k, slope))
