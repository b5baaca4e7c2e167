-- experiments/direction.lua: see experiments/lib/direction.lua (what it studies, its params).
--   upstream run experiments/direction.lua [--model NAME|DIR] [--set KEY=VALUE ...]
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local C = dofile(here .. "/lib/common.lua")
return C.main(dofile(here .. "/lib/direction.lua"))
