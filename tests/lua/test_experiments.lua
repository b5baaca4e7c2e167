-- The published experiments (experiments/*.lua) end to end on a smoke-size model organism:
-- every run completes, its tables parse and its figures are PNGs of the declared size with ink,
-- and the tables' numbers equal direct calls of the bindings (a latent's score from
-- model:attribute, a baseline refusal score from model:run, a Jaccard from two attributions,
-- a mean bottom-latent score). Also: --set routing in all.lua, determinism of a rerun, and
-- misuse raising.
--
-- usage: upstream tests/lua/test_experiments.lua setup ROOT UPSTREAM ORGDIR
--          builds the smoke organism into ORGDIR (upstream organism build --smoke); without
--          that command, links $UPSTREAM_TEST_ORGANISM there; else exits 77 (skipped)
--        upstream tests/lua/test_experiments.lua run ROOT UPSTREAM ORGDIR SCRATCH
--          the tiny random-weight checkpoint always; the organism checks when ORGDIR holds one
local upstream = require "upstream"
local csv = require "upstream.csv"

local mode, root, exe, org, scratch = arg[1], arg[2], arg[3], arg[4], arg[5]
local SKIP = 77

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function exists(p) local f = io.open(p, "rb"); if f then f:close() end; return f ~= nil end
local function read(p) local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s end
local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  return ok == true, code
end

if mode == "setup" then
  os.execute("rm -rf " .. q(org))
  os.execute("mkdir -p " .. q(org:match("^(.*)/[^/]*$") or "."))
  local log = org .. ".log"
  local ok = sh(("%s organism build %s --out %s --smoke > %s 2>&1"):format(q(exe), q(root .. "/experiments/organism/refusal.lua"),
    q(org), q(log)))
  if ok and exists(org .. "/model.safetensors") then print("built the smoke organism in " .. org) os.exit(0) end
  local text = exists(log) and read(log) or ""
  local env = os.getenv("UPSTREAM_TEST_ORGANISM")
  if text:find("unknown command", 1, true) then
    if env and exists(env .. "/model.safetensors") then
      os.execute("rm -rf " .. q(org))
      sh(("ln -s %s %s"):format(q(env), q(org)))
      print("no 'upstream organism' command in this build: using UPSTREAM_TEST_ORGANISM=" .. env)
      os.exit(0)
    end
    print("SKIP: this build has no 'upstream organism build' and UPSTREAM_TEST_ORGANISM is not set")
    os.exit(SKIP)
  end
  io.stderr:write("organism build failed:\n", text, "\n")
  os.exit(1)
end

assert(mode == "run", "usage: test_experiments.lua setup|run ROOT UPSTREAM ORGDIR [SCRATCH]")
local have_org = exists(org .. "/model.safetensors")

local failures, checks = 0, 0
local function check(cond, fmt, ...)
  checks = checks + 1
  if not cond then
    failures = failures + 1
    io.stderr:write("FAIL: ", fmt:format(...), "\n")
  end
  return cond
end
local function close(a, b, tol)
  a, b = tonumber(a), tonumber(b)
  if not a or not b then return false end
  return math.abs(a - b) <= (tol or 1e-5) * math.max(1, math.abs(a), math.abs(b))
end

os.execute("rm -rf " .. q(scratch))
os.execute("mkdir -p " .. q(scratch))
local RES, PLOTS, CACHE = scratch .. "/results", scratch .. "/plots", scratch .. "/cache"

-- Runs an experiment; returns ok, combined output.
local function run(file, sets, extra)
  local cmd = {q(exe), "run", q(root .. "/experiments/" .. file), "--model", q(org), "--quiet",
               "--set", q("results=" .. RES), "--set", q("plots=" .. PLOTS), "--set", q("cache=" .. CACHE)}
  for _, s in ipairs(sets or {}) do cmd[#cmd + 1] = "--set"; cmd[#cmd + 1] = q(s) end
  for _, s in ipairs(extra or {}) do cmd[#cmd + 1] = q(s) end
  local out = scratch .. "/out.txt"
  local ok = sh(table.concat(cmd, " ") .. " > " .. q(out) .. " 2>&1")
  return ok, read(out)
end

-- Jaccard of the top-k sets and Kendall tau-b over their union, written out from the
-- definitions (no library code), to check the sensitivity table against.
local function direct_compare(C, sa, sb, k)
  local va, vb = C.values(sa), C.values(sb)
  local ta, tb = C.head(C.order(va, "top"), k), C.head(C.order(vb, "top"), k)
  local in_a, union, seen, inter = {}, {}, {}, 0
  for _, x in ipairs(ta) do in_a[x] = true end
  for _, x in ipairs(tb) do if in_a[x] then inter = inter + 1 end end
  for _, list in ipairs({ta, tb}) do
    for _, x in ipairs(list) do if not seen[x] then seen[x] = true; union[#union + 1] = x end end
  end
  local conc, disc, ties_a, ties_b = 0, 0, 0, 0
  for i = 1, #union do
    for j = i + 1, #union do
      local da, db = va[union[i] + 1] - va[union[j] + 1], vb[union[i] + 1] - vb[union[j] + 1]
      if da == 0 and db == 0 then -- neither
      elseif da == 0 then ties_a = ties_a + 1
      elseif db == 0 then ties_b = ties_b + 1
      elseif (da > 0) == (db > 0) then conc = conc + 1
      else disc = disc + 1 end
    end
  end
  local n1, n2 = conc + disc + ties_a, conc + disc + ties_b
  return {jaccard = inter / #union, kendall = (n1 > 0 and n2 > 0) and (conc - disc) / math.sqrt(n1 * n2) or 0 / 0}
end

local function latest(kind, name)
  local p = io.popen("ls -1 " .. q((kind == "plots" and PLOTS or RES) .. "/" .. name) .. " 2>/dev/null")
  local last
  for line in p:lines() do last = line end
  p:close()
  return last and ((kind == "plots" and PLOTS or RES) .. "/" .. name .. "/" .. last)
end

local function table_of(dir, name)
  local path = dir .. "/" .. name .. ".csv"
  if not check(exists(path), "%s: missing", path) then return {}, {} end
  local header, rows = csv.decode(read(path))
  local out = {}
  for i, r in ipairs(rows) do
    local rec = {}
    for j, c in ipairs(header) do rec[c] = r[j] end
    out[i] = rec
  end
  check(#out > 0, "%s: no rows", path)
  return out, header
end

-- A PNG: signature, IHDR first with the width and height plot.info reports, and some ink.
local function check_png(path)
  if not check(exists(path), "%s: missing", path) then return end
  local b = read(path)
  check(b:sub(1, 8) == "\137PNG\r\n\26\n", "%s: not a PNG signature", path)
  local len, typ, w, h = string.unpack(">I4c4I4I4", b, 9)
  check(len == 13 and typ == "IHDR", "%s: first chunk is not IHDR", path)
  check(w >= 400 and h >= 300 and w <= 10000 and h <= 10000, "%s: odd size %dx%d", path, w, h)
  local info = upstream.plot.info(path)
  check(info.width == w and info.height == h, "%s: plot.info size differs", path)
  check(info.ink > 0.01 and info.colors > 3, "%s: looks blank (ink %.3f, %d colours)", path, info.ink, info.colors)
  check(info.text and info.text.manifest and info.text.manifest:find('"run_id"', 1, true), "%s: no manifest text chunk", path)
end

local function check_run(name, tables, min_figures)
  local dir = latest("results", name)
  if not check(dir, "%s: no results directory", name) then return nil end
  local m = upstream.json_read(dir .. "/manifest.json")
  check(m.status == "complete", "%s: manifest status %s", name, tostring(m.status))
  check(exists(dir .. "/report.md"), "%s: no report.md", name)
  for _, t in ipairs(tables) do table_of(dir, t) end
  local pdir = latest("plots", name)
  local n = 0
  for _, f in ipairs(m.outputs.figures) do
    check_png(pdir .. "/" .. f)
    n = n + 1
  end
  check(n >= min_figures, "%s: %d figures, expected at least %d", name, n, min_figures)
  return dir, m
end

-- The organism's own facts, for the direct calls.
-- 1. A model standing for a real checkpoint (tests/lua/experiments_tiny.cfg): no organism.json,
-- no direction file (all.lua hands the selected one to the later experiments), two SAEs at the
-- source layer. Its checkpoint's vocabulary outgrows its tokenizer,
-- so nothing is generated.
do
  local cmd = {q(exe), "run", q(root .. "/experiments/all.lua"), "--config", q(root .. "/tests/lua/experiments_tiny.cfg"),
    "--quiet", "--set", q("results=" .. scratch .. "/tiny/results"), "--set", q("plots=" .. scratch .. "/tiny/plots"),
    "--set", q("cache=" .. CACHE), "--set", "max_new_tokens=0", "--set", "only=direction,case_hugging,sensitivity",
    "--set", "steer_k=1", "--set", "alphas=0.5", "--set", "controls=0", "--set", "k=5", "--set", "n_eval=2"}
  local outf = scratch .. "/out.txt"
  ok = sh(table.concat(cmd, " ") .. " > " .. q(outf) .. " 2>&1")
  check(ok, "all.lua on the tiny checkpoint failed:\n%s", read(outf))
  local function last(name)
    local p = io.popen("ls -1 " .. q(scratch .. "/tiny/results/" .. name) .. " 2>/dev/null")
    local l
    for line in p:lines() do l = line end
    p:close()
    return l and (scratch .. "/tiny/results/" .. name .. "/" .. l)
  end
  local ddir, cdir, sdir2 = last("direction"), last("case_hugging"), last("sensitivity")
  if check(ddir and cdir and sdir2, "tiny: missing runs") then
    local m = upstream.json_read(cdir .. "/manifest.json")
    check(m.direction and m.direction.path == ddir .. "/direction.safetensors",
          "tiny: case_hugging did not take the selected direction (%s)", upstream.json_encode(m.direction or {}))
    check(not exists(cdir .. "/planted.csv"), "tiny: a planted table without organism.json")
    local widths = 0
    for _, r in ipairs(table_of(sdir2, "sensitivity")) do
      if r.dimension == "sae_width" then
        widths = widths + 1
        -- The deflated fixture holds the same numbers: every top latent finds itself.
        check(tonumber(r.matched) == 1 and r.top_setting == r.top_reference, "tiny: sae_width row %s / %s", r.matched,
              r.top_setting)
      end
    end
    check(widths == 3, "tiny: %d sae_width rows, expected 3", widths)
    local own = 0
    for _, r in ipairs(table_of(sdir2, "sensitivity")) do
      if r.dimension == "source_layer_sae" then
        own = own + 1
        local m = tonumber(r.matched)
        check(r.setting == "L0" and m and m >= 0 and m <= 1, "tiny: source_layer_sae row %s %s", r.setting, r.matched)
      end
    end
    check(own == 3, "tiny: %d source_layer_sae rows, expected 3", own)
  end
end

if have_org then
  local O = upstream.json_read(org .. "/organism.json")
  local model = upstream.model(org)
  local tok = upstream.tokenizer(org)
  local src, target = O.source_layer, O.target_layer
  local sae = upstream.sae(org .. "/" .. O.sae[tostring(src)])
  local dirfile = upstream.load_safetensors(org .. "/direction.safetensors")
  local direction = upstream.normalize(dirfile.direction)
  local C = dofile(root .. "/experiments/lib/common.lua")

  -- 2. The published set, small, through all.lua (steer_k routed to the case studies only).
  local small = {"steer_k=2", "max_new_tokens=4", "alphas=0,0.5", "controls=1", "n_eval=4", "n_prompts=3", "k=5"}
  local ok, out = run("all.lua", small)
  check(ok, "all.lua failed:\n%s", out)

  local d = check_run("direction", {"direction", "direction_selection", "direction_effects", "direction_effects_summary"}, 2)
  if d then
    check(exists(d .. "/direction.safetensors"), "direction: no direction.safetensors")
    local eff = table_of(d, "direction_effects")
    -- The unsteered refusal score of the first harmful prompt equals model:run's logits scored directly.
    local ids = tok:chat(C.harmful[1])
    local logits = model:run(ids, {logits = "last"}).logits
    local score = upstream.refusal_score(logits, O.refusal_ids)
    check(eff[1].intervention == "none" and close(eff[1].score, score, 1e-4),
          "direction_effects: harmful1 score %s, direct %.9g", tostring(eff[1].score), score)
    check(#eff == 3 * 2 * 4, "direction_effects: %d rows, expected 24 (2 sets x 4 prompts x 3 interventions)", #eff)
  end

  for _, case in ipairs({"hugging", "bacteria", "payment"}) do
    local dir = check_run("case_" .. case, {"baseline", "ranking", "tokens", "steering", "linearity", "summary"}, 5)
    if dir then
      local prompt = C.cases[case].prompt
      local ids = tok:chat(prompt)
      local a = model:attribute(ids, sae, {source = src, target = target, direction = direction})
      local ranking = table_of(dir, "ranking")
      local top = upstream.rank(a.scores, 1, "top")[1]
      check(ranking[1].side == "top" and tonumber(ranking[1].latent) == top.latent,
            "case_%s: top latent %s, model:attribute says %d", case, tostring(ranking[1].latent), top.latent)
      check(close(ranking[1].score, top.score, 1e-5), "case_%s: top score %s, model:attribute says %.9g", case,
            tostring(ranking[1].score), top.score)
      for _, r in ipairs(ranking) do
        local k = tonumber(r.latent)
        check(close(r.score, a.scores:at(k + 1), 1e-5), "case_%s: latent %d score %s vs %.9g", case, k, r.score, a.scores:at(k + 1))
      end
      local logits = model:run(ids, {logits = "last"}).logits
      local score = upstream.refusal_score(logits, O.refusal_ids)
      local base = table_of(dir, "baseline")
      check(close(base[1].score, score, 1e-4), "case_%s: baseline score %s, direct %.9g", case, tostring(base[1].score), score)
      local steer = table_of(dir, "steering")
      local kinds, latents = {}, {}
      for _, r in ipairs(steer) do
        kinds[r.kind] = (kinds[r.kind] or 0) + 1
        if r.kind == "latent" then latents[r.latent] = true end
        -- predicted_dR = alpha * sum_t RG[t, k] from the attribution.
        if r.kind ~= "baseline" and r.predicted_dR ~= "" then
          local k = tonumber(r.latent)
          local s = 0
          for t = 1, #ids do s = s + a.rg:at(t, k + 1) end
          check(close(r.predicted_dR, tonumber(r.alpha) * s, 1e-3), "case_%s: predicted_dR %s vs alpha*sum RG %.9g", case,
                r.predicted_dR, tonumber(r.alpha) * s)
        end
      end
      local nlat = 0
      for _ in pairs(latents) do nlat = nlat + 1 end
      check(nlat == 2, "case_%s: --set steer_k=2 gave %d steered latents", case, nlat)
      check(kinds.baseline == 1 and (kinds.control or 0) == 2, "case_%s: %d baseline and %d control rows", case,
            kinds.baseline or 0, kinds.control or 0)
      check(#table_of(dir, "tokens") == 8 * #ids, "case_%s: tokens table has %d rows, expected %d", case,
            #table_of(dir, "tokens"), 8 * #ids)
    end
  end

  local sdir = check_run("sensitivity", {"reference", "sensitivity", "sensitivity_summary"}, 6)
  if sdir then
    local rows = table_of(sdir, "sensitivity")
    local checked = false
    for _, r in ipairs(rows) do
      check(tonumber(r.k) == 5, "sensitivity: --set k=5 not applied (k = %s)", tostring(r.k))
      if r.dimension == "paraphrase" and r.case == "hugging" and r.setting == "hugging_para1" and not checked then
        local a1 = model:attribute(tok:chat(C.cases.hugging.prompt), sae, {source = src, target = target, direction = direction})
        local a2 = model:attribute(tok:chat(C.cases.hugging.paraphrases[1]), sae, {source = src, target = target,
                                   direction = direction})
        local c = direct_compare(C, a1.scores, a2.scores, 5)
        check(close(r.jaccard, c.jaccard, 1e-6), "sensitivity: Jaccard %s, direct %.6f", r.jaccard, c.jaccard)
        check(close(r.kendall, c.kendall, 1e-6), "sensitivity: Kendall %s, direct %.6f", r.kendall, c.kendall)
        checked = true
      end
      if r.setting == r.reference then
        check(tonumber(r.jaccard) == 1, "sensitivity: %s vs itself has Jaccard %s", r.setting, r.jaccard)
      end
    end
    check(checked, "sensitivity: no hugging_para1 row")
  end

  local ndir = check_run("negative_latents", {"bottom_latents", "steering", "negative_summary"}, 5)
  if ndir then
    local bl = table_of(ndir, "bottom_latents")
    local k = tonumber(bl[1].latent)
    local mean = 0
    for i = 1, 3 do
      local a = model:attribute(tok:chat(C.harmful[i]), sae, {source = src, target = target, direction = direction})
      mean = mean + a.scores:at(k + 1) / 3
    end
    check(bl[1].set == "harmful" and close(bl[1].mean_score, mean, 1e-5), "negative_latents: latent %d mean score %s, direct %.9g",
          k, tostring(bl[1].mean_score), mean)
    check(tonumber(bl[1].n_prompts) == 3, "negative_latents: --set n_prompts=3 not applied")
  end

  local adir = check_run("all", {"runs"}, 0)
  if adir then
    local runs = table_of(adir, "runs")
    check(#runs == 6, "all: %d runs listed", #runs)
    check(#table_of(adir, "planted") == 3, "all: the planted table should have a row per case study")
    -- headline: steer_k = 2 latents x the one non-zero alpha (0.5) x 3 case studies.
    check(#table_of(adir, "headline") == 6, "all: the headline table should have 6 rows")
    for _, r in ipairs(runs) do check(r.status == "complete", "all: %s %s", r.experiment, r.status) end
  end

  -- 3. A thin file on its own, twice: byte-identical tables (the second from the grid cache).
  for i = 1, 2 do
    ok, out = run("case_payment.lua", {"steer_k=1", "max_new_tokens=2", "alphas=-0.5,0.5", "controls=1"})
    check(ok, "case_payment.lua (run %d) failed:\n%s", i, out)
  end
  do
    local p = io.popen("ls -1 " .. q(RES .. "/case_payment"))
    local dirs = {}
    for line in p:lines() do dirs[#dirs + 1] = RES .. "/case_payment/" .. line end
    p:close()
    if check(#dirs == 3, "case_payment: %d runs, expected 3", #dirs) then
      for _, t in ipairs({"ranking", "steering", "baseline", "linearity"}) do
        check(read(dirs[2] .. "/" .. t .. ".csv") == read(dirs[3] .. "/" .. t .. ".csv"), "case_payment: %s.csv differs between reruns", t)
      end
    end
  end

  -- 4. The direction direction.lua saved, taken by a case study with --set direction_file.
  if d then
    local chosen = table_of(d, "direction")[1]
    ok, out = run("case_bacteria.lua", {"direction_file=" .. d .. "/direction.safetensors", "steer_k=1", "max_new_tokens=0",
                                        "alphas=0.5", "controls=0"})
    check(ok, "case_bacteria.lua with direction_file failed:\n%s", out)
    local m = upstream.json_read(latest("results", "case_bacteria") .. "/manifest.json")
    check(m.direction and m.direction.from == "file" and m.direction.layer == tonumber(chosen.layer) and
          m.direction.pos == tonumber(chosen.pos), "case_bacteria: direction_file not used (manifest direction %s)",
          upstream.json_encode(m.direction or {}))
  end

  -- 5. Misuse raises with a message.
  ok, out = run("all.lua", {"no_such_param=1"})
  check(not ok and out:find("no_such_param", 1, true), "all.lua accepted an unknown --set:\n%s", out)
  ok, out = run("all.lua", {"only=nope"})
  check(not ok and out:find("nope", 1, true), "all.lua accepted only=nope:\n%s", out)
  ok, out = run("sensitivity.lua", {"cases=nope"})
  check(not ok and out:find("unknown case", 1, true), "sensitivity accepted cases=nope:\n%s", out)
else
  print("SKIPPED the organism checks: no organism at " .. org .. " (see the setup test)")
end

if failures > 0 then
  io.stderr:write(("%d check(s) failed\n"):format(failures))
  os.exit(1)
end
print(("experiments: all %d checks passed"):format(checks))
