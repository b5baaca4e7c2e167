-- The experiment library's pieces on their own: CSV, JSON, paths, --set values, settings
-- (registry, patterns, lines), run directories, PNG content measures, steering rows' alphas,
-- the report's number format.
-- usage: upstream tests/experiment/library_test.lua SOURCE_DIR
local upstream = require "upstream"
local csv = require "upstream.csv"
local util = require "upstream.util"
local config = require "upstream.config"
local report = require "upstream.report"
local root = arg[1] or "."

local t = dofile(root .. "/tests/experiment/harness.lua")
local check = t.check

-- An error raised in the library names the experiment's line, not the library's, also when Lua
-- shortened the library's long path to "...tail" (a clone under a deep directory).
do
  local libdir = debug.getinfo(util.where, "S").source:match("^@(.*)/[^/]*$")
  local long = libdir .. "/experiment/attribution.lua"
  for _, id in ipairs({long, "..." .. long:sub(-56), "..." .. long:sub(-40)}) do
    local ok, err = pcall(util.guarded, function() error(id .. ":84: the SAE reads layer 2", 0) end)
    check("guarded strips the library's position " .. id, not ok and not err:find("attribution.lua", 1, true)
          and err:find("the SAE reads layer 2$") ~= nil, err)
  end
  local ok, err = pcall(util.guarded, function() error(".../me/study/hug.lua:3: mine", 0) end)
  check("guarded keeps a user's shortened position", not ok and err:find("hug.lua:3: mine", 1, true) ~= nil, err)
end

-- CSV: quoting round-trips; numbers keep float32 precision; column order is the record's.
do
  local rows = {csv.record({b = 'say "hi", then\nleave', a = 1, c = 0.1}, {"b", "a", "c"}),
                csv.record({b = "plain", a = -2, c = 0 / 0, d = true}, {"b", "a", "c"})}
  local text = csv.encode(rows)
  check("csv header order", text:match("^[^\n]*") == "b,a,c,d", text:match("^[^\n]*"))
  local header, back = csv.decode(text)
  check("csv decode header", #header == 4)
  check("csv quotes round-trip", back[1][1] == 'say "hi", then\nleave', back[1][1])
  check("csv nan", back[2][3] == "nan")
  check("csv boolean and missing", back[2][4] == "true" and back[1][4] == "")
  local f32 = upstream.normalize({3, 4}):at(1)          -- 0.6 in float32
  check("csv %.9g round-trips float32", upstream.normalize({tonumber(csv.format(f32)), 0.8}):at(1) == f32)
  check("csv integer", csv.format(7) == "7" and csv.format(7.0) == "7")
end

-- JSON: sorted keys (the same value always gives the same text), arrays, null, errors.
do
  local a = upstream.json_encode({z = 1, a = {3, 2, 1}, m = {}, n = upstream.json_null}, {indent = 0})
  check("json sorted compact", a == '{"a":[3,2,1],"m":[],"n":null,"z":1}', a)
  local back = upstream.json_decode('{"x": [1, null, 2.5], "y": {"k": "v"}}')
  check("json decode", #back.x == 3 and back.x[2] == upstream.json_null and back.x[3] == 2.5 and back.y.k == "v")
  local ok, err = pcall(upstream.json_decode, '{"x": }', "thing.json")
  check("json error position", not ok and err:match("^thing%.json:1:%d+:") ~= nil, err)
  ok, err = pcall(upstream.json_encode, {f = print})
  check("json rejects functions", not ok and err:match("cannot encode") ~= nil, err)
  check("json exact doubles", upstream.json_decode(upstream.json_encode(0.1)) == 0.1)
end

-- Paths and values.
do
  check("normalize", util.normalize("/a/./b/../c//d") == "/a/c/d" and util.normalize("a/../..") == "..")
  check("expand relative", util.expand("x/y", "/base") == "/base/x/y")
  check("expand home", util.expand("~/q", "/base") == (os.getenv("HOME") or "") .. "/q")
  check("relative path", report.relative("/r/results/e/1", "/r/plots/e/1/f.png") == "../../../plots/e/1/f.png")
  local v = util.parse_value("1,2", nil)
  check("parse list", type(v) == "table" and v[1] == 1 and v[2] == 2)
  check("parse list of one", util.parse_value("3", {1, 2})[1] == 3)
  check("parse number", util.parse_value("2.5") == 2.5 and math.type(util.parse_value("4")) == "integer")
  check("parse bool", util.parse_value("false") == false)
  check("parse string stays string", util.parse_value("12", "a") == "12")
  check("suggest", util.suggest("sorce_layers", {"source_layers", "seed"}):match("source_layers") ~= nil)
  check("suggest transposition", util.suggest("modles", {"model", "models"}):match("'models'") ~= nil)
end

-- Settings: the test file's registry, paths relative to it, --set, SAE patterns, lines.
do
  local file = root .. "/tests/experiment/upstream.cfg"
  local cfg = config.load{path = file}
  check("settings model", cfg.model == "tiny" and cfg.threads == 1)
  local m = config.model(cfg, "tiny")
  check("model path relative to the file", m.path:match("/tests/golden/tiny_f32$") ~= nil and m.path:sub(1, 1) == "/", m.path)
  check("tokenizer path", m.tokenizer:match("/tests/tokenizer/tiny$") ~= nil, m.tokenizer)
  check("built-in organism kept", cfg.models.organism ~= nil and cfg.saes.organism ~= nil)
  local p = config.sae_path(cfg, "fixture", 1)
  check("sae pattern", p:match("/tests/fixtures/sae/gemmascope_stored/params%.npz$") ~= nil, p)
  check("sae organism pattern", config.sae_path(cfg, "organism", 2):match("/models/organism/sae/layer_2/params%.npz$") ~= nil)
  local ok, err = pcall(config.sae_path, cfg, "fixture", 2)
  check("sae layer not listed", not ok and err:match("no layer 2") ~= nil, err)
  local cfg2 = config.load{path = file, sets = {{key = "threads", value = "3"}, {key = "models.tiny.path", value = "/elsewhere"}}}
  check("--set settings", cfg2.threads == 3 and cfg2.models.tiny.path == "/elsewhere")
  ok, err = pcall(config.model, cfg, "/no/such/dir")
  check("unknown model", not ok and err:match("neither in the settings' registry") ~= nil, err)
  local ok2, tree, lines = pcall(upstream.settings, file)
  check("settings lines", ok2 and lines["models.tiny.path"] == 10 and lines["saes.fixture.layers.1"] == 25,
        ok2 and tostring(lines["models.tiny.path"]) .. " " .. tostring(lines["saes.fixture.layers.1"]) or tree)
end

-- The shipped example settings parse and resolve GemmaScope paths with the canonical L0s.
do
  local cfg = config.load{path = root .. "/upstream.cfg.example"}
  local p16 = config.sae_path(cfg, "gemmascope-2b-res-16k", 5)
  check("example 16k layer 5", p16:match("/gemma%-scope%-2b%-pt%-res/layer_5/width_16k/average_l0_68/params%.npz$") ~= nil, p16)
  local p65 = config.sae_path(cfg, "gemmascope-2b-res-65k", 25)
  check("example 65k layer 25", p65:match("/layer_25/width_65k/average_l0_93/params%.npz$") ~= nil, p65)
  check("example has 26 layers of l0", #cfg.saes["gemmascope-2b-res-16k"].l0 == 26 and #cfg.saes["gemmascope-2b-res-65k"].l0 == 26)
  check("example organism", cfg.models.organism.path == root:gsub("/$", "") .. "/models/organism" or
        cfg.models.organism.path:match("/models/organism$") ~= nil, cfg.models.organism.path)
  check("example default model", cfg.model == "organism" and cfg.models["gemma-2-2b-it"].defaults.sae == "gemmascope-2b-res-16k")
end

-- Run directories: mkdir claims a name once; mkdirs makes parents and accepts existing ones.
do
  local base = os.tmpname()
  os.remove(base)
  check("mkdirs", upstream.mkdirs(base .. "/a/b") == true)
  check("mkdirs again", upstream.mkdirs(base .. "/a/b") == true)
  check("mkdir claims", upstream.mkdir(base .. "/a/run") == true)
  local ok, _, why = upstream.mkdir(base .. "/a/run")
  check("mkdir refuses a taken name", ok == nil and why == "exists")
  util.write_atomic(base .. "/a/run/x.txt", "hello")
  check("atomic write", util.read_file(base .. "/a/run/x.txt") == "hello")
  -- A blank figure has no ink; a drawn one has.
  local blank = base .. "/blank.png"
  upstream.plot.bars{path = blank, values = {0}, labels = {""}, title = ""}
  local drawn = base .. "/drawn.png"
  upstream.plot.bars{path = drawn, values = {1, -2, 3}, labels = {"a", "b", "c"}, title = "t"}
  local ib, id = upstream.plot.info(blank), upstream.plot.info(drawn)
  check("ink measures content", id.ink > ib.ink and id.colors > 16, ("%g %g %d"):format(ib.ink, id.ink, id.colors))
  os.execute("rm -rf '" .. base .. "'")
end

-- Ranking comparisons.
do
  local a = upstream.normalize({5, 4, 3, 2, 1, 0})
  local b = upstream.normalize({5, 4, 3, 2, 1, 0})
  local c = upstream.normalize({0, 1, 2, 3, 4, 5})
  local same, rev = upstream.rank_compare(a, b, 3), upstream.rank_compare(a, c, 3)
  check("rank_compare identical", same.jaccard == 1 and same.kendall == 1 and same.n == 3)
  check("rank_compare disjoint", rev.jaccard == 0 and rev.n == 6 and rev.kendall == -1,
        ("%g %g %d"):format(rev.jaccard, rev.kendall, rev.n))
  local d = upstream.normalize({5, 4, 0, 3, 2, 1})   -- top-3 {0, 1, 3} vs {0, 1, 2}
  local r = upstream.rank_compare(a, d, 3)
  check("rank_compare partial", r.overlap == 2 and math.abs(r.jaccard - 0.5) < 1e-12, r.jaccard)
end

-- Steering:series finds the grid's float32 alphas from the doubles the experiment gave.
do
  local E = require "upstream.experiment"
  local f32 = function(x) return (string.unpack("<f", string.pack("<f", x))) end
  local rows = {{intervention = 1, prompt = 1, score = -1}}
  for _, a in ipairs({-1.3, 0, 12.3834343}) do
    rows[#rows + 1] = {intervention = 2, prompt = 1, latent = 7, alpha = f32(a), score = a}
  end
  local s = setmetatable({experiment = {label = function() return "" end}, latents = {7}, controls = {},
                          alphas = {12.3834343, -1.3, 0}, grid_rows = rows, layer = 1}, E.Steering)
  local series = s:series("score")
  check("series sorted alphas", series[1].x[1] == -1.3 and series[1].x[3] == 12.3834343)
  check("series finds float32 alphas", series[1].y[1] ~= false and series[1].y[3] ~= false and
        math.abs(series[1].y[3] - f32(12.3834343)) < 1e-5, tostring(series[1].y[3]))
end

-- Steering:rows carries each alpha as the experiment gave it, not the grid's float32 value.
do
  local E = require "upstream.experiment"
  local f32 = function(x) return (string.unpack("<f", string.pack("<f", x))) end
  local rows = {{intervention = 1, prompt = 1, score = -1}}
  for _, a in ipairs({0.1, 1.3, -2}) do rows[#rows + 1] = {intervention = 2, prompt = 1, latent = 7, alpha = f32(a)} end
  local X = {label = function() return "" end, latent_url = function() return nil end}
  local s = setmetatable({experiment = X, latents = {7}, controls = {}, is_control = {}, alphas = {0.1, 1.3, -2},
                          grid_rows = rows, layer = 1, prompt_labels = {"p1"}}, E.Steering)
  local got = s:rows()
  check("rows: baseline has no alpha", got[1].alpha == nil)
  check("rows: alphas as requested", got[2].alpha == 0.1 and got[3].alpha == 1.3 and got[4].alpha == -2,
        ("%.17g %.17g"):format(got[2].alpha, got[3].alpha))
  check("rows: alphas in the CSV", csv.encode(got, {"alpha"}) == "alpha\n\n0.1\n1.3\n-2\n", csv.encode(got, {"alpha"}))
end

-- csv.row: a record whose columns come in argument order, nil values kept as empty cells.
do
  local text = csv.encode({csv.row("zeta", 1, "alpha", nil, "mid", "m")})
  check("csv.row order", text == "zeta,alpha,mid\n1,,m\n", text)
  check("csv.row odd arguments", not pcall(csv.row, "a", 1, "b"))
  check("csv.row column names", not pcall(csv.row, 1, 2))
end

-- The report's numbers: four significant digits; whole numbers and non-numbers as the CSV has them.
do
  local r = report.readable
  check("readable 4 digits", r(0.0422762185) == "0.04228" and r(-1.29999995) == "-1.3" and r(1.2345678e-5) == "1.235e-05",
        r(0.0422762185) .. " " .. r(-1.29999995) .. " " .. r(1.2345678e-5))
  check("readable whole", r(20.0) == "20" and r(7) == "7" and r(123456789012) == "123456789012" and r(2.5e12) == "2.5e+12")
  check("readable others", r(0 / 0) == "nan" and r(true) == "true" and r("0.0422762185") == "0.0422762185" and r(nil) == "")
end

-- Hashing: a file's digest is sha256sum's.
do
  check("sha256 of bytes", upstream.sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  local f = root .. "/tests/experiment/upstream.cfg"
  check("hash_file = sha256 of contents", upstream.hash_file(f) == upstream.sha256(util.read_file(f)))
  check("versions", upstream.versions().lua:match("^Lua 5%.4") ~= nil)
end

t.finish()
