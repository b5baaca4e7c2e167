-- upstream.experiment.class: the two tables the experiment's modules fill. M is what
-- require "upstream.experiment" returns (new, share_loaded, the Attribution and Steering
-- classes, the label_text caps); Experiment holds the methods of a run (X:direction(),
-- X:steer{...}, ...). Each module of lua/upstream/experiment/ adds its concept's part;
-- init.lua loads them all, so a method exists once the module is required.
local M = {}
local Experiment = {}
Experiment.__index = Experiment
M.Experiment = Experiment

return {M = M, Experiment = Experiment}
