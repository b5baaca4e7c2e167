-- Replays one input through a fuzz driver in the plain host, without libFuzzer:
--   upstream tests/fuzz/lua/replay.lua DRIVER INPUT DIR
-- DIR is an empty scratch directory. An error the host calls a fault ends the script with a
-- traceback on stderr (lua_host.c), which replay_lua.sh looks for; a message for the user
-- is what the reader may raise.
local driver, input, dir = arg[1], arg[2], arg[3]
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local run = dofile(here .. "/" .. driver .. ".lua")
local f = assert(io.open(input, "rb"))
local data = f:read("a")
f:close()
run(data, dir)
