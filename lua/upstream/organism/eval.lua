-- upstream.organism.eval: measures a built organism against its planted ground truth.
--
--   eval(DIR, opts) -> {criteria, passed, text, data}   (upstream organism eval DIR ...)
--
-- Three steps: eval_measure runs the organism and returns plain data; eval_judge turns it into
-- criterion records (what the shipped organism must meet); eval_render writes the markdown
-- report, with the method's measurements as figures. opts.require lists the groups and
-- criterion ids (GROUP.KEY, eval_judge.criterion_ids) that decide `passed` (default: every
-- group), so a test can hold exactly what an organism meets; any other name raises before the
-- evaluation runs. opts.spec: the spec to read (default DIR/spec.lua, else the path its build
-- recorded); opts.smoke, n, alphas: eval_measure's.
local organism = require "upstream.organism"
local util = require "upstream.util"
local recipes = require "upstream.organism.recipe"
local store = require "upstream.organism.store"
local measure = require "upstream.organism.eval_measure"
local judge = require "upstream.organism.eval_judge"
local render = require "upstream.organism.eval_render"

local fail, exists = organism.fail, util.exists

local M = {}

-- The set of names opts.require holds, each a group or a criterion id of spec.
local function required_names(spec, require_list, dir)
  local declared, groups, required = {}, {}, {}
  for _, id in ipairs(judge.criterion_ids(spec)) do
    local g = id:match("^(%a+)%.")
    if not declared[g] then declared[g], groups[#groups + 1] = true, g end
    declared[id] = true
  end
  for name in (require_list or table.concat(groups, ",")):gmatch("[^,]+") do
    if not declared[name] then
      fail("--require %s: not a group (%s) or a criterion id of %s (GROUP.KEY, e.g. direction.ablated or "
           .. "behaviour.%s)", name, table.concat(groups, ", "), dir, organism.case_studies(spec)[1].name)
    end
    required[name] = true
  end
  return required
end

function M.eval(dir, opts)
  opts = opts or {}
  local o = store.open(dir)
  local spec_path = opts.spec or o.spec_path
  local ok, res = pcall(function()
    if not exists(spec_path) then
      fail("%s has no spec.lua and its spec %s does not exist: pass --spec SPEC.lua", dir, tostring(spec_path))
    end
    local spec = organism.load(spec_path)
    local required = required_names(spec, opts.require, dir)
    local data = measure.measure(o, spec, recipes.recipe_corpus(spec, o.info.recipe), opts)
    local criteria = judge.judge(data, spec)
    local passed = judge.passed(criteria, required)
    return {criteria = criteria, passed = passed, text = render.render(data, criteria, passed), data = data}
  end)
  store.close(o)
  if not ok then error(res, 0) end
  return res
end

return M
