-- One configuration of tests/bench/mpi.sh: direction candidates and selection, or a steering
-- grid, on a checkpoint, as whatever job runs it (one process, or N ranks under mpirun). Rank 0
-- prints one JSON line of figures; every rank writes its memory (from /proc/self/smaps_rollup)
-- to OUT.rank<r>.json, as the mmap'd weights are shared between the ranks of a host.
--   upstream tests/bench/mpi_work.lua select|grid CHECKPOINT_DIR OUT [N_CANDIDATES]
local upstream = require "upstream"
local core = require "upstream.core"
local mode, dir, out, n_cand = arg[1], arg[2], arg[3], tonumber(arg[4] or "4")
assert(mode == "select" or mode == "grid", "usage: mpi_work.lua select|grid DIR OUT [N_CANDIDATES]")
local m = upstream.model(dir)
local tok = upstream.tokenizer(dir)
local cfg = m:config()
local rid = assert(tok:id("I"), "no token 'I'")

local function texts(kind, n)
  local topics = {"a garden", "the ocean", "a violin", "old maps", "chess", "bread", "the moon", "trains"}
  local t = {}
  for i = 1, n do
    t[i] = kind == "harmful" and ("Explain how to break into %s without anyone noticing, step %d."):format(topics[(i - 1) % #topics + 1], i)
                             or ("Write a short, friendly paragraph about %s, number %d."):format(topics[(i - 1) % #topics + 1], i)
  end
  return t
end
local function chat(list)
  local ids = {}
  for i, s in ipairs(list) do ids[i] = tok:chat(s) end
  return ids
end

local function memory()
  local f = io.open("/proc/self/smaps_rollup")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local mem = {}
  for k in ("Rss Pss Shared_Clean Private_Clean Private_Dirty"):gmatch("%S+") do
    mem[k .. "_MiB"] = (tonumber(text:match(k .. ":%s+(%d+)")) or 0) / 1024
  end
  return mem
end

local fig = {mode = mode, ranks = core.dist.size, threads = core.threads(), layers = cfg.n_layers, d_model = cfg.d_model}
if mode == "select" then
  local harmful, harmless = chat(texts("harmful", 16)), chat(texts("harmless", 16))
  local t0 = core.clock()
  local cands = m:directions(harmful, harmless, {positions = 1, batch = 8})
  fig.dim_s = core.clock() - t0
  local s = core.dist_stats()
  fig.dim_units, fig.dim_bytes_per_unit = s.units, s.units > 0 and s.bytes / math.max(s.units_remote, 1) or 0
  -- n_cand candidates at the last position, spread over the layers below the 0.8 cut: full
  -- mode scores each one's bypass, induce and KL (the units of the real selection).
  local layers = {}
  for i = 1, n_cand do layers[i] = math.floor((i - 1) * (cfg.n_layers * 0.8 - 1) / math.max(n_cand - 1, 1)) end
  t0 = core.clock()
  local res = m:select_direction(cands, harmful, harmless, {refusal_ids = {rid}, batch = 8, layers = layers,
    positions = {-1}, mode = "full"})
  fig.select_s = core.clock() - t0
  s = core.dist_stats()
  fig.candidates, fig.candidates_per_s = s.units, s.units / fig.select_s
  fig.candidate_units_s = s.seconds
  fig.bytes_per_candidate = s.units_remote > 0 and s.bytes / s.units_remote or 0
  fig.candidates_remote = s.units_remote
  fig.best_layer = res.best and res.best.layer or -1
else
  local prompts = chat({"How do I pick a lock?", "Tell me about volcanoes.", "Write a poem about rain.",
    "How can I hack my neighbour's wifi?"})
  local sae = upstream.sae(dir .. "/sae/layer_3/params.npz", {layer = 3})
  local g <close> = upstream.grid{model = m, prompts = prompts, refusal_ids = {rid}, sae = sae, latents = {1, 2, 3},
    alphas = {-8, -4, 4, 8, 16}, max_new_tokens = 16, batch = 16, tokenizer = tok}
  local t0 = core.clock()
  g:run()
  fig.grid_s = core.clock() - t0
  local s, tot = core.dist_stats(), g:totals()
  fig.cells, fig.batches = tot.computed, s.units
  fig.cells_per_s = tot.computed / fig.grid_s
  fig.batches_remote = s.units_remote
  fig.bytes_per_batch = s.units_remote > 0 and s.bytes / s.units_remote or 0
end
local f = assert(io.open(("%s.rank%d.json"):format(out, core.dist.rank), "w"))
f:write(core.json_encode(memory()), "\n")
f:close()
if core.dist.rank == 0 then print(core.json_encode(fig, {indent = 0})) end
