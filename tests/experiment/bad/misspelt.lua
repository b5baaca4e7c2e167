-- A declaration with a misspelt field: the error names this file and line 4.
local upstream = require "upstream"

local X = upstream.experiment {
  name = "bad",
  sorce_layers = {1},
}
X:finish()
