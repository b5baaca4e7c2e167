-- Bindings that read long lists keep one Lua value per entry alive while they work; they must
-- grow the Lua stack for them (a C function is only promised 20 slots). Before the fix, a
-- 300-item intervention or 400-prompt direction selection wrote past the stack and corrupted
-- the heap: a crash or a garbage score, sometimes only later, in the garbage collector.
--   upstream tests/lua/test_binding_stack.lua
local upstream = require "upstream"

local d = 16
local model <close> = upstream.new_model({d_model = d, d_mlp = 32, n_layers = 2, n_heads = 2, n_kv_heads = 1,
                                          head_dim = 8, vocab_size = 40}, {seed = 7})

-- A grid whose one intervention ablates 300 directions.
local items = {}
for i = 1, 300 do
  local v = {}
  for j = 1, d do v[j] = math.sin(i * 31 + j) end
  items[i] = {kind = "ablate", vector = v}
end
local g <close> = upstream.grid {model = model, prompts = {{1, 5, 6, 7}}, refusal_ids = {3},
                                 interventions = {{label = "many", items = items}}, max_new_tokens = 1}
local rows = g:run()
assert(#rows == 2, "expected the baseline row and the intervention row, got " .. #rows)
for _, r in ipairs(rows) do assert(r.score == r.score, "score is NaN") end

-- Direction selection over 400 harmful and 400 harmless prompts.
local harmful, harmless = {}, {}
for i = 1, 400 do
  harmful[i] = {1, 5 + i % 7, 9, 2}
  harmless[i] = {1, 20 + i % 9, 9, 2}
end
local cand = model:directions(harmful, harmless, {positions = 1})
local sel = model:select_direction(cand, harmful, harmless, {refusal_ids = {3}, max_kl = 1e9, min_induce = -1e9})
assert(#sel.scores == 2, "expected one score per candidate")
-- Lists of id lists share one reader (lua_tensor.c): bad input raises a message naming the
-- problem, in every binding that takes them, and what was read so far is Lua's to collect.
local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern), ("error %q does not match %q"):format(tostring(err), pattern))
end
raises("non%-empty list of token id lists", model.directions, model, {}, harmless)
raises("every entry must be a list", model.directions, model, harmful, {{1, 2}, "x"})
raises("must be non%-empty", upstream.collect_activations, model, {{1, 2}, {}}, 0)
raises("non%-negative integers", upstream.collect_activations, model, {{1, -2}}, 0)
raises("harmful: token ids must be non%-negative integers", model.select_direction, model, cand, {{1, 2.5}}, harmless,
       {refusal_ids = {3}})
raises("data.ids: every entry", model.eval_loss, model, {ids = {{1, 2}, 7}, loss_from = {1, 1}})
-- Lists of integers share one reader too: a non-integer entry is an error, never a silent 0
-- (model:gradient read positions = {"x"} as position 0 before).
local unit = {}
for j = 1, d do unit[j] = j == 1 and 1 or 0 end
local grad_opts = {source = 0, target = 1, direction = unit}
assert(model:gradient({1, 5, 6, 7}, grad_opts), "gradient with default positions")
grad_opts.positions = {"x"}
raises("opts.positions: entry 1 is not an integer", model.gradient, model, {1, 5, 6, 7}, grad_opts)
grad_opts.positions = "last"
raises("opts.positions: expected a table of integers", model.gradient, model, {1, 5, 6, 7}, grad_opts)
grad_opts.positions = {}
raises("positions must not be empty", model.gradient, model, {1, 5, 6, 7}, grad_opts)
-- Vectors share one reader, whose messages name the argument.
grad_opts.positions = nil
local bad = {}
for j = 1, d do bad[j] = j == 3 and "x" or 0 end
grad_opts.direction = bad
raises("opts.direction: entry 3 is not a number", model.gradient, model, {1, 5, 6, 7}, grad_opts)
grad_opts.direction = {1, 0}
raises(("opts.direction: expected a Tensor or a table of %d numbers"):format(d), model.gradient, model, {1, 5, 6, 7},
       grad_opts)
grad_opts.direction = upstream.normalize({1, 0}) -- a Tensor of 2 values
raises(("opts.direction: expected %d values, got a tensor of 2"):format(d), model.gradient, model, {1, 5, 6, 7},
       grad_opts)
raises("scores: entry 2 is not a number", upstream.auroc, {0.5, "x"}, {1, 0})
assert(upstream.auroc({0.9, 0.1}, {1, 0}) == 1, "auroc of a perfect ranking")
raises("spec.refusal_ids: entry 1 is not an integer", upstream.grid,
       {model = model, prompts = {{1, 5, 6, 7}}, refusal_ids = {2.5}})
collectgarbage()
collectgarbage()
print("binding stack ok")
