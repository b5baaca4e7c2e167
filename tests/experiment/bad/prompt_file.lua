-- A declared prompt set naming a file that is not there: the declaration (line 5) fails, before
-- any model loads.
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", prompts = {extra = "no_such_prompts.txt"}}
