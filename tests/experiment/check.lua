-- Checks one finished run of experiments/example.lua on the tiny test model (settings
-- tests/experiment/upstream.cfg): every output exists and parses, the report shows every table
-- and figure, the PNGs are real figures carrying the manifest, and the tables hold the numbers
-- the C API gives for the same inputs.
-- usage: upstream tests/experiment/check.lua SOURCE_DIR RUN_RESULTS_DIR RUN_PLOTS_DIR
local upstream = require "upstream"
local csv = require "upstream.csv"
local root, results, plots = arg[1], arg[2], arg[3]

local passed, failed = 0, 0
local function check(name, cond, detail)
  if cond then passed = passed + 1
  else failed = failed + 1; print("FAIL " .. name .. (detail and (": " .. tostring(detail)) or "")) end
end
local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a"); f:close(); return s
end
local function table_of(name)
  local text = read(results .. "/" .. name .. ".csv")
  check(name .. ".csv exists", text ~= nil)
  if not text then return {} end
  local header, rows = csv.decode(text)
  local out = {}
  for i, r in ipairs(rows) do
    local rec = {}
    for j, h in ipairs(header) do rec[h] = r[j] end
    out[i] = rec
  end
  check(name .. ".csv has rows", #out > 0)
  return out
end
local function close(a, b, tol)
  return math.abs(a - b) <= tol * math.max(1, math.abs(a), math.abs(b))
end

-- Manifest
local m = upstream.json_read(results .. "/manifest.json")
check("manifest complete", m.status == "complete", m.status)
check("manifest experiment hash", m.experiment.sha256 == upstream.sha256(read(m.experiment.file)))
check("manifest model hash", m.model.sha256 == upstream.hash_path(root .. "/tests/golden/tiny_f32"))
check("manifest SAE", #m.saes == 1 and m.saes[1].layer == 1 and
      m.saes[1].sha256 == upstream.hash_file(root .. "/tests/fixtures/sae/gemmascope_stored/params.npz"))
check("manifest tokenizer hash", m.tokenizer.sha256 == upstream.hash_file(root .. "/tests/tokenizer/tiny/tokenizer.json"))
check("manifest versions", m.versions.lua and m.versions.openblas and m.versions.libpng and m.versions.cairo)
check("manifest git", type(m.git.revision) == "string")
check("manifest threads", m.threads == 1, m.threads)
check("manifest timings", #m.timings > 5)
check("manifest params", m.params.top_k ~= nil)

-- Report: every table and figure the manifest lists is shown, by a path that resolves.
local report = read(results .. "/report.md") or ""
for _, t in ipairs(m.outputs.tables) do
  check("report links " .. t, report:find("(" .. t .. ")", 1, true) ~= nil)
end
check("figures listed", #m.outputs.figures >= 8, #m.outputs.figures)
for _, f in ipairs(m.outputs.figures) do
  local rel = report:match("!%[[^%]]*%]%(([^)]*" .. f:gsub("%p", "%%%0") .. ")%)")
  check("report embeds " .. f, rel ~= nil)
  if rel then check("embedded path resolves " .. f, read(results .. "/" .. rel) ~= nil, rel) end
  -- The figure test: decodes, size, drawn content, manifest in the text chunks.
  local ok, info = pcall(upstream.plot.info, plots .. "/" .. f)
  check("png decodes " .. f, ok, info)
  if ok then
    -- (the square figures, matrix and the linearity scatter, are cut to their content: narrower)
    check("png size " .. f, info.width >= 900 and info.height >= 800, info.width .. "x" .. info.height)
    check("png has ink " .. f, info.ink > 0.02 and info.ink < 0.9, info.ink)
    check("png has colours " .. f, info.colors >= 16, info.colors)
    local okj, pm = pcall(upstream.json_decode, info.text.manifest or "")
    check("png manifest " .. f, okj and pm.run_id == m.run_id and pm.experiment.sha256 == m.experiment.sha256)
    check("png run_id chunk " .. f, info.text.run_id == m.run_id)
  end
end
check("ranking figure", report:find("ranking_p1_L1.png", 1, true) ~= nil)
check("dose figure", report:find("dose_p1_L1_score.png", 1, true) ~= nil)

-- Tables against the C API.
local model <close> = upstream.model(root .. "/tests/golden/tiny_f32")
local tok <close> = upstream.tokenizer(root .. "/tests/tokenizer/tiny")
local sae <close> = upstream.sae(root .. "/tests/fixtures/sae/gemmascope_stored/params.npz")
local dir = upstream.load_safetensors(results .. "/direction.safetensors").direction
check("direction is unit", dir and close(select(2, upstream.normalize(dir)), 1, 1e-5))
local prompts = table_of("prompts")
local ranking = table_of("ranking")
local steering = table_of("steering")
local tokens = table_of("tokens")
local refusal = {tok:id("I")}
local k = tonumber(m.params.top_k)
local n_rank, n_steer, n_tok = 0, 0, 0
for _, p in ipairs(prompts) do
  local ids = tok:chat(p.text)
  check("prompt tokens " .. p.label, tonumber(p.tokens) == #ids)
  local res = model:attribute(ids, sae, {source = 1, target = 3, direction = dir})
  local want = {top = upstream.rank(res.scores, k, "top"), bottom = upstream.rank(res.scores, k, "bottom")}
  for _, r in ipairs(ranking) do
    if r.prompt == p.label then
      local w = want[r.side][tonumber(r.rank)]
      n_rank = n_rank + 1
      check(("ranking %s %s %s latent"):format(p.label, r.side, r.rank), tonumber(r.latent) == w.latent, r.latent .. " vs " .. w.latent)
      check(("ranking %s %s %s score"):format(p.label, r.side, r.rank), close(tonumber(r.score), w.score, 1e-6), r.score .. " vs " .. w.score)
    end
  end
  for _, r in ipairs(tokens) do
    if r.prompt == p.label then
      n_tok = n_tok + 1
      local v = res.rg:at(tonumber(r.t) + 1, tonumber(r.latent) + 1)
      check(("tokens %s t=%s k=%s"):format(p.label, r.t, r.latent), close(tonumber(r.rg), v, 1e-6), r.rg .. " vs " .. v)
    end
  end
  -- Steering: one cell per (latent, alpha) of this prompt, recomputed alone without a cache.
  for _, r in ipairs(steering) do
    if r.prompt == p.label and r.kind ~= "baseline" and r.where == "all" and n_steer < 6 then
      n_steer = n_steer + 1
      local rows = upstream.grid{model = model, prompts = {ids}, refusal_ids = refusal, sae = sae,
        latents = {tonumber(r.latent)}, alphas = {tonumber(r.alpha)}, layer = 1,
        objective = {layer = 3, direction = dir}}:run()
      local cell = rows[2]
      local what = ("steering %s latent %s alpha %s"):format(p.label, r.latent, r.alpha)
      check(what .. " score", close(tonumber(r.score), cell.score, 1e-5), r.score .. " vs " .. cell.score)
      check(what .. " dR", close(tonumber(r.dR), cell.dR, 1e-4), r.dR .. " vs " .. cell.dR)
      check(what .. " predicted_dR", close(tonumber(r.predicted_dR), cell.predicted_dR, 1e-4))
      check(what .. " baseline", close(tonumber(r.score) - tonumber(r.dscore), rows[1].score, 1e-5))
    end
  end
end
check("ranking rows checked", n_rank == 2 * k * #prompts, n_rank)
check("steering rows checked", n_steer >= 6, n_steer)
check("token rows checked", n_tok > 0)
local controls, wheres = 0, {}
for _, r in ipairs(steering) do
  if r.kind == "control" then controls = controls + 1 end
  wheres[r.where] = (wheres[r.where] or 0) + 1
end
check("random controls present", controls > 0)
check("positions axis", wheres.all and wheres.prompt and wheres.all == wheres.prompt + #prompts,
      ("all %s prompt %s"):format(tostring(wheres.all), tostring(wheres.prompt)))
check("dose figure per position rule", report:find("dose_p1_L1_score_prompt.png", 1, true) ~= nil)

print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
