-- upstream.progress: one progress bar on stderr for any long Lua-side step, drawn as the
-- steering grid draws its own (lua/lua_steer.c): on a terminal a bar redrawn in place
-- ("label [####......] done/total unit  rate unit/s  ETA m:ss  note"), elsewhere (a log
-- file, a pipe) a plain line every few seconds; silent when quiet.
--   local p = progress.new(label, total, {quiet = X.quiet, unit = "candidates", interval = 5, start = t0})
--   p:update(done[, note])   done of total so far; note is free text after the numbers
--   p:finish([note])         the last line (ends the terminal's bar); a second call does nothing
-- Rate and ETA come from the done count over the seconds since opts.start (the upstream.clock()
-- time the work began; default: now, at new); total may be an upper bound (a step that can stop
-- early says so in its note and finishes below it).
-- Error rule: misuse (no label, a negative total) raises.
local core = require "upstream.core"

local M = {}
local Progress = {}
Progress.__index = Progress

function M.new(label, total, opts)
  assert(type(label) == "string", "progress.new: label must be a string")
  assert(math.type(total) == "integer" and total >= 0, "progress.new: total must be a non-negative integer")
  opts = opts or {}
  return setmetatable({label = label, total = total, unit = opts.unit or "done", quiet = opts.quiet or false,
    interval = opts.interval or 5, tty = core.stderr_is_terminal and core.stderr_is_terminal() or false,
    start = opts.start or core.clock(), last = core.clock(), done = 0, note = nil, finished = false}, Progress)
end

local function clock_text(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

-- The line without the label; a bar of width characters when width > 0.
function Progress:line(width)
  local parts = {}
  if width > 0 then
    local frac = self.total > 0 and math.min(self.done / self.total, 1) or 1
    local filled = math.floor(frac * width + 0.5)
    parts[#parts + 1] = "[" .. ("#"):rep(filled) .. ("."):rep(width - filled) .. "]"
  end
  parts[#parts + 1] = ("%d/%d %s"):format(self.done, self.total, self.unit)
  local elapsed = core.clock() - self.start
  if self.done > 0 and elapsed > 0 then
    local rate = self.done / elapsed
    parts[#parts + 1] = rate >= 1 and ("%.3g/s"):format(rate) or ("%.3g s each"):format(1 / rate)
    if not self.finished and self.done < self.total then parts[#parts + 1] = "ETA " .. clock_text((self.total - self.done) / rate) end
  end
  if self.finished then parts[#parts + 1] = "in " .. clock_text(elapsed) end
  if self.note and self.note ~= "" then parts[#parts + 1] = self.note end
  return table.concat(parts, "  ")
end

function Progress:update(done, note)
  self.done, self.note = done, note or self.note
  if self.quiet or self.finished then return end
  local t = core.clock()
  if self.tty then
    if t - self.last < 0.1 and done < self.total then return end
    io.stderr:write("\r", self.label, " ", self:line(30), "\27[K")
  else
    if t - self.last < self.interval then return end
    io.stderr:write(self.label, ": ", self:line(0), "\n")
  end
  io.stderr:flush()
  self.last = t
end

function Progress:finish(note)
  if self.finished then return end
  self.finished, self.note = true, note or self.note
  if self.quiet then return end
  if self.tty then io.stderr:write("\r", self.label, " ", self:line(30), "\27[K\n")
  else io.stderr:write(self.label, ": ", self:line(0), "\n") end
  io.stderr:flush()
end

return M
