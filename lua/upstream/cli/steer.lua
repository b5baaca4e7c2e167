-- `upstream steer`: a steering grid from the command line (upstream.grid): prompts x (latents
-- or a vector) x alphas x max-new-tokens values, one row per cell with every metric and the
-- completion, as a table, CSV or JSON. Usage: the text below.
local core = require "upstream.core"
local args = require "upstream.cli.args"
local csv = require "upstream.csv"
local organism_defaults = require "upstream.organism_defaults"

local M = {}

local CMD = "steer"

local USAGE = [==[
usage: upstream steer [--model DIR] (--prompt TEXT | --prompts FILE | --ids 2,106,...) [--chat]
         (--latent K[,K...] --sae SAE [--layer l] | --vector FILE[:NAME] [--vector-index POS,LAYER]
          [--raw-vector] --layer l) --alpha a,b,... [--ablate FILE[:NAME] [--ablate-index POS,LAYER]]
         [--max-new-tokens N[,N...]] [--positions all|prompt|generated]
         [--direction FILE[:NAME] [--direction-index POS,LAYER] --target-layer L]
         [--refusal-token ID|PIECE[,...]] [--substrings FILE] [--no-coherence] [--batch B]
         [--cache DIR] [--format table|csv|json] [--progress | --quiet] [--threads N]
Adds alpha * v at blocks.l.hook_resid_post (v = the SAE decoder row W_dec[K], or the vector,
normalised unless --raw-vector) at the chosen positions (default all, generated tokens
included) and prints one row per cell: the refusal score at the last prompt position and its
change from the unsteered row ("none", always first), the probability of the refusal tokens,
and, with a completion (--max-new-tokens > 0, default 32; 0 scores only), the substring refusal
judge, the completion's mean log-prob under the unsteered model and its repeated-trigram ratio.
With --direction and --target-layer it also prints R = <h_L[last], r> (r normalised), its
change dR and the first-order prediction pred = alpha * sum_t v . dR/dh_l[t].
--ablate adds one cell with the direction ablated everywhere (Arditi et al.).
Refusal tokens default to the tokenizer's "I"; a checkpoint without tokenizer.json needs
--refusal-token ID. --substrings FILE: one refusal substring per line (default: the 12 of
Arditi et al.). --cache DIR keeps every finished cell (DIR/xx/KEY.json, keyed by the SHA-256 of
model files, prompt ids, intervention and settings): a killed run resumes, a changed axis
recomputes only new cells. Progress goes to stderr: a bar on a terminal or with --progress,
else a line every 5 s.
]==]

local SPEC = {
  options = {"--model", "--ids", "--prompt", "--threads", "--prompts", "--sae", "--latent", "--vector",
             "--vector-index", "--layer", "--alpha", "--ablate", "--ablate-index", "--max-new-tokens", "--positions",
             "--direction", "--direction-index", "--target-layer", "--refusal-token", "--substrings", "--batch",
             "--cache", "--format"},
  flags = {"--chat", "--raw-vector", "--no-coherence", "--progress", "--quiet"},
}

local FORMATS = {table = true, csv = true, json = true}
local WHERE = {all = true, prompt = true, generated = true}
local MAX_REFUSAL_IDS = 16

local function usage_error(fmt, ...) return args.usage_error(CMD, fmt, ...) end

-- Everything that can be checked without loading anything: the axes and settings as numbers,
-- or nil, status after the message.
local function check_options(o)
  if not (o.latent or o.vector or o.ablate) then
    return nil, usage_error("give --latent (with --sae), --vector or --ablate")
  end
  if o.latent and o.vector then return nil, usage_error("give --latent or --vector, not both") end
  if o.latent and not o.sae then return nil, usage_error("--latent needs --sae") end
  if (o.latent or o.vector) and not o.alpha then
    return nil, usage_error("--alpha is required (e.g. --alpha -8,-4,4,8)")
  end
  if o.vector and not o.layer then return nil, usage_error("--vector needs --layer") end
  if (o.direction == nil) ~= (o["target-layer"] == nil) then
    return nil, usage_error("--direction and --target-layer go together")
  end
  if o.prompts and (o.prompt or o.ids) then return nil, usage_error("give one of --prompt, --prompts or --ids") end
  local n = {format = o.format or "table"}
  if not FORMATS[n.format] then return nil, usage_error("--format must be table, csv or json, not '%s'", n.format) end
  if o.positions and not WHERE[o.positions] then
    return nil, usage_error("--positions must be all, prompt or generated, not '%s'", o.positions)
  end
  local bound = 1 << 30
  if o.latent then
    n.latents = args.int_list(o.latent, -bound, bound)
    if not n.latents then return nil, usage_error("bad --latent list '%s'", o.latent) end
  end
  if o.alpha then
    n.alphas = args.number_list(o.alpha)
    if not n.alphas then return nil, usage_error("bad --alpha list '%s' (e.g. -8,-4,4,8)", o.alpha) end
  end
  n.max_new = {32}
  if o["max-new-tokens"] then n.max_new = args.int_list(o["max-new-tokens"], 0, 1 << 16) end
  if not n.max_new then
    return nil, usage_error("bad --max-new-tokens '%s' (non-negative integers, e.g. 0,32)", o["max-new-tokens"])
  end
  local function one(text, lo)
    local v = args.int_list(text, -bound, bound)
    return v and #v == 1 and v[1] >= lo and v[1] or nil
  end
  if o.layer then
    n.layer = one(o.layer, 0)
    if not n.layer then return nil, usage_error("--layer expects one non-negative integer, got '%s'", o.layer) end
  end
  if o["target-layer"] then
    n.target = one(o["target-layer"], 0)
    if not n.target then
      return nil, usage_error("--target-layer expects one non-negative integer, got '%s'", o["target-layer"])
    end
  end
  n.batch = 16
  if o.batch then
    n.batch = one(o.batch, 1)
    if not n.batch then return nil, usage_error("--batch expects a positive integer, got '%s'", o.batch) end
  end
  for _, name in ipairs({"vector", "ablate", "direction"}) do
    local text = o[name .. "-index"]
    if text then
      local pos, layer = args.index(text)
      if not pos then return nil, usage_error("--*-index expects POS,LAYER (e.g. -1,10)") end
      n[name .. "_index"] = {pos, layer}
    end
  end
  return n
end

-- A vector option's file as given by --NAME and --NAME-index.
local function load_vector(spec, index, d)
  if index then return core.load_direction(spec, d, index[1], index[2]) end
  return core.load_direction(spec, d)
end

-- The refusal tokens: "ID|PIECE,..." (empty items skipped), else the tokenizer's "I". nil,
-- status after the message.
local function refusal_ids(text, tok, cfg)
  if not text then
    local id = tok and tok:id("I")
    if not id then
      local why = tok and 'the tokenizer has no piece "I"' or 'no tokenizer.json to find the refusal token "I"'
      return nil, usage_error("%s; pass --refusal-token ID", why)
    end
    return {id}
  end
  local ids = {}
  for item in text:gmatch("[^,]+") do
    local sign, digits = item:match("^[ \t\n\v\f\r]*([+-]?)(%d+)$")
    local id
    if digits then
      local v = math.tointeger(tonumber(digits))
      if v and sign == "-" then v = -v end
      id = v and v >= 0 and v < cfg.vocab_size and v or nil
    else
      id = tok and tok:id(item)
    end
    if not id or #ids == MAX_REFUSAL_IDS then
      return nil, usage_error("--refusal-token '%s' is %s", item, #ids == MAX_REFUSAL_IDS and "one too many"
                              or tok and "neither an id in the vocabulary nor a piece" or "not a valid id")
    end
    ids[#ids + 1] = id
  end
  if #ids == 0 then return nil, usage_error("--refusal-token is empty") end
  return ids
end

-- One refusal substring per line, blank lines skipped; nil, status after the message.
local function substrings(path)
  local f, why = io.open(path, "r")
  local list = {}
  if f then
    for line in f:lines() do
      line = line:match("^[^\r\n]*")
      if line ~= "" then list[#list + 1] = line end
    end
    f:close()
  end
  if not f then return nil, usage_error("--substrings: cannot read %s", why) end -- why names the path
  if #list == 0 then return nil, usage_error("%s: no substrings in it", path) end
  return list
end

-- The SAE reads this model's activations (what core/sae's up_sae_check_model requires; the
-- grid itself only checks the decoder's width).
local function check_sae(info, cfg)
  if info.d_in ~= cfg.d_model then
    error(("SAE %s reads %d-dimensional activations but the model's d_model is %d"):format(info.path, info.d_in,
          cfg.d_model), 0)
  end
  if info.layer >= 0 and info.layer >= cfg.n_layers then
    error(("SAE %s hooks layer %d (%s) but the model has %d layers"):format(info.path, info.layer, info.hook,
          cfg.n_layers), 0)
  end
end

-- ---------------------------------------------------------------- output

local CONTROLS = {["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}

-- Text on one line: newlines, returns and tabs as \n \r \t.
local function one_line(s) return (s:gsub("[\n\r\t]", CONTROLS)) end

local function completion(r)
  if r.text then return one_line(r.text) end
  return table.concat(r.tokens, " ")
end

local function num(fmt, v, missing)
  if v == nil then return missing end
  return fmt:format(v)
end

local function refused_word(r)
  if r.refused == nil then return "-" end
  return r.refused and "yes" or "no"
end

local function print_table(rows, objective)
  local out = {}
  local n_prompts, labels = 0, {}
  local w = 12
  for _, r in ipairs(rows) do
    w = math.max(w, #r.label)
    if not labels[r.prompt] then n_prompts, labels[r.prompt] = n_prompts + 1, r.prompt_label end
  end
  local many = n_prompts > 1
  local function pad(label) return label .. (" "):rep(w - #label) end -- "%-*s" (string.format widths stop at 99)
  local head = {}
  if many then head[#head + 1] = ("%-6s "):format("prompt") end
  head[#head + 1] = pad("intervention") .. (" %4s %9s %9s %8s"):format("new", "score", "dscore", "p_ref")
  if objective then head[#head + 1] = (" %9s %9s %9s"):format("R", "dR", "pred_dR") end
  head[#head + 1] = (" %7s %8s %6s  %s"):format("refused", "logprob", "rep3", "completion")
  out[1] = table.concat(head)
  local nan = 0 / 0 -- a measured number is never missing; should one be, it prints as C's NaN would
  for _, r in ipairs(rows) do
    local line = {}
    if many then line[#line + 1] = ("%-6d "):format(r.prompt - 1) end
    line[#line + 1] = pad(r.label) .. (" %4d %9.4f %+9.4f %8.4f"):format(r.max_new_tokens, r.score or nan,
                                                                        r.dscore or nan, r.p_refusal or nan)
    if objective then
      line[#line + 1] = (" %9.4f %+9.4f "):format(r.R or nan, r.dR or nan)
      line[#line + 1] = num("%+9.4f", r.predicted_dR, "        -")
    end
    line[#line + 1] = (" %7s "):format(refused_word(r))
    line[#line + 1] = num("%8.3f", r.logprob, "       -")
    line[#line + 1] = " " .. num("%6.3f", r.repetition, "     -")
    line[#line + 1] = "  " .. completion(r)
    out[#out + 1] = table.concat(line)
  end
  if many then
    out[#out + 1] = "\nprompts:"
    for p = 1, n_prompts do out[#out + 1] = ("  %d  %s"):format(p - 1, one_line(labels[p])) end
  end
  io.stdout:write(table.concat(out, "\n"), "\n")
end

local function print_csv(rows)
  local function text(s) return csv.quote(one_line(s), true) end
  local out = {"prompt,intervention,latent,alpha,max_new_tokens,score,p_refusal,dscore,R,dR,predicted_dR,refused,"
               .. "refusal_match,logprob,repetition,cached,key,completion"}
  for _, r in ipairs(rows) do
    local cells = {text(r.prompt_label), text(r.label), csv.format(r.latent), csv.format(r.alpha),
                   csv.format(r.max_new_tokens)}
    for _, k in ipairs({"score", "p_refusal", "dscore", "R", "dR", "predicted_dR"}) do
      cells[#cells + 1] = csv.format(r[k])
    end
    cells[#cells + 1] = r.refused == nil and "" or r.refused and "1" or "0"
    cells[#cells + 1] = r.refusal_match and text(r.refusal_match) or ""
    cells[#cells + 1] = csv.format(r.logprob)
    cells[#cells + 1] = csv.format(r.repetition)
    cells[#cells + 1] = r.cached and "1" or "0"
    cells[#cells + 1] = r.key
    cells[#cells + 1] = r.text and text(r.text) or csv.quote(table.concat(r.tokens, " "), true)
    out[#out + 1] = table.concat(cells, ",")
  end
  io.stdout:write(table.concat(out, "\n"), "\n")
end

local function print_json(rows, totals, o)
  local null = core.json_null
  local function v(x) if x == nil then return null end return x end
  local cells = {}
  for i, r in ipairs(rows) do
    cells[i] = {prompt = r.prompt_label, intervention = r.label, latent = v(r.latent), alpha = v(r.alpha),
                max_new_tokens = r.max_new_tokens, score = v(r.score), p_refusal = v(r.p_refusal),
                dscore = v(r.dscore), R = v(r.R), dR = v(r.dR), predicted_dR = v(r.predicted_dR),
                refused = v(r.refused), refusal_match = v(r.refusal_match), logprob = v(r.logprob),
                repetition = v(r.repetition), completion = v(r.text), completion_ids = r.tokens,
                cached = r.cached, key = r.key}
  end
  io.stdout:write(core.json_encode({model = o.model, sae = v(o.sae), cells = cells, totals = totals}, {indent = 2}),
                  "\n")
end

-- --progress: the bar even when stderr is not a terminal (upstream.grid's own progress, used
-- otherwise, draws it only on one). Returns the progress function and whether a bar line is
-- left unfinished on screen.
local function progress_bar()
  local last, drawn = 0, false
  local function draw(p)
    local final = p.done == p.total
    local t = p.elapsed or 0
    if not final and t - last < 0.1 then return end
    io.stderr:write("\r", p.line, "\27[K", final and "\n" or "")
    io.stderr:flush()
    drawn, last = not final, t
  end
  return draw, function() return drawn end
end

-- ---------------------------------------------------------------- the command

local function run(argv)
  local o, status = args.start(argv, SPEC, USAGE)
  if status == "help" then return 0 end
  if o.latent and not o.sae then
    local org = organism_defaults.read(o.model)
    if org then o.sae = org.sae end
  end
  if status == "bad" then
    io.stderr:write(USAGE)
    return 2
  end
  local n, rc = check_options(o)
  if not n then return rc end
  core.set_threads(args.atoi(o.threads))

  local model <close> = core.model(o.model)
  local cfg = model:config()
  local d = cfg.d_model
  if (n.layer and n.layer >= cfg.n_layers) or (n.target and n.target >= cfg.n_layers) then
    return usage_error("the model has layers 0..%d", cfg.n_layers - 1)
  end
  -- Prompts. The tokenizer is loaded whenever the checkpoint has one: it decodes completions
  -- for the substring judge and names the refusal token even when ids are given.
  local prompts, tok = {}, nil
  if o.prompts then
    tok = args.tokenizer(o.model)
    for i, text in ipairs(core.prompts(o.prompts)) do
      prompts[i] = {ids = args.encode(tok, cfg, text, o.chat), label = text}
    end
  else
    local ids
    ids, tok, rc = args.input_ids(CMD, o, cfg)
    if not ids then return rc end
    prompts[1] = {ids = ids, label = o.prompt or o.ids}
  end
  tok = tok or args.try_tokenizer(o.model)
  local spec = {model = model, prompts = prompts, where = o.positions, alphas = n.alphas, max_new_tokens = n.max_new,
                batch = n.batch, cache = o.cache, coherence = not o["no-coherence"], tokenizer = tok,
                identity = {program = "upstream " .. core.versions().upstream}}
  -- Interventions: the latent or vector sweep, then the ablation.
  if o.latent then
    local sae = core.sae(o.sae, "decoder")
    local info = sae:info()
    check_sae(info, cfg)
    if not n.layer then
      if info.layer < 0 then return usage_error("the SAE does not name its layer; pass --layer") end
      n.layer = info.layer
    end
    for _, k in ipairs(n.latents) do
      if k < 0 or k >= info.d_sae then return usage_error("latent %d is outside the SAE's [0, %d)", k, info.d_sae) end
    end
    spec.sae, spec.latents, spec.layer = sae, n.latents, n.layer
  elseif o.vector then
    local v = load_vector(o.vector, n.vector_index, d)
    if not o["raw-vector"] then
      local norm
      v, norm = core.normalize(v)
      if norm == 0 then return usage_error("the vector is zero") end
    end
    spec.vectors, spec.names, spec.layer = {v}, {o.vector:match("[^/]*$")}, n.layer
  end
  if o.ablate then
    local r = load_vector(o.ablate, n.ablate_index, d)
    spec.interventions = {{label = "ablate", items = {{kind = "ablate", vector = r}}}}
  end
  if o.direction then
    spec.objective = {layer = n.target, direction = load_vector(o.direction, n.direction_index, d)}
  end
  -- Settings.
  spec.refusal_ids, rc = refusal_ids(o["refusal-token"], tok, cfg)
  if not spec.refusal_ids then return rc end
  spec.stop = tok and tok:stop_ids() or {}
  if #spec.stop == 0 then spec.stop = {cfg.eos_id} end
  if o.substrings then
    spec.substrings, rc = substrings(o.substrings)
    if not spec.substrings then return rc end
  end
  local bar_drawn
  if o.progress and not o.quiet then spec.progress, bar_drawn = progress_bar()
  else spec.progress = not o.quiet end

  local grid <close> = core.grid(spec)
  local ok, rows = pcall(grid.run, grid)
  if not ok then
    if bar_drawn and bar_drawn() then io.stderr:write("\n") end
    error(rows, 0)
  end
  local t = grid:totals()
  if n.format == "json" then print_json(rows, t, o)
  elseif n.format == "csv" then print_csv(rows)
  else print_table(rows, o.direction ~= nil) end
  if not o.quiet then
    args.message(CMD, "%d cells (%d distinct: %d computed in %d batches, %d from the cache) in %.1f s", t.cells,
                 t.unique, t.computed, t.batches, t.cached, t.seconds)
  end
  return 0
end

M.main = args.command(run)

return M
