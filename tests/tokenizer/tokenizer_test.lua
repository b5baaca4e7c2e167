-- Lua bindings of the tokenizer on the tiny fixture (ids: see tests/test_tokenizer.c).
-- usage: upstream tests/tokenizer/tokenizer_test.lua SOURCE_DIR
local upstream = require "upstream"
local dir = (arg[1] or ".") .. "/tests/tokenizer/tiny"

local passed, failed = 0, 0
local function check(name, cond, detail)
  if cond then passed = passed + 1 else failed = failed + 1; print("FAIL " .. name .. (detail and (": " .. detail) or "")) end
end
local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
local function show(t) return "{" .. table.concat(t, ",") .. "}" end

do
  local tok <close> = upstream.tokenizer(dir)                -- a model directory
  check("vocab_size", tok:vocab_size() == 302)
  local ids = tok:encode("hello world")
  check("encode", same(ids, {282, 287}), show(ids))
  check("decode", tok:decode({282, 287}) == "hello world")
  check("decode skip_special", tok:decode({2, 282, 5}, true) == "hello")
  check("decode keeps special", tok:decode({2, 282}) == "<bos>hello")
  check("piece", tok:piece(282) == "hello")
  check("piece out of range", tok:piece(99999) == nil)
  check("id", tok:id("<start_of_turn>") == 4)
  check("id absent", tok:id("nope") == nil)
  check("bos/eos", tok:bos_id() == 2 and tok:eos_id() == 1)
  local chat = tok:chat("hello world")
  check("chat", same(chat, {2, 4, 291, 6, 282, 287, 5, 6, 4, 295, 6}), show(chat))
  check("chat template name", same(tok:chat("hello", "gemma"), {2, 4, 291, 6, 282, 5, 6, 4, 295, 6}))
  check("post_instruction_count", tok:post_instruction_count() == 5)
  check("stop_ids", same(tok:stop_ids(), {5, 1}))
  local bytes = "z\xff\0"
  check("byte fallback round trip", tok:decode(tok:encode("z€ ok")) == "z€ ok")
  check("embedded NUL and invalid UTF-8", tok:decode(tok:encode(bytes)) == "z\xEF\xBF\xBD\0")
  check("tostring", tostring(tok):match("vocab 302") ~= nil)

  local ok, err = pcall(tok.decode, tok, {1, 5000})
  check("decode bad id raises", not ok and err:match("5000") ~= nil, err)
  ok, err = pcall(tok.decode, tok, {1, "x"})
  check("decode non-integer raises", not ok and err:match("ids%[2%]") ~= nil, err)
  ok, err = pcall(tok.chat, tok, "hi", "nosuch")
  check("unknown template raises", not ok and err:match("unknown chat template") ~= nil, err)

  tok:close()
  tok:close()                                                 -- idempotent
  ok, err = pcall(tok.encode, tok, "x")
  check("closed raises", not ok and err:match("closed") ~= nil, err)
end                                                           -- __close after close: fine

local t2 = upstream.tokenizer(dir .. "/tokenizer.json")       -- a file
check("file path", #t2:encode("abc") == 1)
t2 = nil
collectgarbage()                                              -- __gc

local ok, err = pcall(upstream.tokenizer, "/nonexistent/dir")
check("missing file raises", not ok and err:match("/nonexistent/dir") ~= nil, err)
ok, err = pcall(upstream.tokenizer, arg[1] .. "/tests")
check("dir without tokenizer.json raises", not ok and err:match("no tokenizer.json in") ~= nil, err)

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
