-- Could a dictionary of concept latents meet the method criteria at a source layer? Replace
-- the SAE by an oracle with one decoder row per concept: v_c = mean of h_l over the last tokens of
-- the concept's phrases minus the mean over every token (held-out corpus), unit length. Score
-- each row as S_k does (v_c · mean over positions but BOS of dR/dh_l[t]) and report, for each
-- case study, the planted concept's rank among all concepts (1 = top) and, for each reassured
-- prompt, the modifier's rank from the bottom. A concept the oracle does not rank first would
-- not lead a dictionary that holds every concept's mean direction either: what leads is the
-- concept whose direction raises R most, present in the prompt or not. At the SAE's layer the
-- planted row is also ranked against the SAE's own latents: would a pure concept latent beat
-- the latents the SAE has?
--
--   upstream experiments/organism/concept_oracle.lua [MODEL_DIR] [N_PROMPTS] [POSITIONS]
--
-- Layers: 0 to the objective's layer − 1 (blocks.{l}.hook_resid_post). N_PROMPTS (default
-- 1000): held-out prompts the concept means are taken over. POSITIONS: "all" (every position
-- but BOS, as the criterion's S_k; default) or "instruction" (the instruction's tokens only).
local upstream = require "upstream"
local organism = require "upstream.organism"
local build = require "upstream.organism_build"
local util = require "upstream.util"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local dir = arg[1] or here .. "/../../models/organism"
local n_prompts = math.tointeger(tonumber(arg[2] or 1000))
if not n_prompts or n_prompts < 1 then error("N_PROMPTS: expected a positive integer, got " .. tostring(arg[2]), 0) end
local positions = arg[3] or "all"
if positions ~= "all" and positions ~= "instruction" then
  error("POSITIONS: expected all or instruction, got " .. positions, 0)
end

local o = build.open(dir)
local spec = organism.load(o.spec_path)
local records = {}
for _, r in ipairs(build.recipe_corpus(spec, o.info.recipe)) do
  if r.split == "heldout" and #records < n_prompts then records[#records + 1] = r end
end

-- Concepts by oracle score for one prompt at one layer, and the prompt's ids.
local function ranking(cd, layer, text)
  local ids = o.tokenizer:chat(text)
  local g = o.model:gradient(ids, {source = layer, target = o.target_layer, direction = o.unit})
  local rows = {} -- rows of g (1-based; row 1 is BOS)
  if positions == "all" then
    for t = 2, #ids do rows[#rows + 1] = t end
  else
    for _, p in ipairs(util.instruction_positions(o.tokenizer, function(x) return o.tokenizer:chat(x) end, ids)) do
      rows[#rows + 1] = p + 1
    end
  end
  return build.concept_ranking(cd, build.mean_rows(g, rows)), ids
end

local function place(list, name, side)
  return build.concept_place(list, name, side) or error(("concept %s has no tokens in the first %d held-out prompts: "
    .. "pass a larger N_PROMPTS"):format(name, #records), 0)
end

-- At the SAE's layer: where the oracle row of a concept (score s) would rank among the SAE's
-- latents by S_k (decoder rows have norm 1, as the oracle's), 1 = above all of them.
local function rank_among_latents(ids, s)
  local a = o.model:attribute(ids, o.sae, {source = o.source_layer, target = o.target_layer, direction = o.unit})
  local above = 0
  for k = 1, a.scores:shape()[1] do
    if a.scores:at(k) > s then above = above + 1 end
  end
  return above + 1
end

local cases = organism.case_studies(spec)
for layer = 0, o.target_layer - 1 do
  local cd = build.concept_directions(spec, o.model, o.tokenizer, records, layer)
  if layer == 0 then
    print(("concept oracle: %d concepts, %d held-out prompts, R at blocks.%d.hook_resid_post, positions: %s"):format(
      #cd.names, #records, o.target_layer, positions))
    print(("rank of the planted concept (top) and of each reassuring modifier (bottom), 1 = first; (SAE n): at the "
           .. "SAE's layer, %d, with positions all, the planted row's rank among the SAE's latents by S_k"):format(
      o.source_layer))
  end
  local cells = {}
  for _, c in ipairs(cases) do
    local list, ids = ranking(cd, layer, c.prompt)
    local tops = {}
    for _, p in ipairs(c.planted) do
      local r = place(list, p, "top")
      tops[#tops + 1] = ("%s %d"):format(p, r)
      if layer == o.source_layer and positions == "all" then
        tops[#tops] = tops[#tops] .. (" (SAE %d)"):format(rank_among_latents(ids, list[r].score))
      end
    end
    local bottoms = {}
    for _, f in ipairs(c.flips) do
      bottoms[#bottoms + 1] = tostring(place((ranking(cd, layer, f.instruction)), f.modifier, "bottom"))
    end
    cells[#cells + 1] = ("%s: %s (first: %s); modifiers %s"):format(c.name, table.concat(tops, ", "), list[1].name,
                                                                 table.concat(bottoms, "/"))
  end
  print(("layer %d  %s"):format(layer, table.concat(cells, " | ")))
end
build.close(o)
