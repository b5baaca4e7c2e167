-- Direction selection's lazy mode (the default) against full mode (core/method/select.h): on
-- the shipped organism and on random checkpoints, under several filter settings, lazy picks
-- exactly full's candidate and every score both modes computed has the same bits. Lazy never
-- runs the layers the cut drops, and stops induce/KL at the winner. The comparison is shown
-- able to fail: a selection whose batches differ (another batch size) differs in some bits.
--   upstream tests/lua/test_select_modes.lua SOURCE_DIR
local upstream = require "upstream"
local src = assert(arg[1], "usage: test_select_modes.lua SOURCE_DIR")

-- Mismatches between a lazy and a full result, as a list of messages (empty: exact).
local function differences(lazy, full)
  local out = {}
  local function say(...) out[#out + 1] = string.format(...) end
  local lb, fb = lazy.best, full.best
  if (lb == nil) ~= (fb == nil) or (lb and (lb.pos ~= fb.pos or lb.layer ~= fb.layer)) then
    say("winner: lazy %s, full %s", lb and (lb.pos .. "/" .. lb.layer) or "none", fb and (fb.pos .. "/" .. fb.layer) or "none")
  end
  if lazy.base_harmful ~= full.base_harmful or lazy.base_harmless ~= full.base_harmless then say("baselines differ") end
  for i, s in ipairs(lazy.scores) do
    local f = full.scores[i]
    for _, k in ipairs {"bypass", "induce", "kl"} do
      if s[k] ~= nil and s[k] ~= f[k] then say("candidate %d/%d %s: lazy %.17g, full %s", s.pos, s.layer, k, s[k], tostring(f[k])) end
    end
  end
  return out
end

local n_checked, n_deep = 0, 0
-- Runs both modes under each filter setting and asserts they agree; returns full's default result.
local function check(name, model, cand, harmful, harmless, refusal)
  local n_layers = model:config().n_layers
  local base = {refusal_ids = refusal, mode = "full"}
  local full = model:select_direction(cand, harmful, harmless, base)
  -- Settings that make the winner come early, late or never in bypass order: the defaults,
  -- KL limits at full's quartiles, an induce floor at full's median, a KL nothing meets, and
  -- half the layers.
  local kls, induces = {}, {}
  for _, s in ipairs(full.scores) do
    if s.kl then kls[#kls + 1] = s.kl end
    if s.induce then induces[#induces + 1] = s.induce end
  end
  table.sort(kls)
  table.sort(induces)
  local q = function(list, f) return list[math.floor(#list * f) + 1] end
  local settings = {{}, {max_kl = q(kls, 0.25), min_induce = -1e9}, {max_kl = q(kls, 0.5), min_induce = -1e9},
                    {min_induce = q(induces, 0.5), max_kl = 1e9}, {max_kl = -1},
                    {max_layer_frac = 0.5, max_kl = q(kls, 0.75), min_induce = -1e9}}
  for k, set in ipairs(settings) do
    local opts = {refusal_ids = refusal, max_kl = set.max_kl, min_induce = set.min_induce, max_layer_frac = set.max_layer_frac}
    local f = model:select_direction(cand, harmful, harmless, setmetatable({mode = "full"}, {__index = opts}))
    local passes = {bypass = 0, filters = 0}
    opts.progress = function(p) passes[p.pass] = passes[p.pass] + 1 end
    local l = model:select_direction(cand, harmful, harmless, opts)
    assert(l.mode == "lazy" and f.mode == "full", "modes")
    local diff = differences(l, f)
    assert(#diff == 0, ("%s, setting %d: lazy and full differ:\n  %s"):format(name, k, table.concat(diff, "\n  ")))
    assert(#differences(f, full) == 0 or k > 1, "full mode is not repeatable")
    -- Lazy ran no late layer, scored bypass for the rest, and stopped at the winner.
    local cut = (set.max_layer_frac or 0.8) * n_layers
    local n_bypass, n_filters = 0, 0
    for _, s in ipairs(l.scores) do
      if s.layer >= cut - 1e-9 then assert(s.bypass == nil and s.dropped == "layer,unscored", name .. ": a late layer ran") end
      if not s.dropped:find("unscored") then n_bypass = n_bypass + 1 end -- run (a zero candidate keeps NaN)
      if s.induce then n_filters = n_filters + 1 end
      if s.dropped:find("bypass_only") then assert(s.induce == nil and s.kl == nil and l.best, "bypass_only with scores") end
    end
    assert(passes.bypass == n_bypass and passes.filters == n_filters, name .. ": progress counts")
    if l.best then assert(l.n_kept == 1, "lazy keeps its winner only") end
    n_checked = n_checked + 1
    if l.best and n_filters > 1 then n_deep = n_deep + 1 end -- the winner was not the lowest bypass
    print(("%-22s setting %d: winner %-6s lazy scored %2d bypass, %2d induce/KL of %d candidates"):format(name, k,
      l.best and (l.best.pos .. "/" .. l.best.layer) or "none", n_bypass, n_filters, #l.scores))
  end
  return full
end

-- The shipped organism, on the experiments' prompt lists.
do
  local C = dofile(src .. "/experiments/lib/common.lua")
  local dir = src .. "/models/organism"
  local model <close> = upstream.model(dir)
  local tok <close> = upstream.tokenizer(dir)
  local function ids(list)
    local out = {}
    for i, p in ipairs(list) do out[i] = tok:chat(p) end
    return out
  end
  local harmful, harmless = ids(C.harmful), ids(C.harmless)
  local cand = model:directions(harmful, harmless, {positions = tok:post_instruction_count()})
  -- Scored on 8 + 8 of them (the candidates come from all), to keep the test short.
  harmful, harmless = table.move(harmful, 1, 8, 1, {}), table.move(harmless, 1, 8, 1, {})
  local refusal = {}
  for _, w in ipairs {"I", "Sorry"} do
    local t = tok:encode(w)
    if #t == 1 then refusal[#refusal + 1] = t[1] end
  end
  if #refusal == 0 then refusal = {tok:encode("I")[1]} end
  local full = check("organism", model, cand, harmful, harmless, refusal)
  -- The comparison can fail: other batches (3 rows, not 8) move some score's last bits.
  local other = model:select_direction(cand, harmful, harmless, {refusal_ids = refusal, mode = "full", batch = 3})
  assert(#differences(other, full) > 0, "a selection with other batches gave the same bits: the check cannot fail")
end

-- Random checkpoints: a few seeds and shapes, prompts of varied lengths (left padding).
for seed = 1, 3 do
  local cfg = {d_model = 32, d_mlp = 64, n_layers = 4 + seed, n_heads = 4, n_kv_heads = 2, head_dim = 8, vocab_size = 64}
  local model <close> = upstream.new_model(cfg, {seed = seed})
  local rng = seed * 7919
  local function rand(n) rng = (rng * 1103515245 + 12345) % 2147483648 return rng % n end
  local function prompts(lo, n)
    local out = {}
    for i = 1, n do
      local p = {1}
      for _ = 1, 4 + rand(9) do p[#p + 1] = lo + rand(28) end
      out[i] = p
    end
    return out
  end
  local harmful, harmless = prompts(3, 11), prompts(33, 9)
  local cand = model:directions(harmful, harmless, {positions = 3})
  check(("random seed %d"):format(seed), model, cand, harmful, harmless, {2})
end

assert(n_deep > 0, "no setting made lazy mode look past the lowest bypass")
print(("select modes: %d settings agree, %d of them with a winner past the lowest bypass"):format(n_checked, n_deep))
