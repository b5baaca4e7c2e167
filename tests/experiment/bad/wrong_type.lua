-- A field of the wrong type: the error names this file and line 4.
local upstream = require "upstream"

local X = upstream.experiment {name = "bad", target_layer = "three"}
