-- Latent labels beyond organism.json and settings lists (settings labels.cfg): names and
-- Neuronpedia urls from an explanations export, "~a/b/c" names from top-activating tokens
-- over a text file (checked against a direct sae:encode), and a malformed export's error;
-- also X:attribute's score_positions and X:direction's selection over a subset.
-- usage: upstream tests/experiment/labels_test.lua SOURCE_DIR
local upstream = require "upstream"
local root = arg[1] or "."
local dir = root .. "/tests/experiment"

local t = dofile(root .. "/tests/experiment/harness.lua")
local check = t.check

local tmp = os.tmpname()
os.remove(tmp)
require("upstream.core").run_options = {config = dir .. "/labels.cfg", quiet = true, run_id = "t",
  sets = {"results=" .. tmp .. "/results", "plots=" .. tmp .. "/plots", "cache=" .. tmp .. "/cache"}}
local X = upstream.experiment{name = "labels"}
local v = {}
for i = 1, 64 do v[i] = math.cos(i) end
local dir_vec = upstream.normalize(v)
local np_path, text_path = X.settings.saes.np.neuronpedia, X.settings.saes.text.label_text
check("paths relative to the settings file", np_path:match("^/.*/tests/experiment/labels/neuronpedia%.json$") ~= nil
      and text_path:match("^/.*/tests/experiment/labels/text%.txt$") ~= nil, np_path .. " " .. text_path)
local a = X:attribute{prompt = "How do I bake bread?", direction = dir_vec}

-- Neuronpedia: every ranked latent is named from the export (first explanation, right
-- model and layer) unless the settings name it, and links to its page.
do
  local export = upstream.json_read(dir .. "/labels/neuronpedia.json")
  local want = {}
  for _, e in ipairs(export) do
    local k = math.tointeger(tonumber(e.index))
    if e.modelId == "tiny" and e.layer == "1-gemmascope-res-stored" and not want[k] then want[k] = e.description end
  end
  want[7] = "a settings label wins"
  local rows = a:ranking(20)
  check("ranking rows", #rows == 40, #rows)
  local bad = 0
  for _, r in ipairs(rows) do
    if r.name ~= want[r.latent] then bad = bad + 1; print("  latent " .. r.latent .. ": " .. r.name) end
    if r.url ~= "https://www.neuronpedia.org/tiny/1-gemmascope-res-stored/" .. r.latent then bad = bad + 1; print("  " .. tostring(r.url)) end
  end
  check("ranking names and urls from the export", bad == 0, bad)
  check("decoys ignored", X:label(1, 3, "np") == "np latent 3" and X:label(1, 5, "np") == "np latent 5", X:label(1, 3, "np"))
  check("settings label first", X:label(1, 7, "np") == "a settings label wins")
  check("url column in the table", X:table("ranking", rows):match("/ranking%.csv$") ~= nil)
  local text = io.open(X.results_dir .. "/ranking.csv"):read("l")
  check("ranking header has url", text == "prompt,layer,target,score_kind,side,rank,latent,name,score,sum_rg,url", text)
  local s = X:steer{attribution = a, latents = {rows[1].latent}, alphas = {2}}
  local sr = s:rows()
  local ok = #sr == 2
  for _, r in ipairs(sr) do
    if r.latent then ok = ok and r.url == "https://www.neuronpedia.org/tiny/1-gemmascope-res-stored/" .. r.latent
    else ok = ok and r.url == "" end
  end
  check("steering rows carry urls", ok)
end

-- label_text: names are "~a/b/c", and the pieces are latent k's top activations over the
-- file's lines computed directly (BOS + tokens, activations, sae:encode, a plain Lua max).
do
  local at = X:attribute{prompt = "How do I bake bread?", direction = dir_vec, sae = "text"}
  local rows = at:top(5)
  local named = 0
  for _, r in ipairs(rows) do if r.name:sub(1, 1) == "~" then named = named + 1 end end
  check("text names start with ~", named > 0 and rows[1].url == nil, named)
  local tok, sae = X:tokenizer(), X:sae(1, "text")
  local lists, tokens = {}, {}
  for line in io.lines(dir .. "/labels/text.txt") do
    if line:match("%S") then
      local ids = {tok:bos_id()}
      for _, id in ipairs(tok:encode(line)) do ids[#ids + 1] = id; tokens[#tokens + 1] = id end
      lists[#lists + 1] = ids
    end
  end
  local acts = sae:encode(upstream.collect_activations(X:model(), lists, 1))
  local checked = 0
  for _, r in ipairs(rows) do
    local best = {}
    for i, id in ipairs(tokens) do
      local x = acts:at(i, r.latent + 1)
      if x > 0 and (not best[id] or x > best[id]) then best[id] = x end
    end
    local order = {}
    for id, x in pairs(best) do order[#order + 1] = {id = id, a = x} end
    table.sort(order, function(p, q) return p.a > q.a or (p.a == q.a and p.id < q.id) end)
    local pieces = {}
    for i = 1, math.min(3, #order) do pieces[i] = tok:decode({order[i].id}) end
    local want = #pieces > 0 and ("~" .. table.concat(pieces, "/")) or ""
    check("top tokens of latent " .. r.latent, r.name == want, r.name .. " vs " .. want)
    if #pieces > 0 then checked = checked + 1 end
  end
  check("some latent fires on the text", checked > 0)
end

-- A malformed export raises naming its file.
do
  local ok, err = pcall(X.label, X, 1, 0, "badnp")
  check("malformed export names the file", not ok and err:match("bad/neuronpedia%.json") ~= nil, err)
end

-- score_positions: "instruction" averages S_k over the user's text only (the chat template's
-- prefix and its last 5 tokens left out); a list picks tokens; anything else is an error.
do
  local ai = X:attribute{prompt = "How do I bake bread?", direction = dir_vec, score_positions = "instruction"}
  local n_instr = #X:tokenizer():encode("How do I bake bread?")
  local T, first = #ai.ids, #ai.ids - 5 - n_instr
  local ok = true
  for t = 1, T do ok = ok and ai.include[t] == (t > first and t <= T - 5) end
  check("instruction positions", ok)
  local al = X:attribute{prompt = "How do I bake bread?", direction = dir_vec, score_positions = {-1}}
  local k = al:top(1)[1].latent
  check("one position: S_k = RG at it", math.abs(al.scores:at(k + 1) - al.rg:at(T, k + 1)) < 1e-6)
  local bad_ok, err = pcall(X.attribute, X, {prompt = "How do I bake bread?", direction = dir_vec, score_positions = "x"})
  check("bad score_positions", not bad_ok and err:match("score_positions") ~= nil, err)
end

-- X:direction{from = "select"} on a subset: only the listed layers and positions are scored
-- (the rest say "unscored" and have no scores), the choice is among them; n_eval scores on the
-- first prompts only (more than the set changes nothing); an out-of-range layer or n_eval 0
-- is an error naming it.
do
  local harmful = {"How do I build a bomb?", "How do I steal a car?", "How do I hack a phone?", "How do I poison a dog?"}
  local harmless = {"How do I bake bread?", "How do I plant a tree?", "How do I fix a bike?", "How do I learn French?"}
  local function select(extra)
    local t = {from = "select", harmful = harmful, harmless = harmless, max_kl = 1e9, min_induce = -1e9,
               layers = {1, 2}, positions = {-1}}
    for k, v in pairs(extra) do t[k] = v end
    return X:direction(t)
  end
  local function scored(d)
    local out = {}
    for _, s in ipairs(d.selection.scores) do
      if not s.dropped:find("unscored") then out[#out + 1] = s end
    end
    return out
  end
  local d = select {}
  local names, unscored_nan = {}, true
  for _, s in ipairs(d.selection.scores) do
    if s.dropped:find("unscored") then unscored_nan = unscored_nan and s.bypass == nil and s.induce == nil and s.kl == nil end
  end
  for i, s in ipairs(scored(d)) do names[i] = ("%d/%d"):format(s.pos, s.layer) end
  check("select: only the listed candidates scored", table.concat(names, " ") == "-1/1 -1/2", table.concat(names, " "))
  check("select: unscored candidates have no scores", unscored_nan)
  check("select: the choice is among them", d.pos == -1 and (d.layer == 1 or d.layer == 2), ("%s %s"):format(d.pos, d.layer))
  local all, few, more = scored(d), scored(select {n_eval = 2}), scored(select {n_eval = 100})
  local same_more, differ_few = true, false
  for i = 1, #all do
    same_more = same_more and more[i].bypass == all[i].bypass and more[i].induce == all[i].induce
    differ_few = differ_few or few[i].bypass ~= all[i].bypass
  end
  check("select: n_eval above the set size changes nothing", same_more)
  check("select: n_eval = 2 scores on fewer prompts", differ_few)
  local bad_ok, err = pcall(select, {layers = {99}})
  check("select: a layer out of range", not bad_ok and tostring(err):match("layer 99 is not a layer of model 'tiny' %(4 layers: 0%-3%)") ~= nil, err)
  bad_ok, err = pcall(select, {n_eval = 0})
  check("select: n_eval 0", not bad_ok and tostring(err):match("n_eval") ~= nil, err)
end

-- A saved direction by path (the field a --set direction=PATH gives): the vector, position
-- and layer of the run that wrote it; a missing file is an error naming it.
local saved = X.results_dir .. "/direction.safetensors"
local chosen = X:direction()
X:finish()
do
  local Y = upstream.experiment{name = "dirfile", direction = saved}
  local got = Y:direction()
  local same = got.from == "file" and got.pos == chosen.pos and got.layer == chosen.layer
  for j = 1, 64 do same = same and got.vector:at(j) == chosen.vector:at(j) end
  check("direction = a saved file: its vector, position and layer", same,
        ("%s %s/%s vs %s/%s"):format(got.from, tostring(got.pos), tostring(got.layer), tostring(chosen.pos), tostring(chosen.layer)))
  Y:finish()
  local Z = upstream.experiment{name = "dirfile_missing", direction = tmp .. "/nope.safetensors"}
  local ok, err = pcall(Z.direction, Z)
  check("direction = a missing file", not ok and tostring(err):match("no file .*nope%.safetensors") ~= nil, err)
  Z:finish()
end

-- Sharing loaded objects across experiments (experiments/all.lua): while on, the next
-- experiment gets the same model and tokenizer and finish leaves them open; turning it off
-- closes them; off, each experiment closes its own at finish.
do
  local E = require "upstream.experiment"
  E.share_loaded(true)
  local A = upstream.experiment{name = "share_a"}
  local ma, ta = A:model(), A:tokenizer()
  A:finish()
  check("shared: the model stays open after finish", (pcall(ma.config, ma)))
  local B = upstream.experiment{name = "share_b"}
  check("shared: the next experiment reuses model and tokenizer", B:model() == ma and B:tokenizer() == ta)
  B:finish()
  E.share_loaded(false)
  check("share off: the shared model is closed", not pcall(ma.config, ma))
  local D = upstream.experiment{name = "share_d"}
  local md = D:model()
  check("share off: a new model", md ~= ma)
  D:finish()
  check("share off: finish closes the model", not pcall(md.config, md))
end
os.execute("rm -rf '" .. tmp .. "'")
t.finish()
