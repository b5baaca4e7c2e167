-- `upstream directions`: difference-in-means refusal direction candidates (model:directions)
-- from two prompt files, written to a safetensors file. Usage: the text below.
local core = require "upstream.core"
local args = require "upstream.cli.args"
local progress = require "upstream.progress"

local M = {}

local CMD = "directions"

local USAGE = [[
usage: upstream directions [--model DIR] --harmful FILE --harmless FILE --out FILE.safetensors
         [--positions N] [--batch B] [--no-chat] [--threads N]
Difference-in-means refusal direction candidates (Arditi et al.): for every layer l and each
of the last N prompt tokens (default: the chat template's post-instruction tokens, 5 for
Gemma), mean(resid_pre l | harmful) - mean(resid_pre l | harmless), accumulated in double.
Writes `candidates` F32 [N, n_layers, d] (index i is position i-N from the end) and the two
means. Prompt files: one per line, a JSON list (strings or {"instruction": ...}), or CSV
with a `goal` column. Prompts are wrapped in the Gemma chat template unless --no-chat.
]]

local SPEC = {options = {"--model", "--harmful", "--harmless", "--out", "--positions", "--batch", "--threads"},
              flags = {"--no-chat"}}

-- The prompts of a file, each as token ids (the chat template unless --no-chat).
local function encode_all(path, tok, cfg, chat)
  local prompts = core.prompts(path)
  local ids = {}
  for i, text in ipairs(prompts) do ids[i] = args.encode(tok, cfg, text, chat) end
  return ids
end

local function run(argv)
  local o, status = args.start(argv, SPEC, USAGE)
  if status == "help" then return 0 end
  if status == "bad" or not (o.harmful and o.harmless and o.out) then
    if status ~= "bad" then args.message(CMD, "--harmful, --harmless and --out are required") end
    io.stderr:write(USAGE)
    return 2
  end
  local chat = not o["no-chat"]
  local n_pos, batch
  if o.positions then
    n_pos = args.int(CMD, "--positions", o.positions, -1000000, 1000000)
    if not n_pos then return 2 end
  end
  batch = args.int(CMD, "--batch", o.batch or "8", -1000000, 1000000)
  if not batch then return 2 end
  if (n_pos and n_pos <= 0) or batch <= 0 then
    return args.usage_error(CMD, "--positions and --batch must be positive")
  end
  if o.threads then core.set_threads(args.atoi(o.threads)) end

  local model <close> = core.model(o.model)
  local cfg = model:config()
  local tok <close> = args.tokenizer(o.model)
  n_pos = n_pos or (chat and tok:post_instruction_count() or 1)
  local harmful = encode_all(o.harmful, tok, cfg, chat)
  local harmless = encode_all(o.harmless, tok, cfg, chat)
  -- The forward passes of both sets (harmful, then harmless) under one progress bar on stderr.
  local bar <close> = progress.new("forward", #harmful + #harmless, {unit = "prompts"})
  local candidates = model:directions(harmful, harmless, {positions = n_pos, batch = batch,
    progress = progress.sets(bar, {#harmful, #harmless}, {"harmful", "harmless"})})
  if core.dist.rank == 0 then core.save_safetensors(o.out, {candidates = candidates}, {
    model = o.model, harmful = o.harmful, harmless = o.harmless, hook = "blocks.{l}.hook_resid_pre",
    n_harmful = tostring(#harmful), n_harmless = tostring(#harmless), positions = ("%d..-1"):format(-n_pos),
    chat_template = chat and "gemma" or "none"}) end
  args.message(CMD, "wrote %s: candidates [%d, %d, %d] from %d harmful and %d harmless prompts", o.out, n_pos,
            cfg.n_layers, cfg.d_model, #harmful, #harmless)
  return 0
end

M.main = args.command(run)

return M
