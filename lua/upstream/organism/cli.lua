-- upstream.organism.cli: the `upstream organism` command line (build and eval), run by the host
-- through upstream.organism_build's main. main(args) returns the exit status: 0, or 1 when eval
-- finds a required criterion unmet; a usage error or a failure raises with its message (the
-- host prints it after "upstream organism: ").
local organism = require "upstream.organism"
local util = require "upstream.util"
local stages = require "upstream.organism.stages"
local evaluation = require "upstream.organism.eval"

local fail, write_atomic = organism.fail, util.write_atomic

local M = {}

local USAGE = [[
usage: upstream organism build SPEC.lua --out DIR [--smoke] [--quiet] [--set key=value ...]
       upstream organism eval DIR [--smoke] [--report FILE.md] [--spec SPEC.lua] [--require NAMES]

build   trains a model organism from its specification: corpus, tokenizer, model, refusal
        direction, SAE and latent labels, into DIR (resumable: rerun the same command after an
        interruption; DIR keeps a copy of the spec as DIR/spec.lua). --smoke: a few steps of
        every stage (CI). --set train.steps=500 changes one recipe value (see DIR/recipe.json
        for every key). Stages whose output exists are kept: copy an organism's config.json,
        model.safetensors, tokenizer.json, direction.safetensors, recipe.json and spec.lua
        into a new DIR, build DIR/spec.lua with --set sae.layer=3, and only a new SAE and its
        labels are made. Long parts show a progress bar on stderr; --quiet: nothing
        on stderr (DIR/build.log has every line).
eval    measures an organism against its planted ground truth (its spec: --spec, else
        DIR/spec.lua, else the path recorded at build time) and prints the acceptance
        report; exits 1 when a required criterion fails. The criteria are what the organism
        must meet (behaviour, direction, sae, detection); what the method finds on it (the
        planted causes' ranks, the steering flips) is reported as figures, never failures.
        --require takes groups and criterion ids, comma-separated (the default is every
        group: behaviour,direction,sae,detection; an id such as direction.ablated or
        detection.intimacy is printed after each criterion; any other name is an error).
        --smoke: report only, never fail.
]]

local function main(args)
  local sub = args[1]
  if not sub or sub == "--help" or sub == "-h" then
    io.stdout:write(USAGE)
    return sub and 0 or 2
  end
  local opts, positional = {set = {}}, {}
  local i = 2
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then
      io.stdout:write(USAGE)
      return 0
    elseif a == "--smoke" then opts.smoke = true
    elseif a == "--quiet" then opts.quiet = true
    elseif a == "--out" or a == "--report" or a == "--set" or a == "--spec" or a == "--require" then
      local v = args[i + 1] or fail("%s needs a value", a)
      if a == "--set" then opts.set[#opts.set + 1] = v else opts[a:sub(3)] = v end
      i = i + 1
    elseif a:match("^%-%-") then fail("unknown option %s (see upstream organism --help)", a)
    else positional[#positional + 1] = a end
    i = i + 1
  end
  local parts = {"upstream organism"}
  for k = 1, #args do parts[#parts + 1] = args[k] end
  opts.command = table.concat(parts, " ")
  if sub == "build" then
    if #positional ~= 1 or not opts.out then fail("build needs SPEC.lua and --out DIR (see --help)") end
    stages.build(positional[1], opts.out, opts)
    return 0
  elseif sub == "eval" then
    if #positional ~= 1 then fail("eval needs the organism directory (see --help)") end
    local report = evaluation.eval(positional[1], opts)
    io.stdout:write(report.text)
    if opts.report then write_atomic(opts.report, report.text) end
    return (report.passed or opts.smoke) and 0 or 1
  end
  fail("unknown subcommand \"%s\" (build or eval)", sub)
end

-- The command line (upstream organism ...). The host already prefixes "upstream organism: ",
-- so the library's own "organism: " prefix is dropped from a failure's message.
function M.main(args)
  -- Training is one process's work (no step of it is shared out), and every rank would train
  -- and save the same model over the others' files.
  if require("upstream.core").dist.size > 1 then
    error(("runs as one process, not as %d MPI ranks: start it without mpirun or srun"):format(
      require("upstream.core").dist.size), 0)
  end
  local ok, res = xpcall(main, function(e)
    local msg = type(e) == "string" and e:gsub("^organism: ", "") or tostring(e)
    return os.getenv("UPSTREAM_TRACEBACK") and debug.traceback(msg, 2) or msg
  end, args)
  if not ok then error(res, 0) end
  return res
end

return M
