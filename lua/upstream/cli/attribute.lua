-- `upstream attribute`: ranks SAE latents by the gradient of a direction's projection on one
-- prompt (model:attribute), and prints the top and bottom latents as a table, CSV or JSON;
-- --per-token writes RG[t, k] of the printed latents. Usage: the text below.
local core = require "upstream.core"
local args = require "upstream.cli.args"
local csv = require "upstream.csv"
local organism_defaults = require "upstream.organism_defaults"
local util = require "upstream.util"

local M = {}

local CMD = "attribute"

local USAGE = [[
usage: upstream attribute [--model DIR] [--sae SAE] (--prompt TEXT [--chat] | --ids ...)
         --direction FILE.npy|FILE.safetensors[:NAME] [--direction-index POS,LAYER]
         [--source-layer l] --target-layer L [--positions last|all|i,j,...] [--top K]
         [--score gradient|cosine|activation] [--include-bos] [--score-positions all|last|i,j,...]
         [--format table|csv|json] [--per-token FILE.csv] [--threads N]
Ranks SAE latents by S_k = mean_t W_dec[k]·dR/dh_l[t], R = sum over positions of <h_L[t], r>
(r the unit direction, h_L = blocks.L.hook_resid_post, h_l the SAE's hook). Prints the top K
(raise R) and bottom K (lower R). --source-layer defaults to the SAE's layer; --positions are
token indices (negative from the end) where R is read, default last. --score-positions are
the tokens S_k averages over (default all but BOS; e.g. the instruction's tokens only).
--per-token writes
RG[t,k] for the printed latents. A 3-d direction tensor (from `upstream directions`) needs
--direction-index POS,LAYER (POS negative from the end, e.g. -1,10).
Without --model: $UPSTREAM_MODEL or the built-in organism; an organism directory also
supplies --sae, --direction and --target-layer.
]]

local SPEC = {
  options = {"--model", "--ids", "--prompt", "--threads", "--sae", "--direction", "--direction-index",
             "--source-layer", "--target-layer", "--positions", "--score-positions", "--top", "--score",
             "--format", "--per-token"},
  flags = {"--chat", "--include-bos"},
}

local SCORES = {gradient = true, cosine = true, activation = true}
local FORMATS = {table = true, csv = true, json = true}

-- "last", "all" or token indices "3,-1" (a trailing comma allowed); nil when malformed.
local function positions(text)
  if text == "last" or text == "all" then return text end
  local list, p = {}, 1
  while p <= #text do
    local sign, digits, e = text:match("^[ \t\n\v\f\r]*([+-]?)(%d+)()", p)
    local v = digits and math.tointeger(tonumber(digits))
    if not v then return nil end
    list[#list + 1] = sign == "-" and -v or v
    local c = text:sub(e, e)
    if c == "," then p = e + 1 elseif c == "" then p = e else return nil end
  end
  return #list > 0 and list or nil
end

local function print_table(res, ranked, o)
  local top, bottom = ranked.top, ranked.bottom
  io.stdout:write(("R = <h_%d, r> = %.6g over %d position(s); gradient at blocks.%d.hook_resid_post; %s scores\n")
    :format(o.target, res.R, o.n_positions, o.source, o.score))
  io.stdout:write("\n  top (raise refusal)           bottom (lower refusal)\n")
  io.stdout:write(("  %-4s %8s %14s   %8s %14s\n"):format("rank", "latent", "score", "latent", "score"))
  for i = 1, math.max(#top, #bottom) do
    local line = {("  %-4d"):format(i)}
    line[2] = top[i] and (" %8d %14.6g"):format(top[i].latent, top[i].score) or (" %8s %14s"):format("", "")
    line[3] = bottom[i] and ("   %8d %14.6g"):format(bottom[i].latent, bottom[i].score) or ""
    io.stdout:write(table.concat(line), "\n")
  end
end

local function print_csv(ranked)
  local rows = {}
  for _, side in ipairs({"top", "bottom"}) do
    for i, r in ipairs(ranked[side]) do
      rows[#rows + 1] = {side = side, rank = i, latent = r.latent, score = r.score}
    end
  end
  io.stdout:write(csv.encode(rows, {"side", "rank", "latent", "score"}))
end

local function print_json(res, ranked, o, sae_path, n_tokens)
  io.stdout:write(core.json_encode({model = o.model, sae = sae_path, source_layer = o.source, target_layer = o.target,
                                    score = o.score, R = res.R, n_tokens = n_tokens, top = ranked.top,
                                    bottom = ranked.bottom}, {indent = 2}), "\n")
end

-- One row per token: its id and piece, whether S_k averages over it, then RG[t, k] (and the
-- SAE's activations when loaded) of the printed latents, top first.
local function write_per_token(path, res, ranked, ids, tok)
  local latents = {}
  for _, side in ipairs({"top", "bottom"}) do
    for _, r in ipairs(ranked[side]) do latents[#latents + 1] = r.latent end
  end
  local head = {"position,token_id,token,included"}
  for _, k in ipairs(latents) do head[#head + 1] = ",rg_" .. k end
  if res.acts then for _, k in ipairs(latents) do head[#head + 1] = ",act_" .. k end end
  local lines = {table.concat(head)}
  for t, id in ipairs(ids) do
    local piece = tok and tok:piece(id)
    local token = piece and csv.quote((piece:gsub("\n", "\\n")), true) or id
    local line = {("%d,%d,%s,%d"):format(t - 1, id, token, res.include[t] and 1 or 0)}
    for _, k in ipairs(latents) do line[#line + 1] = "," .. csv.format(res.rg:at(t, k + 1)) end
    if res.acts then for _, k in ipairs(latents) do line[#line + 1] = "," .. csv.format(res.acts:at(t, k + 1)) end end
    lines[#lines + 1] = table.concat(line)
  end
  util.write_atomic(path, table.concat(lines, "\n") .. "\n")
end

local function run(argv)
  local o, status = args.start(argv, SPEC, USAGE)
  if status == "help" then return 0 end
  if not (o.sae and o.direction and o["target-layer"]) then
    local org = organism_defaults.read(o.model)
    if org then
      o.sae = o.sae or org.sae
      o.direction = o.direction or org.direction
      o["target-layer"] = o["target-layer"] or tostring(org.target_layer)
    end
  end
  if status == "bad" or not (o.sae and o.direction and o["target-layer"]) then
    if status ~= "bad" then
      args.message(CMD, "--sae, --direction and --target-layer are required "
                        .. "(an organism model directory supplies them)")
    end
    io.stderr:write(USAGE)
    return 2
  end
  local function int(opt, text) return args.int(CMD, opt, text, -1000000, 1000000) end
  o.target = int("--target-layer", o["target-layer"])
  if not o.target then return 2 end
  local top = int("--top", o.top or "10")
  if not top then return 2 end
  if o["source-layer"] then
    o.source = int("--source-layer", o["source-layer"])
    if not o.source then return 2 end
  end
  local dpos, dlayer
  if o["direction-index"] then
    dpos, dlayer = args.index(o["direction-index"])
    if not dpos then return args.usage_error(CMD, "--direction-index expects POS,LAYER (e.g. -1,10)") end
  end
  o.score = o.score or "gradient"
  if not SCORES[o.score] then return args.usage_error(CMD, "--score must be gradient, cosine or activation") end
  local format = o.format or "table"
  if not FORMATS[format] then return args.usage_error(CMD, "--format must be table, csv or json") end
  local read_at = positions(o.positions or "last")
  if not read_at then return args.usage_error(CMD, "--positions must be last, all or a list like 3,-1") end
  local score_at = positions(o["score-positions"] or "all")
  if not score_at then
    return args.usage_error(CMD, "--score-positions must be all, last or a list like 4,5,-1")
  end
  if score_at == "last" then score_at = {-1} elseif score_at == "all" then score_at = nil end
  core.set_threads(args.atoi(o.threads))

  local model <close> = core.model(o.model)
  local cfg = model:config()
  local parts = (o.score == "activation" or o["per-token"]) and "all" or "decoder"
  local sae = core.sae(o.sae, parts)
  local info = sae:info() -- model:attribute checks that the SAE fits the model
  if not o.source then
    if info.layer < 0 then return args.usage_error(CMD, "the SAE does not name its layer; pass --source-layer") end
    o.source = info.layer
  end
  if info.layer < 0 then
    sae:close()
    sae = core.sae(o.sae, {parts = parts, layer = o.source})
  end
  local ids, tok, rc = args.input_ids(CMD, o, cfg)
  if not ids then return rc end
  local dir = core.load_direction(o.direction, cfg.d_model, dpos, dlayer)
  local unit, norm = core.normalize(dir)
  if norm == 0 then return args.usage_error(CMD, "the direction is the zero vector") end
  if read_at == "all" then
    read_at = {}
    for t = 1, #ids do read_at[t] = t - 1 end
  end
  o.n_positions = read_at == "last" and 1 or #read_at
  local res = model:attribute(ids, sae, {source = o.source, target = o.target, direction = unit,
                                         positions = read_at ~= "last" and read_at or nil, score = o.score,
                                         include_bos = o["include-bos"], score_positions = score_at})
  local ranked = {top = core.rank(res.scores, top, "top"), bottom = core.rank(res.scores, top, "bottom")}
  if format == "json" then print_json(res, ranked, o, info.path, #ids)
  elseif format == "csv" then print_csv(ranked)
  else print_table(res, ranked, o) end
  if o["per-token"] then
    write_per_token(o["per-token"], res, ranked, ids, tok or args.try_tokenizer(o.model))
  end
  sae:close()
  return 0
end

M.main = args.command(run)

return M
