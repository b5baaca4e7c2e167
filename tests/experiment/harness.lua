-- The tally the Lua experiment tests share: t.check(name, cond, detail) counts a check and
-- prints "FAIL name: detail" when it fails; t.raises(name, pattern, fn) checks that fn raises a
-- message matching the Lua pattern; t.finish(label) prints the tally and exits non-zero when a
-- check failed. Load with dofile(SOURCE_DIR .. "/tests/experiment/harness.lua").
local t = {passed = 0, failed = 0}

function t.check(name, cond, detail)
  if cond then t.passed = t.passed + 1
  else t.failed = t.failed + 1; print("FAIL " .. name .. (detail and (": " .. tostring(detail)) or "")) end
end

function t.raises(name, pattern, fn)
  local ok, err = pcall(fn)
  t.check(name, not ok and tostring(err):find(pattern) ~= nil, ok and "no error" or err)
end

function t.finish(label)
  print(("%s%d passed, %d failed"):format(label and (label .. ": ") or "", t.passed, t.failed))
  os.exit(t.failed == 0 and 0 or 1)
end

return t
