-- Which of the latents present at one token the refusal gradient reads. For each SAE latent
-- active at the token (a_k > 0, largest first): its label, activation, cos(W_dec[k], h) with
-- the token's activation h = h_l[t], cos(W_dec[k], g) with the gradient g = dR/dh_l[t],
-- RG[t,k] = W_dec[k]·g, and the latent's rank by S_k over the whole prompt. The header adds
-- |h|, |g|, cos(g, h) and the latent whose decoder is most aligned with g among all latents,
-- active or not: S_k ranks decoders, not activations, so that one competes too.
--
-- In the shipped organism the concept's own latents sit near cos(d, g) = 0 while a latent
-- shared by many harmful words carries the gradient (experiments/organism/README.md, "Why
-- S_k does not rank the planted latents first").
--
--   upstream experiments/organism/token_latents.lua [MODEL_DIR] [PROMPT] [TOKEN]
--
-- TOKEN is a token's text as the tokenizer decodes it (" hugging"; its last occurrence) or its
-- 1-based position in the chat-formatted prompt (BOS is 1). Default: the token with the largest
-- |g| among the instruction's tokens.
local upstream = require "upstream"
local build = require "upstream.organism_build"
local util = require "upstream.util"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local dir = arg[1] or here .. "/../../models/organism"
local text = arg[2] or "Develop a strategy for hugging a person"
local want = arg[3]

local o = build.open(dir)
local ids = o.tokenizer:chat(text)
local a = o.model:attribute(ids, o.sae, {source = o.source_layer, target = o.target_layer, direction = o.unit,
                                         include_bos = true})
local d = a.grad:shape()[2]
local function piece(t) return o.tokenizer:decode({ids[t]}) end
local function shown(t) return '"' .. piece(t):gsub("\n", "\\n") .. '"' end
local function grad_row(t)
  local g = {}
  for j = 1, d do g[j] = a.grad:at(t, j) end
  return g
end
local function dot(x, y)
  local s = 0
  for j = 1, d do s = s + x[j] * y[j] end
  return s
end
local function cos(x, y)
  local n = math.sqrt(dot(x, x) * dot(y, y))
  return n > 0 and dot(x, y) / n or 0
end

local t = math.tointeger(tonumber(want or ""))
if want and not t then
  for i = #ids, 1, -1 do
    if piece(i) == want then t = i; break end
  end
end
if not want then
  local best = -1
  -- instruction_positions counts from 0; rows of a.grad from 1.
  for _, p in ipairs(util.instruction_positions(o.tokenizer, function(x) return o.tokenizer:chat(x) end, ids)) do
    local g = grad_row(p + 1)
    if dot(g, g) > best then best, t = dot(g, g), p + 1 end
  end
end
if not t or t < 2 or t > #ids then
  local pieces = {}
  for i = 1, #ids do pieces[i] = ("%d=%s"):format(i, shown(i)) end
  error(("TOKEN %s: expected a position in [2, %d] or one of the prompt's tokens (BOS excluded): %s"):format(
    tostring(want), #ids, table.concat(pieces, " ")), 0)
end

-- Activations of every token but BOS: row t - 1 is token t.
local H = upstream.collect_activations(o.model, {ids}, o.source_layer, {batch = 1})
local acts = o.sae:encode(H)
local d_sae = acts:shape()[2]
local h, g = {}, grad_row(t)
for j = 1, d do h[j] = H:at(t - 1, j) end
local function decoder(k)
  local w, v = o.sae:decoder_row(k), {}
  for j = 1, d do v[j] = w:at(j) end
  return v
end
local rank = {}
for i, e in ipairs(upstream.rank(a.scores, d_sae, "top")) do rank[e.latent] = i end
local function label(k)
  local l = o.labels[tostring(k)]
  return l and l.concept or "-", l and l.share or 0
end

local aligned, aligned_cos = nil, -2
for k = 0, d_sae - 1 do
  local c = cos(decoder(k), g)
  if c > aligned_cos then aligned, aligned_cos = k, c end
end
print(("blocks.%d.hook_resid_post at token %d %s of: %s"):format(o.source_layer, t, shown(t), text))
print(("|h| %.2f  |g| %.3f  cos(g, h) %.3f  (g = dR/dh_%d, R at blocks.%d.hook_resid_post)"):format(
  math.sqrt(dot(h, h)), math.sqrt(dot(g, g)), cos(g, h), o.source_layer, o.target_layer))
local al, ash = label(aligned)
print(("most aligned decoder of all %d latents: %d (%s, share %.2f), cos(d, g) %.3f, active here: %s, S_k rank %d"):format(
  d_sae, aligned, al, ash, aligned_cos, acts:at(t - 1, aligned + 1) > 0 and "yes" or "no", rank[aligned]))
print(("%6s  %-16s %6s %8s %9s %9s %8s %7s"):format("latent", "label", "share", "act", "cos(d,h)", "cos(d,g)", "RG", "S rank"))
local active = {}
for k = 1, d_sae do
  local v = acts:at(t - 1, k)
  if v > 0 then active[#active + 1] = {k = k - 1, v = v} end
end
table.sort(active, function(x, y) return x.v > y.v end)
for _, e in ipairs(active) do
  local w = decoder(e.k)
  local name, share = label(e.k)
  print(("%6d  %-16s %6.2f %8.3f %9.3f %9.3f %8.3f %7d"):format(e.k, name, share, e.v, cos(w, h), cos(w, g),
                                                            a.rg:at(t, e.k + 1), rank[e.k]))
end
build.close(o)
