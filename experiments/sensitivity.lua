-- experiments/sensitivity.lua: see experiments/lib/sensitivity.lua (what it studies, its params).
--   upstream run experiments/sensitivity.lua [--model NAME|DIR] [--set KEY=VALUE ...]
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local C = dofile(here .. "/lib/common.lua")
return C.main(dofile(here .. "/lib/sensitivity.lua"))
