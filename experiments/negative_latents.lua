-- experiments/negative_latents.lua: see experiments/lib/negative_latents.lua (what it studies, its params).
--   upstream run experiments/negative_latents.lua [--model NAME|DIR] [--set KEY=VALUE ...]
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local C = dofile(here .. "/lib/common.lua")
return C.main(dofile(here .. "/lib/negative_latents.lua"))
