-- What a run leaves for people to read (tests/experiment/outputs_exp.lua on the tiny test
-- model): report.md tables at four significant digits while the CSVs keep %.9g; steering
-- alphas exactly as requested (0.1, 1.3, not float32's 0.100000001, 1.29999995); manifest
-- timings in whole milliseconds; user records' columns in the order given (upstream.csv.row)
-- and alphabetical for a plain record; the ranking's score_kind column and a second label for
-- a prompt attributed again; a label naming another prompt raises.
-- usage: upstream tests/experiment/outputs_test.lua SOURCE_DIR UPSTREAM_EXE
local upstream = require "upstream"
local csv = require "upstream.csv"
local util = require "upstream.util"
local root, exe = arg[1] or ".", arg[2]
assert(exe, "usage: outputs_test.lua SOURCE_DIR UPSTREAM_EXE")

local t = dofile(root .. "/tests/experiment/harness.lua")
local check = t.check
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local tmp = os.tmpname()
os.remove(tmp)
upstream.mkdirs(tmp)
local cmd = ("%s run %s --config %s --quiet --run-id r --set results=%s --set plots=%s --set cache=%s 2>&1"):format(
  q(exe), q(root .. "/tests/experiment/outputs_exp.lua"), q(root .. "/tests/experiment/upstream.cfg"),
  q(tmp .. "/results"), q(tmp .. "/plots"), q(tmp .. "/cache"))
local p = io.popen(cmd)
local out = p:read("a")
local ok = p:close()
check("run succeeds", ok, out)
local dir = tmp .. "/results/outputs/r"

local function table_of(name)
  local text = util.read_file(dir .. "/" .. name .. ".csv") or ""
  local header, rows = csv.decode(text)
  local recs = {}
  for i, r in ipairs(rows) do
    recs[i] = {}
    for j, h in ipairs(header or {}) do recs[i][h] = r[j] end
  end
  return header or {}, recs, text
end

-- Ranking: the score variant named in each row; the second attribution under its own label.
local header, ranking = table_of("ranking")
check("ranking columns", table.concat(header, ",") == "prompt,layer,target,score_kind,side,rank,latent,name,score,sum_rg",
      table.concat(header, ","))
local kinds = {}
for _, r in ipairs(ranking) do
  local key = r.prompt .. "/" .. tostring(r.score_kind)
  kinds[key] = (kinds[key] or 0) + 1
end
check("gradient rows under p1", kinds["p1/gradient"] == 6, kinds["p1/gradient"])
check("cosine rows under their label", kinds["hug_cosine/cosine"] == 6, kinds["hug_cosine/cosine"])
local _, prompts = table_of("prompts")
check("prompts: the second label is a row of its own", #prompts == 4 and prompts[1].label == "p1" and
      prompts[2].label == "hug_cosine" and prompts[1].text == prompts[2].text, #prompts)
check("an unlabelled attribution keeps the prompt's first label", out:find("unlabelled again: p1", 1, true) ~= nil, out)
check("an automatic label skips one given to another prompt", out:find("unlabelled new prompt: p3", 1, true) ~= nil, out)
check("a label naming another prompt raises", out:find("label conflict: .*label 'hug_cosine' already names another prompt") ~= nil,
      out)

-- Steering: alphas as requested, in the rows and the CSV.
local _, steering, stext = table_of("steering")
local alphas = {}
for _, r in ipairs(steering) do if r.kind ~= "baseline" then alphas[r.alpha] = true end end
check("alphas exact in the CSV", alphas["0.1"] and alphas["1.3"] and alphas["-2"], stext:sub(1, 400))
check("no float32 alphas", not stext:find("1.29999995", 1, true) and not stext:find("0.100000001", 1, true))

-- User records: the order given; a plain record's keys alphabetically.
local h1 = table_of("ordered")
check("csv.row keeps its order", table.concat(h1, ",") == "prompt,zeta,alpha", table.concat(h1, ","))
local h2 = table_of("plain")
check("a plain record is alphabetical", table.concat(h2, ",") == "alpha,middle,zeta", table.concat(h2, ","))

-- Numbers: full precision in the CSV, four significant digits in the report.
local _, _, ntext = table_of("numbers")
check("CSV keeps %.9g", ntext == "x,n,w,tiny,big\n0.0422762185,7,20,1.2345678e-05,123456.789\n", ntext)
local report = util.read_file(dir .. "/report.md") or ""
check("report at four significant digits", report:find("| 0.04228 | 7 | 20 | 1.235e-05 | 1.235e+05 |", 1, true) ~= nil,
      report:match("| x |[^\n]*\n[^\n]*\n[^\n]*"))
local first = ranking[1]
local shown = ("%.4g"):format(tonumber(first.score))
check("ranking scores at four digits in the report",
      report:find("| " .. shown .. " |", 1, true) ~= nil and not report:find(first.score, 1, true), first.score)

-- Manifest: timings in whole milliseconds, no 17-digit seconds.
local mtext = util.read_file(dir .. "/manifest.json") or ""
local m = upstream.json_decode(mtext)
local all_ms = #m.timings > 5
for _, t in ipairs(m.timings) do all_ms = all_ms and math.type(t.ms) == "integer" and t.seconds == nil end
check("timings in whole milliseconds", all_ms, mtext:match('"timings": %b[]'))
check("run time in whole milliseconds", math.type(m.ms) == "integer" and m.seconds == nil, tostring(m.ms))

os.execute("rm -rf " .. q(tmp))
t.finish()
