-- experiments/case_hugging.lua: case study "hugging" (experiments/lib/common.lua has the prompt, its
-- paraphrases and contrast; experiments/lib/case_study.lua what is computed and its params).
--   upstream run experiments/case_hugging.lua [--model NAME|DIR] [--set steer_k=5 --set alphas=-2,-1,0,1,2]
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local C = dofile(here .. "/lib/common.lua")
return C.main(dofile(here .. "/lib/case_study.lua")("hugging"))
