-- upstream.stats: comparisons of latent rankings, for sensitivity studies (how much does the
-- top-k change with the layer, the prompt, the score variant?).
--
--   stats.rank_compare(a, b, k) -> {jaccard = J, kendall = tau, n = m, overlap = c}
--     a, b: Attributions (their .scores) or Tensors (d_sae) of latent scores, same length.
--     jaccard: |top_k(a) ∩ top_k(b)| / |top_k(a) ∪ top_k(b)| (top = largest scores).
--     kendall: Kendall's tau-b between a and b over the m latents of that union (every pair
--              counted once; ties in either score count as neither concordant nor
--              discordant), NaN when m < 2. Restricting to the union keeps it O(k²) on
--              65k-latent SAEs and asks what matters: do the two settings agree on the
--              latents either of them puts first?
-- Error rule: misuse raises.
local core = require "upstream.core"
local M = {}

local function scores_of(x, what)
  if type(x) == "table" and x.scores then return x.scores end
  if type(x) == "userdata" then return x end
  error(("rank_compare: %s must be an Attribution or a Tensor of scores"):format(what), 3)
end

function M.rank_compare(a, b, k)
  local sa, sb = scores_of(a, "a"), scores_of(b, "b")
  if #sa ~= #sb then error(("rank_compare: %d scores against %d"):format(#sa, #sb), 2) end
  if math.type(k) ~= "integer" or k < 1 then error("rank_compare: k must be a positive integer", 2) end
  local ta, tb = core.rank(sa, k, "top"), core.rank(sb, k, "top")
  local union, in_a, list = {}, {}, {}
  for _, r in ipairs(ta) do in_a[r.latent] = true; union[r.latent] = true end
  local overlap = 0
  for _, r in ipairs(tb) do
    if in_a[r.latent] then overlap = overlap + 1 end
    union[r.latent] = true
  end
  for latent in pairs(union) do list[#list + 1] = latent end
  table.sort(list)
  local conc, disc, ties_a, ties_b = 0, 0, 0, 0
  for i = 1, #list do
    for j = i + 1, #list do
      local da = sa:at(list[i] + 1) - sa:at(list[j] + 1)
      local db = sb:at(list[i] + 1) - sb:at(list[j] + 1)
      if da == 0 and db ~= 0 then ties_a = ties_a + 1
      elseif db == 0 and da ~= 0 then ties_b = ties_b + 1
      elseif da * db > 0 then conc = conc + 1
      elseif da * db < 0 then disc = disc + 1 end
    end
  end
  local denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
  return {jaccard = overlap / #list, kendall = denom > 0 and (conc - disc) / denom or 0 / 0, n = #list, overlap = overlap}
end

return M
