-- Spec files that start from another spec (upstream.organism.spec_file): the variants load and
-- prepare, start from their base and change what they say (a name, a concept's weight, a
-- concept list), and the self-contained text a build keeps as DIR/spec.lua reads back as the
-- same table; base, concept and replace errors name what is missing.
-- Usage: upstream tests/lua/test_organism_spec.lua SOURCE_DIR SCRATCH_DIR
local organism = require "upstream.organism"
local spec_file = require "upstream.organism.spec_file"
local root, scratch = arg[1], arg[2]
assert(root and scratch, "usage: test_organism_spec.lua SOURCE_DIR SCRATCH_DIR")
os.execute(("mkdir -p '%s'"):format(scratch))

local function same(a, b, path)
  if type(a) ~= "table" or type(b) ~= "table" then
    assert(a == b and math.type(a) == math.type(b), ("%s: %s vs %s"):format(path, tostring(a), tostring(b)))
    return
  end
  for k, v in pairs(a) do same(v, b[k], path .. "." .. tostring(k)) end
  for k in pairs(b) do assert(a[k] ~= nil, path .. "." .. tostring(k) .. ": only in the second") end
end
local function names(spec)
  local set = {}
  for _, c in ipairs(spec.concepts) do set[c.name] = c end
  return set
end

local dir = root .. "/experiments/organism"
local refusal = spec_file.read(dir .. "/refusal.lua")
assert(spec_file.source(dir .. "/refusal.lua") == io.open(dir .. "/refusal.lua"):read("a"),
       "a spec without a base is kept as its own text")
for _, v in ipairs {"contextual", "gated"} do
  local path = ("%s/variants/%s.lua"):format(dir, v)
  local spec, bases = spec_file.read(path)
  assert(#bases >= 1 and bases[#bases]:match("refusal%.lua$"), v .. ": does not start from refusal.lua")
  assert(spec.name == "refusal_" .. v, v .. ": name " .. tostring(spec.name))
  local c = names(spec)
  assert(c.intimacy.weight == -1.0 and c.intimacy.contexts[1].with[1] == "social_stranger", v .. ": intimacy not gated")
  assert(c.social == nil and c.social_stranger and c.social_close, v .. ": social frame not replaced")
  assert(spec.threshold == refusal.threshold and spec.responses.refuse[1] == refusal.responses.refuse[1],
         v .. ": lost what it does not change")
  if v == "gated" then
    assert(c.violence == nil and c.malice == nil and c.arms_make and c.weapons.role == "filler", "gated: concept list")
  end
  organism.load(path)
  -- What a build keeps next to the organism reads back as the same table.
  local copy = scratch .. "/" .. v .. "_spec.lua"
  local f = assert(io.open(copy, "w"))
  f:write(spec_file.source(path))
  f:close()
  same(spec, spec_file.read(copy), v)
  organism.load(copy)
end

local function bad(text, want)
  local path = scratch .. "/bad_spec.lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  local ok, err = pcall(spec_file.read, path)
  assert(not ok and err:find(want, 1, true), ("expected %q, got %s"):format(want, tostring(err)))
end
bad(('local s = base "%s/refusal.lua"\nconcept(s, "nope")\nreturn s'):format(dir), 'concept: no entry named "nope"')
bad(('local s = base "%s/refusal.lua"\nreplace(s.concepts, "nope")\nreturn s'):format(dir), 'replace: no entry named "nope"')
bad('return base "missing.lua"', "cannot load spec")
print("ok: organism spec variants")
