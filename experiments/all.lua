-- experiments/all.lua: the full published set, one run of each —
--   direction, case_hugging, case_bacteria, case_payment, sensitivity, negative_latents —
-- then an index run (results/all/<run>/report.md) linking their reports.
--
--   upstream run experiments/all.lua                                # the organism
--   upstream run experiments/all.lua --model DIR                    # another checkpoint
--   upstream run experiments/all.lua --set only=direction,case_hugging --set max_new_tokens=32
--
-- A --set reaches every experiment that has that param (steer_k, alphas, max_new_tokens,
-- controls, ...) or declares that prompt set (harmful=FILE, harmless=FILE, borderline=FILE:
-- a prompt file, read before any experiment starts; docs/lua-api.md, "Prompt files"), and is
-- a setting for all of them otherwise (threads, results, cache, ...); `only` names the
-- experiments to run. The model, tokenizer and SAEs are loaded once for the whole set. The
-- defaults are small (a few coefficients, a dozen generated tokens) so the set runs in seconds
-- on the organism; --set enlarges them.
local upstream = require "upstream"
local core = require "upstream.core"
local csv = require "upstream.csv"
local util = require "upstream.util"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local C = dofile(here .. "/lib/common.lua")
local case_study = dofile(here .. "/lib/case_study.lua")

local runs = {
  {name = "direction", E = dofile(here .. "/lib/direction.lua")},
  {name = "case_hugging", E = case_study("hugging")},
  {name = "case_bacteria", E = case_study("bacteria")},
  {name = "case_payment", E = case_study("payment")},
  {name = "sensitivity", E = dofile(here .. "/lib/sensitivity.lua")},
  {name = "negative_latents", E = dofile(here .. "/lib/negative_latents.lua")},
}

-- Fields of upstream.experiment that --set may override (lua/upstream/experiment/setup.lua).
local fields = {model = true, sae = true, source_layers = true, target_layer = true, direction = true, seed = true}

local experiment_lib = require "upstream.experiment"
local opts = core.run_options or {}
local all_sets = opts.sets or {}
local only
local routed = {} -- routed[name] = {"k=v", ...}
local common_sets = {}
for _, r in ipairs(runs) do routed[r.name] = {} end
for _, kv in ipairs(all_sets) do
  local key, value = kv:match("^([^=]+)=(.*)$")
  if not key then error(("--set %s: expected KEY=VALUE"):format(kv), 0) end
  if key == "only" then
    only = {}
    for n in (value .. ","):gmatch("([^,]*),") do if n ~= "" then only[n] = true end end
    for n in pairs(only) do
      local ok = false
      for _, r in ipairs(runs) do ok = ok or r.name == n end
      if not ok then error(("--set only: no experiment '%s' in the set"):format(n), 0) end
    end
  else
    local pkey = key:match("^params%.(.+)$") or key
    local set = key:match("^prompts%.(.+)$") or key
    local takers, prompt_takers = {}, 0
    for _, r in ipairs(runs) do
      if r.E.decl.params and r.E.decl.params[pkey] ~= nil then takers[#takers + 1] = r.name
      elseif r.E.decl.prompts and r.E.decl.prompts[set] ~= nil then
        takers[#takers + 1] = r.name
        prompt_takers = prompt_takers + 1
      end
    end
    -- A prompt file is read now, so a bad one fails before the first experiment loads a model.
    if prompt_takers > 0 and not fields[key] then
      experiment_lib.prompt_file("--set " .. kv, value, os.getenv("PWD") or ".")
    end
    if key:match("^prompts%.") and #takers == 0 then
      error(("--set %s: no experiment of the set declares the prompt set '%s'"):format(key, set), 0)
    end
    if #takers > 0 and not fields[key] then
      for _, n in ipairs(takers) do table.insert(routed[n], kv) end
    else
      common_sets[#common_sets + 1] = kv -- a field or a setting: every experiment takes it
    end
  end
end

-- A model without a direction file of its own would have every experiment select one again:
-- the later ones take the direction direction.lua selected (unless direction_file is set).
local user_direction = false
for _, kv in ipairs(all_sets) do user_direction = user_direction or kv:match("^direction_file=") ~= nil end

-- One checkpoint, tokenizer and SAE set for the whole set: each experiment reuses what the
-- first one loaded (lua/upstream/experiment/resources.lua, share_loaded).
experiment_lib.share_loaded(true)

local index = {}
local t_all = util.clock()
for _, r in ipairs(runs) do
  if not only or only[r.name] then
    local sets = {}
    for _, kv in ipairs(common_sets) do sets[#sets + 1] = kv end
    for _, kv in ipairs(routed[r.name]) do sets[#sets + 1] = kv end
    core.run_options = core.run_options or {}
    core.run_options.sets = sets
    local dir = C.main(r.E)
    local m = core.json_read(dir .. "/manifest.json")
    if r.name == "direction" and not user_direction and not C.exists(m.model.path .. "/direction.safetensors") then
      for _, other in ipairs(runs) do
        if other.E.decl.params.direction_file ~= nil then
          table.insert(routed[other.name], "direction_file=" .. dir .. "/direction.safetensors")
        end
      end
    end
    index[#index + 1] = csv.record({experiment = r.name, run_id = m.run_id, status = m.status, seconds = m.ms and m.ms / 1000,
      tables = #m.outputs.tables, figures = #m.outputs.figures, results = dir},
      {"experiment", "run_id", "status", "seconds", "tables", "figures", "results"})
    collectgarbage()
  end
end

-- The index: one run of its own, whose report links every experiment's.
core.run_options.sets = common_sets
local X = C.setup(upstream.experiment{name = "all", title = "The published set",
  description = "One run of each published experiment; each has its own report.md, tables and figures."})
local links = {}
for _, row in ipairs(index) do
  -- results/all/<run>/ -> results/<experiment>/<run>/report.md
  links[#links + 1] = ("- **%s**: [%s/%s/report.md](../../%s/%s/report.md)"):format(row.experiment, row.experiment,
    row.run_id, row.experiment, row.run_id)
end
X:note(table.concat(links, "\n"))
X:table("runs", index, {title = "Runs of this set"})

-- A table's records (header names as keys), or nil when the run did not write it.
local function records(path)
  if not C.exists(path) then return nil end
  local f = assert(io.open(path))
  local header, rows = csv.decode(f:read("a"))
  f:close()
  local out = {}
  for i, r in ipairs(rows) do
    local rec = {}
    for j, h in ipairs(header) do
      local v = r[j]
      if v == "true" then rec[h] = true elseif v == "false" then rec[h] = false
      else rec[h] = tonumber(v) or (v ~= "" and v or nil) end
    end
    out[i] = rec
  end
  return out
end

-- The headline of each case study: its top latents removed (most negative coefficient) and
-- added (most positive), against the unsteered model.
local headline = {}
for _, row in ipairs(index) do
  for _, r in ipairs(records(row.results .. "/summary.csv") or {}) do
    headline[#headline + 1] = csv.record({case = r.case, latent = r.latent, name = r.name, alpha_frac = r.alpha_frac,
      baseline_score = r.baseline_score, score = r.score, baseline_refused = r.baseline_refused, refused = r.refused,
      text = r.text}, {"case", "latent", "name", "alpha_frac", "baseline_score", "score", "baseline_refused", "refused",
      "text"})
  end
end
if #headline > 0 then
  X:table("headline", headline, {title = "Case studies: the top latents removed (alpha < 0) and added (alpha > 0); " ..
    "alpha_frac in units of the residual norm", show = 30})
end

-- On the organism: where each case study's planted cause ranked (its best latent).
local planted = {}
for _, row in ipairs(index) do
  local best, order = {}, {}
  for _, r in ipairs(records(row.results .. "/planted.csv") or {}) do
    local key = r.layer .. "|" .. r.concept
    if not best[key] then order[#order + 1] = key end
    if not best[key] or r.rank < best[key].rank then
      best[key] = {case = row.experiment, layer = r.layer, concept = r.concept, latent = r.latent, rank = r.rank,
                   n_latents = r.n_latents, score = r.score}
    end
  end
  for _, key in ipairs(order) do
    planted[#planted + 1] = csv.record(best[key], {"case", "layer", "concept", "latent", "rank", "n_latents", "score"})
  end
end
if #planted > 0 then
  X:table("planted", planted, {title = "The planted cause of each case study: rank of its best latent (1 = most upstream of refusal)"})
end
X:log("the set took %.0f s", util.clock() - t_all)
C.finish(X)
experiment_lib.share_loaded(false)
