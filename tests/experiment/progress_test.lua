-- upstream.progress, the bar of every long step: its lines off a terminal (done/total, rate,
-- ETA, at most one every interval seconds, then the final one), its redrawn line on a
-- terminal, silence when quiet, sets reported one after another, and a real run: `upstream
-- run` shows the bars of the direction candidates and of label_text labelling on stderr and
-- --quiet shows nothing. Also collect_activations with a progress function returns the same
-- bits as without.
-- usage: upstream tests/experiment/progress_test.lua SOURCE_DIR UPSTREAM_EXE
local upstream = require "upstream"
local progress = require "upstream.progress"
local root, exe = arg[1] or ".", arg[2]
assert(exe, "usage: progress_test.lua SOURCE_DIR UPSTREAM_EXE")

local t = dofile(root .. "/tests/experiment/harness.lua")
local check = t.check

-- A bar writing to a temporary file, on a clock the test moves; returns the bar, the clock
-- setter and a reader of what was written.
local function bar_to_file(label, total, opts)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  local t = 100
  opts.stream, opts.clock = f, function() return t end
  local p = progress.new(label, total, opts)
  return p, function(s) t = s end, function()
    f:close()
    local text = io.open(path):read("a")
    os.remove(path)
    return text
  end
end

local function lines(text)
  local out = {}
  for l in text:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- Off a terminal: a line at most every 5 s, then the final one.
do
  local p, at, read = bar_to_file("candidates", 12, {unit = "prompts", tty = false})
  for i = 1, 12 do at(100 + i); p:update(i, "harmful") end
  p:finish() -- already final: writes nothing more
  local got = lines(read())
  check("lines every 5 s and the final one", #got == 3, #got)
  check("first line", got[1] == "candidates: 5/12 prompts  1 prompts/s  ETA 0:07  harmful", got[1])
  check("second line", got[2] == "candidates: 10/12 prompts  1 prompts/s  ETA 0:02  harmful", got[2])
  check("final line", got[3] == "candidates: 12/12 prompts  1 prompts/s  done in 0:12  harmful", got[3])
end

-- interval 0: every update; no rate or ETA before the first item; finish short of total
-- writes the count reached as the final line.
do
  local p, at, read = bar_to_file("sweep", 4, {tty = false, interval = 0})
  at(101); p:update(0)
  at(102); p:update(1)
  at(104); p:finish()
  local got = lines(read())
  check("every update at interval 0", #got == 3, #got)
  check("no rate before the first item", got[1] == "sweep: 0/4", got[1])
  check("rate and ETA", got[2] == "sweep: 1/4  0.5/s  ETA 0:06", got[2])
  check("finish short of total", got[3] == "sweep: 1/4  0.25/s  done in 0:04", got[3])
end

-- On a terminal: one line redrawn with \r and the grid's bar, ended by a newline.
do
  local p, at, read = bar_to_file("grid-like", 3, {tty = true})
  for i = 1, 3 do at(100 + i); p:update(i) end
  local text = read()
  check("redrawn line", select(2, text:gsub("\r", "")) == 3, text)
  check("bar drawn", text:find("\rgrid-like: [##########....................] 1/3  1/s  ETA 0:02\27[K", 1, true) ~= nil, text)
  check("final bar ends the line",
        text:sub(-#"] 3/3  1/s  done in 0:03\27[K\n") == "] 3/3  1/s  done in 0:03\27[K\n", text)
end

-- Quiet: nothing at all.
do
  local p, at, read = bar_to_file("quiet", 2, {tty = false, interval = 0, quiet = true})
  at(101); p:update(1); at(102); p:update(2); p:finish()
  check("quiet writes nothing", read() == "")
end

-- Sets reported from 0 again (harmful, then harmless) move one bar over both.
do
  local p, _, read = bar_to_file("sets", 5, {tty = false, interval = 0})
  local f = progress.sets(p, {3, 2}, {"harmful", "harmless"})
  f(2, 3); f(3, 3); f(2, 2)
  local got = lines(read())
  check("sets: cumulative counts", #got == 3 and got[1]:find("^sets: 2/5") and got[2]:find("^sets: 3/5")
        and got[3]:find("^sets: 5/5"), table.concat(got, " | "))
  check("sets: the running set's name", got[1]:find("harmful$") and got[3]:find("harmless$"), table.concat(got, " | "))
end

-- collect_activations with a progress function: the same rows, bit for bit, and done/total
-- after each batch; an error in the function is raised.
do
  local m <close> = upstream.model(root .. "/tests/golden/tiny_f32")
  local seqs = {}
  for i = 1, 7 do
    local ids = {}
    for j = 1, 3 + i do ids[j] = (i * 7 + j * 3) % 300 + 2 end
    seqs[i] = ids
  end
  local plain = upstream.collect_activations(m, seqs, 1, {batch = 3})
  local calls = {}
  local with = upstream.collect_activations(m, seqs, 1, {batch = 3, progress = function(done, total)
    calls[#calls + 1] = done .. "/" .. total
  end})
  local same = plain:shape()[1] == with:shape()[1] and plain:shape()[2] == with:shape()[2]
  if same then
    for i = 1, plain:shape()[1] do
      for j = 1, plain:shape()[2] do same = same and plain:at(i, j) == with:at(i, j) end
    end
  end
  check("collect_activations: same rows with progress", same)
  check("collect_activations: progress per batch", table.concat(calls, " ") == "3/7 6/7 7/7", table.concat(calls, " "))
  local capped = upstream.collect_activations(m, seqs, 1, {batch = 3, max_rows = 10, progress = function() end})
  local capped_plain = upstream.collect_activations(m, seqs, 1, {batch = 3, max_rows = 10})
  check("collect_activations: max_rows with progress", capped:shape()[1] == 10 and capped:at(10, 5) == capped_plain:at(10, 5))
  local ok, err = pcall(upstream.collect_activations, m, seqs, 1, {batch = 3, progress = function() error("stop here") end})
  check("collect_activations: the progress function's error", not ok and tostring(err):find("stop here", 1, true), err)
end

-- A real run: the bars on stderr (not a terminal: the final lines), none with --quiet.
do
  local tmp = os.tmpname()
  os.remove(tmp)
  local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  local function run(extra)
    local errf = tmp .. ".err"
    local cmd = ("%s run %s --config %s --set results=%s --set plots=%s --set cache=%s %s 2>%s >/dev/null"):format(
      q(exe), q(root .. "/tests/experiment/progress_exp.lua"), q(root .. "/tests/experiment/labels.cfg"),
      q(tmp .. "/results"), q(tmp .. "/plots"), q(tmp .. "/cache"), extra, q(errf))
    local ok = os.execute(cmd)
    local text = io.open(errf):read("a")
    os.remove(errf)
    return ok, text
  end
  local ok, text = run("")
  check("run without --quiet", ok, text)
  check("direction candidates' final line",
        text:find("\ndirection candidates: 6/6 prompts  [%d.e+-]+ prompts/s  done in 0:%d%d  harmless\n") ~= nil, text)
  check("label_text's final line", text:find("\nlabel_text text layer 1: 5/5 lines  [%d.e+-]+ lines/s  done in 0:%d%d\n") ~= nil,
        text)
  ok, text = run("--quiet")
  check("run with --quiet", ok, text)
  check("--quiet: nothing on stderr", text == "", text)
  os.execute("rm -rf " .. q(tmp))
end

t.finish("progress")
