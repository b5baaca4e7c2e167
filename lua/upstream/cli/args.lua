-- upstream.cli.args: the command-line conventions the Lua subcommands (attribute, steer,
-- directions; lua/main.c runs each as require("upstream.cli.NAME").main(argv)) share with the
-- C ones in lua/cli.c, so every command reads its options and reports its errors alike.
--
--   args.command(run)             -> main(argv): run(argv) with the errors of the bindings it
--                                    calls reported as their messages alone
--   args.parse(argv, spec)        -> opts, status   spec = {options = {"--sae", ...},
--                                    flags = {"--chat", ...}}; argv[0] is the command. Options
--                                    are "--name VALUE" or "--name=VALUE"; opts.sae = "VALUE",
--                                    opts.chat = true. status: nil, "help" (--help or -h seen)
--                                    or "bad" (an unknown option or a missing value, reported)
--   args.message(cmd, fmt, ...)   prints "upstream CMD: message" on stderr
--   args.usage_error(cmd, fmt, ...) -> 2 after args.message (a usage error's exit status)
--   args.int(cmd, opt, text, lo, hi) -> integer | nil after the message "OPT expects an integer"
--   args.int_list(text, lo, hi)   -> {integers} | nil  ("1,-2,3"; each item as strtol reads it)
--   args.number_list(text)        -> {finite numbers} | nil
--   args.index(text)              -> pos, layer | nil   ("POS,LAYER", as sscanf "%d,%d")
--   args.atoi(text)               -> integer (0 for nil or no number; --threads)
--   args.default_model()          -> $UPSTREAM_MODEL, else the built-in organism
--   args.tokenizer(dir)           -> Tokenizer (raises the core's message) ; args.try_tokenizer(dir)
--                                    -> Tokenizer | nil, when the checkpoint may have none
--   args.encode(tok, cfg, text, chat) -> {ids}: BOS + text, or one chat turn (the Gemma template)
--   args.input_ids(cmd, o, cfg)   -> ids, tok | nil, status: --ids or --prompt [--chat] checked
--                                    against the vocabulary (tok: the tokenizer when text needed one)
--
-- Error rule: a usage error prints its message and returns nil plus the exit status (2) for
-- main to return; a failure to load or compute raises error(message, 0), which the host
-- prints as "upstream CMD: message" with exit status 1.
local core = require "upstream.core"

local M = {}

-- A binding's error names the Lua line that called it ("attribute.lua:171: cannot open x"); a
-- command's user wants the message alone, as the C commands printed it. Errors raised by Lua
-- code itself (faults) keep their position.
local function user_message(msg)
  local raiser = debug.getinfo(2, "Sn")
  if type(msg) ~= "string" or not raiser or raiser.what ~= "C" or raiser.name == "assert" then return msg end
  local caller = debug.getinfo(3, "Sl")
  if caller and caller.currentline > 0 then
    local where = caller.short_src .. ":" .. caller.currentline .. ": "
    if msg:sub(1, #where) == where then return msg:sub(#where + 1) end
  end
  return msg
end

-- The main(argv) the host calls (lua/main.c): run(argv)'s exit status, its errors re-raised as
-- the messages the host prints after "upstream CMD: " (exit status 1).
function M.command(run)
  return function(argv)
    local ok, result = xpcall(run, user_message, argv)
    if not ok then error(result, 0) end
    return result
  end
end

-- Rank 0 alone reports for a job of several ranks (mpirun): the others ran the same command.
function M.message(cmd, fmt, ...)
  if require("upstream.core").dist.rank ~= 0 then return end
  io.stderr:write("upstream ", cmd, ": ", fmt:format(...), "\n")
end

function M.usage_error(cmd, fmt, ...)
  M.message(cmd, fmt, ...)
  return 2
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

function M.parse(argv, spec)
  local cmd, options, flags = argv[0], set_of(spec.options), set_of(spec.flags)
  local opts, i = {}, 1
  while argv[i] do
    local a = argv[i]
    if a == "--help" or a == "-h" then return opts, "help" end
    local name, value = a:match("^(%-%-[^=]*)=(.*)$")
    if name and options[name] then
      opts[name:sub(3)] = value
    elseif options[a] then
      if argv[i + 1] == nil then
        M.message(cmd, "option %s needs a value", a)
        return opts, "bad"
      end
      i = i + 1
      opts[a:sub(3)] = argv[i]
    elseif flags[a] then
      opts[a:sub(3)] = true
    else
      M.message(cmd, "unknown option '%s'", a)
      return opts, "bad"
    end
    i = i + 1
  end
  return opts, nil
end

-- A command's start: parses argv by spec (as parse), prints usage to stdout on --help, and
-- fills opts.model with the default model when --model is not given. Returns opts, status.
function M.start(argv, spec, usage)
  local opts, status = M.parse(argv, spec)
  if status == "help" then io.stdout:write(usage) end
  opts.model = opts.model or M.default_model()
  return opts, status
end

-- An integer as strtol reads one (leading blanks, a sign, digits) filling the whole text.
local function strtol(text)
  local sign, digits = text:match("^[ \t\n\v\f\r]*([+-]?)(%d+)$")
  if not digits then return nil end
  local v = math.tointeger(tonumber(digits)) or math.huge
  return sign == "-" and -v or v
end

function M.int(cmd, opt, text, lo, hi)
  local v = strtol(text)
  if not v or v < lo or v > hi then
    M.message(cmd, "%s expects an integer, got '%s'", opt, text)
    return nil
  end
  return v
end

-- --threads N as atoi reads it (0, the default, when it is no number).
function M.atoi(text)
  local v = text and text:match("^[ \t\n\v\f\r]*([+-]?%d+)")
  return v and math.tointeger(tonumber(v)) or 0
end

function M.int_list(text, lo, hi)
  local out = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    local v = strtol(item)
    if not v or v < lo or v > hi then return nil end
    out[#out + 1] = v
  end
  return out
end

function M.number_list(text)
  local out = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    -- strtod: leading blanks, nothing after the number
    local v = not item:find("^[ \t\n\v\f\r]*$") and not item:find("[ \t\n\v\f\r]$") and tonumber(item)
    if not v or v ~= v or v == math.huge or v == -math.huge then return nil end
    out[#out + 1] = v + 0.0
  end
  return out
end

function M.index(text)
  local pos, layer = text:match("^[ \t\n\v\f\r]*([+-]?%d+),[ \t\n\v\f\r]*([+-]?%d+)")
  if not pos then return nil end
  return math.tointeger(tonumber(pos)), math.tointeger(tonumber(layer))
end

M.default_model = core.default_model -- cli.c's rule, shared with dump and generate

-- The binding names itself in its messages; a command reports the core's message alone.
function M.tokenizer(dir)
  local ok, tok = pcall(core.tokenizer, dir)
  if not ok then error((tostring(tok):gsub("^upstream%.tokenizer: ", "")), 0) end
  return tok
end

function M.try_tokenizer(dir)
  local ok, tok = pcall(core.tokenizer, dir)
  return ok and tok or nil
end

-- Plain text gets the model's BOS, as Hugging Face's tokenizer(text) does for Gemma.
function M.encode(tok, cfg, text, chat)
  if chat then return tok:chat(text) end
  local ids = {cfg.bos_id}
  for _, id in ipairs(tok:encode(text)) do ids[#ids + 1] = id end
  return ids
end

-- "2,106,3" as lua/cli.c's up_cli_parse_ids reads it: ids separated by commas or blanks.
local function parse_ids(text)
  local ids, p = {}, 1
  while true do
    p = text:find("[^ ,]", p)
    if not p then return ids end
    local sign, digits, e = text:match("^[ \t\n\v\f\r]*([+-]?)(%d+)()", p)
    local v = digits and (math.tointeger(tonumber(digits)) or math.huge)
    if v and sign == "-" then v = -v end
    if not v or v < 0 or v > 0x7fffffff then
      io.stderr:write(("upstream: bad token id list at '%s' (expected e.g. 2,106,1645)\n"):format(text:sub(p)))
      return nil
    end
    ids[#ids + 1] = v
    p = e
    if p <= #text and not text:sub(p, p):find("[ ,]") then
      io.stderr:write(("upstream: bad token id list at '%s'\n"):format(text:sub(p)))
      return nil
    end
  end
end

function M.input_ids(cmd, o, cfg)
  if (o.ids == nil) == (o.prompt == nil) then
    return nil, nil, M.usage_error(cmd, "give exactly one of --ids or --prompt")
  end
  local ids, tok
  if o.ids then
    if o.chat then return nil, nil, M.usage_error(cmd, "--chat applies to --prompt text, not to --ids") end
    ids = parse_ids(o.ids)
    if not ids then return nil, nil, 2 end
    if #ids == 0 then return nil, nil, M.usage_error(cmd, "--ids is empty") end
  else
    tok = M.tokenizer(o.model)
    ids = M.encode(tok, cfg, o.prompt, o.chat)
  end
  for _, id in ipairs(ids) do
    if id >= cfg.vocab_size then
      return nil, nil, M.usage_error(cmd, "token id %d is outside the vocabulary [0, %d)", id, cfg.vocab_size)
    end
  end
  return ids, tok
end

return M
