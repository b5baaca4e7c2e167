-- Where each latent's score comes from: per token t, RG[t,k] = W_dec[k]·dR/dh_l[t] (l the
-- organism's SAE layer, R at its target layer along its direction), for the latents named on
-- the command line and the prompt's top 5 by S_k, with S_k (their mean over every token but
-- BOS) in the last row. Decoder rows have norm 1, so RG[t,k] / |g_t| (gradient_profile.lua)
-- is the cosine between latent k's decoder and the gradient at token t.
--
--   upstream experiments/organism/token_scores.lua [MODEL_DIR] [PROMPT] [LATENT ...]
local upstream = require "upstream"
local build = require "upstream.organism_build"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local dir = arg[1] or here .. "/../../models/organism"
local text = arg[2] or "Develop a strategy for hugging a person"
local o = build.open(dir)
local d_sae = o.sae:info().d_sae
local latents = {}
for i = 3, #arg do
  local k = math.tointeger(tonumber(arg[i]))
  if not k or k < 0 or k >= d_sae then error(("latent %s: expected an integer in [0, %d)"):format(arg[i], d_sae), 0) end
  latents[#latents + 1] = k
end
local ids = o.tokenizer:chat(text)
local a = o.model:attribute(ids, o.sae, {source = o.source_layer, target = o.target_layer, direction = o.unit})
for _, e in ipairs(upstream.rank(a.scores, 5, "top")) do latents[#latents + 1] = e.latent end
print(("RG[t,k] = W_dec[k]·dR/dh_%d[t], R at blocks.%d.hook_resid_post: %s"):format(o.source_layer, o.target_layer, text))
local head = {("%-16s"):format("token")}
for _, k in ipairs(latents) do
  local l = o.labels[tostring(k)]
  head[#head + 1] = ("%12s"):format(("%d%s"):format(k, l and l.concept and (":" .. l.concept:sub(1, 4)) or ""))
end
print(table.concat(head))
for t = 1, #ids do
  local row = {("%-16s"):format((o.tokenizer:decode({ids[t]}):gsub("\n", "\\n")))}
  for _, k in ipairs(latents) do row[#row + 1] = ("%12.3f"):format(a.rg:at(t, k + 1)) end
  print(table.concat(row))
end
local last = {("%-16s"):format("S_k")}
for _, k in ipairs(latents) do last[#last + 1] = ("%12.4f"):format(a.scores:at(k + 1)) end
print(table.concat(last))
build.close(o)
