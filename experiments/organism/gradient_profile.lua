-- Where the refusal gradient sits in a prompt: for each token, the norm of g_t = dR/dh_l[t]
-- (l the organism's SAE layer, R at its target layer along its direction) and its cosine with
-- the activation h_l[t]. RMSNorm ignores scale, so a gradient orthogonal to h (cosine 0)
-- cannot see the features that make up the token's own activation.
--
--   upstream experiments/organism/gradient_profile.lua [MODEL_DIR] [PROMPT]
local upstream = require "upstream"
local build = require "upstream.organism_build"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local dir = arg[1] or here .. "/../../models/organism"
local text = arg[2] or "Develop a strategy for hugging a person"
local o = build.open(dir)
local ids = o.tokenizer:chat(text)
local a = o.model:attribute(ids, o.sae, {source = o.source_layer, target = o.target_layer, direction = o.unit,
                                         include_bos = true})
local H = upstream.collect_activations(o.model, {ids}, o.source_layer, {batch = 1}) -- rows: every token but BOS
local d = a.grad:shape()[2]
print(("gradient of R at blocks.%d.hook_resid_post w.r.t. blocks.%d.hook_resid_post: %s"):format(o.target_layer,
      o.source_layer, text))
print(("%3s  %-16s %8s %8s %8s"):format("t", "token", "|h|", "|g|", "cos(g,h)"))
for t = 2, #ids do
  local gg, hh, gh = 0, 0, 0
  for j = 1, d do
    local g, h = a.grad:at(t, j), H:at(t - 1, j)
    gg, hh, gh = gg + g * g, hh + h * h, gh + g * h
  end
  local piece = o.tokenizer:decode({ids[t]}):gsub("\n", "\\n")
  print(("%3d  %-16s %8.2f %8.3f %8.3f"):format(t - 1, piece, math.sqrt(hh), math.sqrt(gg), gh / math.sqrt(gg * hh)))
end
build.close(o)
