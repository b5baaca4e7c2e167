-- `upstream dump` writes what the forward computes: compare a dump of golden case 1 with the
-- PyTorch goldens (same 1e-4 relative tolerance as test_forward.c), through the CLI end to end.
local upstream = require "upstream"
local exe, root, out = arg[1], arg[2], arg[3]
local dir = root .. "/tests/golden/tiny_f32"
local gold = upstream.load_safetensors(dir .. "/golden.safetensors")
local ids = gold["case1.input_ids"]:totable()
local list = {}
for i, v in ipairs(ids) do list[i] = ("%d"):format(math.tointeger(v)) end
local cmd = ("%q dump --model %q --ids %s --out %q --hooks all --logits all"):format(exe, dir, table.concat(list, ","), out)
assert(os.execute(cmd), "dump failed: " .. cmd)
local dump = upstream.load_safetensors(out)
local function check(name, ref)
  local a, b = dump[name], ref
  assert(a, "dump lacks " .. name)
  local ta, tb = a:totable(), b:totable()
  local worst, scale = 0, 1
  local function walk(x, y)
    if type(x) == "table" then for i = 1, #x do walk(x[i], y[i]) end return end
    worst = math.max(worst, math.abs(x - y)); scale = math.max(scale, math.abs(y))
  end
  walk(ta, tb)
  assert(worst / scale <= 1e-4, ("%s: relative error %g"):format(name, worst / scale))
end
check("input_ids", gold["case1.input_ids"])
check("logits", gold["case1.logits"])
for l = 0, 3 do
  for _, h in ipairs {"hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"} do
    check(("blocks.%d.%s"):format(l, h), gold[("case1.blocks.%d.%s"):format(l, h)])
  end
end
check("hook_embed", gold["case1.hook_embed"])
check("ln_final.hook_normalized", gold["case1.ln_final.hook_normalized"])
print("dump matches the PyTorch goldens")
