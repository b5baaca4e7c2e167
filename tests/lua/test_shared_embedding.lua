-- upstream.new_model's shared_embedding: every embedding row moves by the same vector, of the
-- asked norm, and nothing else changes; a negative value is an error.
--   upstream tests/lua/test_shared_embedding.lua
local upstream = require "upstream"
local cfg = {d_model = 32, d_mlp = 64, n_layers = 2, n_heads = 2, n_kv_heads = 1, head_dim = 16, vocab_size = 50}
local tmp = os.tmpname()
os.remove(tmp)
local function weights(opts, dir)
  local m <close> = upstream.new_model(cfg, opts)
  m:save(dir)
  return (upstream.load_safetensors(dir .. "/model.safetensors"))
end
local plain = weights({seed = 3}, tmp .. "/plain")
local shared = weights({seed = 3, shared_embedding = 1.5}, tmp .. "/shared")
local E0, E1 = plain["model.embed_tokens.weight"], shared["model.embed_tokens.weight"]
local worst, sq = 0, 0
for j = 1, cfg.d_model do
  local u = E1:at(1, j) - E0:at(1, j)
  sq = sq + u * u
  for v = 2, cfg.vocab_size do worst = math.max(worst, math.abs((E1:at(v, j) - E0:at(v, j)) - u)) end
end
assert(math.abs(math.sqrt(sq) - 1.5) < 1e-4, "shared component norm " .. math.sqrt(sq))
assert(worst < 1e-5, "rows moved by different vectors: " .. worst)
local others = 0
for name, t in pairs(plain) do
  if name ~= "model.embed_tokens.weight" then
    local shape, u = t:shape(), shared[name]
    for i = 1, shape[1] do
      for j = 1, shape[2] or 1 do
        local a, b = shape[2] and t:at(i, j) or t:at(i), shape[2] and u:at(i, j) or u:at(i)
        assert(a == b, name .. " changed")
      end
    end
    others = others + 1
  end
end
assert(others > 5, "the other tensors were compared")
assert(not pcall(upstream.new_model, cfg, {shared_embedding = -1}), "a negative shared_embedding is an error")
os.execute("rm -rf '" .. tmp .. "'")
print("shared embedding ok")
