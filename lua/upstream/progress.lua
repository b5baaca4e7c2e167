-- upstream.progress: the one progress bar of the Lua side, for every step that can run for more
-- than a few seconds on a real model (direction candidates, baselines, sensitivity sweeps,
-- latent labelling, organism stages). It looks like the steering grid's bar (core/method/grid.c,
-- up_grid_progress_format) with a label in front:
--
--   on a terminal   label: [#########.....................] 12/40 prompts  1.52 prompts/s  ETA 0:18
--                   one line redrawn in place (\r, at most every 0.1 s), ended by the last update;
--   elsewhere       label: 12/40 prompts  1.52 prompts/s  ETA 0:18
--                   (a log file, a pipe) a line at most every `interval` seconds (5), then the
--                   final one: label: 40/40 prompts  1.49 prompts/s  done in 0:27
--
--   local p = progress.new(label, total[, opts]) -> bar
--     opts.quiet      true: nothing is written (upstream run --quiet; X.quiet)
--     opts.stream     file handle written to (io.stderr)
--     opts.tty        redraw one line (default: the stream is stderr and stderr is a terminal)
--     opts.unit       what is counted ("prompts", "attributions"; default none)
--     opts.interval   seconds between lines off a terminal (5)
--     opts.clock      function() -> seconds (upstream.clock; a test passes its own)
--     opts.start      when the work began, on that clock (default: now): the rate counts from it
--   p:update(done[, note])  done of total finished (note: a short word shown after the ETA);
--                           reaching total writes the final line
--   p:resume(done)          done items were finished before (a resumed training): counted,
--                           but left out of the rate, whose clock restarts now
--   p:finish([note])        writes the final line now when total was not reached (a sweep that
--                           skipped items, a selection that stopped at its winner; note says
--                           why) and ends a drawn line; idempotent. A bar is also a
--                           to-be-closed value: `local p <close> = ...` ends its line on an error.
--   progress.sets(p, sizes, names) -> function(done, total): for a binding that reports each of
--                           several sets from 0 again, in order (model:directions: harmful, then
--                           harmless), moves p over all of them, the running set's name as note.
--   progress.clear()        erases a bar drawn on the terminal before something else is written
--                           there (X:log calls it); the bar comes back at its next update.
-- Rate is items done per second since the bar was made (or resumed); ETA is (total - done) /
-- rate. Neither is shown before the first item is done.
local core = require "upstream.core"

local M = {}
M.width, M.interval, M.redraw = 30, 5, 0.1

local Bar = {}
Bar.__index = Bar

-- The bar currently drawn, unfinished, on a terminal line (nil: none).
local drawn

-- m:ss, or h:mm:ss from an hour on (the grid's ETA format).
local function clock_text(seconds)
  local s = math.floor(seconds + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(s // 3600, s // 60 % 60, s % 60) end
  return ("%d:%02d"):format(s // 60, s % 60)
end

function M.new(label, total, opts)
  opts = opts or {}
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = stream == io.stderr and core.isatty(2) end
  local clock = opts.clock or core.clock
  local t0 = opts.start or clock()
  return setmetatable({label = label, total = total, done = 0, quiet = opts.quiet or core.dist.rank ~= 0, stream = stream,
                       tty = tty, unit = opts.unit and (" " .. opts.unit) or "", interval = opts.interval or M.interval,
                       clock = clock, t0 = t0, last = t0, base = 0, finished = false}, Bar)
end

-- The bar's text at time t: with the drawn bar when width > 0, and "done in" once final.
function Bar:line(t, width, final)
  local parts = {self.label, ": "}
  if width > 0 then
    local frac = self.total > 0 and math.min(self.done / self.total, 1) or 1
    local filled = math.floor(frac * width + 0.5)
    parts[#parts + 1] = "[" .. ("#"):rep(filled) .. ("."):rep(width - filled) .. "] "
  end
  parts[#parts + 1] = ("%d/%d%s"):format(self.done, self.total, self.unit)
  local elapsed = t - self.t0
  local rate = self.done > self.base and elapsed > 0 and (self.done - self.base) / elapsed or nil
  if rate then parts[#parts + 1] = ("  %.3g%s/s"):format(rate, self.unit) end
  if final then parts[#parts + 1] = "  done in " .. clock_text(elapsed)
  elseif rate then parts[#parts + 1] = "  ETA " .. clock_text(math.max(0, self.total - self.done) / rate) end
  if self.note and self.note ~= "" then parts[#parts + 1] = "  " .. self.note end
  return table.concat(parts)
end

function Bar:_write(text)
  self.stream:write(text)
  self.stream:flush()
end

function Bar:update(done, note)
  if self.finished then return end
  self.done, self.note = done, note
  if done >= self.total then return self:finish() end
  if self.quiet then return end
  local t = self.clock()
  if self.tty then
    if drawn == self and t - self.last < M.redraw then return end
    if drawn and drawn ~= self then M.clear() end
    self:_write("\r" .. self:line(t, M.width, false) .. "\27[K")
    drawn, self.last = self, t
  elseif t - self.last >= self.interval then
    self:_write(self:line(t, 0, false) .. "\n")
    self.last = t
  end
end

function Bar:resume(done)
  self.done, self.base, self.t0 = done, done, self.clock()
end

function Bar:finish(note)
  if self.finished then return end
  self.finished = true
  if note then self.note = note end
  if self.quiet then return end
  if drawn and drawn ~= self then M.clear() end
  local t = self.clock()
  if self.tty then self:_write("\r" .. self:line(t, M.width, true) .. "\27[K\n")
  else self:_write(self:line(t, 0, true) .. "\n") end
  if drawn == self then drawn = nil end
end

-- Closed by an error (or a scope left early): end the drawn line so the message starts on its own.
function Bar:__close()
  if self.finished then return end
  self.finished = true
  if drawn == self then
    self:_write("\n")
    drawn = nil
  end
end

function M.sets(p, sizes, names)
  local i, offset = 1, 0
  local function skip_empty()
    while sizes[i] and sizes[i] <= 0 do i = i + 1 end
  end
  skip_empty()
  return function(done)
    p:update(offset + done, names and names[i])
    if sizes[i] and done >= sizes[i] then
      offset, i = offset + sizes[i], i + 1
      skip_empty()
    end
  end
end

function M.clear()
  if not drawn then return end
  drawn:_write("\r\27[K")
  drawn = nil
end

return M
