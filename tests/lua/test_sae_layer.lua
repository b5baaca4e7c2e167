-- upstream.sae(path, {layer = l | "any", parts = ...}): the layer a dictionary is read at.
-- A file that says nothing of its layer applies anywhere; {layer = l} pins it (attribute then
-- refuses another source layer, naming both); {layer = "any"} forgets a layer, even one the
-- path names, so one dictionary can be swept across source layers with scores equal to the
-- pinned run's where they meet; bad options are errors.
--   upstream tests/lua/test_sae_layer.lua SOURCE_DIR
local upstream = require "upstream"
local root = arg[1] or "."
local path = root .. "/tests/fixtures/sae/gemmascope_stored/params.npz"
local model <close> = upstream.model(root .. "/tests/golden/tiny_f32")
local d = model:config().d_model

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), ("error %q does not match %q"):format(tostring(err), pattern))
end

local unit = {}
for j = 1, d do unit[j] = math.cos(j) end
unit = upstream.normalize(unit)
local ids = {2, 17, 31, 44, 9, 12}
local function attribute(sae, source) return model:attribute(ids, sae, {source = source, target = 3, direction = unit}) end

local plain <close> = upstream.sae(path)
assert(plain:info().layer == -1, "the fixture's path names no layer")

local pinned <close> = upstream.sae(path, {layer = 1})
assert(pinned:info().layer == 1 and pinned:info().hook == "blocks.1.hook_resid_post",
       ("pinned: layer %s hook %s"):format(pinned:info().layer, pinned:info().hook))
raises("reads layer 1 but the source layer is 0", attribute, pinned, 0)

local any <close> = upstream.sae(path, {layer = "any", parts = "decoder"})
assert(any:info().layer == -1 and any:info().hook == "", "any: the layer is forgotten")
local at1, at0 = attribute(any, 1), attribute(any, 0)
local want = attribute(pinned, 1)
local n = any:info().d_sae
for k = 1, n do
  assert(at1.scores:at(k) == want.scores:at(k), ("latent %d: %g vs %g at layer 1"):format(k - 1, at1.scores:at(k), want.scores:at(k)))
end
local differs = false
for k = 1, n do differs = differs or at0.scores:at(k) ~= at1.scores:at(k) end
assert(differs, "layer 0 and layer 1 gave the same scores")

-- A layer named by the file's path (the organism's sae/layer_1/) is forgotten with "any".
local org = root .. "/models/organism"
local om <close> = upstream.model(org)
local opath = org .. "/sae/layer_1/params.npz"
local named <close> = upstream.sae(opath, "decoder")
assert(named:info().layer == 1, "the organism SAE's path names layer 1")
local ounit = {}
for j = 1, om:config().d_model do ounit[j] = math.sin(j) end
ounit = upstream.normalize(ounit)
local oreq = {source = 0, target = 3, direction = ounit}
raises("reads layer 1 but the source layer is 0", om.attribute, om, ids, named, oreq)
local swept <close> = upstream.sae(opath, {layer = "any", parts = "decoder"})
assert(swept:info().layer == -1, "any forgets the path's layer")
assert(om:attribute(ids, swept, oreq).scores, "the forgotten SAE applies at layer 0")

raises("opts.layer must be a layer index", upstream.sae, path, {layer = -3})
raises("opts.layer must be a layer index", upstream.sae, path, {layer = "all"})
raises("parts must be", upstream.sae, path, {parts = "weights"})
print("sae layer ok")
