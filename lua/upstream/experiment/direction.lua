-- upstream.experiment.direction: X:direction, the refusal direction every later step uses:
-- read from a file (a run's or the model's direction.safetensors), the difference of means
-- at a position and layer, or chosen by Arditi et al.'s selection (whose table it writes). The
-- unit vector is saved as the run's direction.safetensors and recorded in the manifest.
-- vector(dir) gives the vector of a direction result or passes a Tensor/list through.
local core = require "upstream.core"
local util = require "upstream.util"
local csv = require "upstream.csv"
local progress = require "upstream.progress"
local step = require("upstream.experiment.manifest").step
local class = require "upstream.experiment.class"
local Experiment = class.Experiment

-- The vector of a direction (X:direction's result), or a Tensor or list given as one.
local function direction_vector(dir)
  if type(dir) == "table" and dir.vector then return dir.vector end
  return dir
end

local function ids_of(self, list)
  local out = {}
  for i, p in ipairs(list) do out[i] = type(p) == "string" and self:encode(p) or p end
  return out
end

local direction_fields = {
  from = "string", path = "string", pos = "integer", layer = "integer", harmful = "string|table",
  harmless = "string|table", max_layer_frac = "number", max_kl = "number", min_induce = "number", batch = "integer",
  -- Selection: mode "lazy" (default: the layers max_layer_frac drops never run, induce and KL
  -- only until the winner) or "full" (every score, for the complete figure); score only these
  -- layers / positions (default all); in full mode skip the layers max_layer_frac drops
  -- anyway; score on the first n_eval prompts of each set.
  mode = "string", layers = "integers", positions = "integers", skip_late_layers = "boolean", n_eval = "integer",
}

local pass_labels = {all = "direction selection", bypass = "direction selection: bypass",
                     filters = "direction selection: induce and KL, by bypass"}

-- A progress function for model:select_direction: one bar per pass on stderr (upstream.progress).
local function selection_progress(self)
  local bar, pass
  local since = core.clock() -- when the running pass began: the first one now, the next as the last ends
  local fn = function(p)
    if p.pass ~= pass then
      if bar then bar:finish() end
      bar, pass = progress.new(pass_labels[p.pass], p.total, {quiet = self.quiet, unit = "candidates", start = since}), p.pass
    end
    since = core.clock()
    local note
    if p.pass ~= "bypass" then
      note = ("%d passed; pos %d layer %d %s"):format(p.n_passed, p.pos, p.layer, p.passed and "passes" or "dropped")
    end
    bar:update(p.done, note)
  end
  local finish = function()
    if bar then bar:finish(pass == "filters" and bar.done < bar.total and "stopped at the first that passes" or nil) end
  end
  return fn, finish
end

local function prompt_set(self, v, default)
  if type(v) == "table" then return v end
  return self:prompts(v or default)
end

function Experiment:_candidates(spec)
  local m, tok = self:model(), self:tokenizer()
  local harmful = ids_of(self, prompt_set(self, spec.harmful, "harmful"))
  local harmless = ids_of(self, prompt_set(self, spec.harmless, "harmless"))
  local n_pos = tok:post_instruction_count(self.model_entry.template)
  self:log("difference-in-means candidates: %d harmful, %d harmless prompts", #harmful, #harmless)
  local bar <close> = self:progress("direction candidates", #harmful + #harmless, {unit = "prompts"})
  local cands = m:directions(harmful, harmless, {positions = n_pos, batch = spec.batch or 8,
    progress = progress.sets(bar, {#harmful, #harmless}, {"harmful", "harmless"})})
  return cands, harmful, harmless, n_pos
end

-- The candidate at (pos, layer) of a (n_pos, n_layers, d) tensor; source names the tensor.
local function candidate(cands, n_pos, pos, layer, d, source)
  local n_layers = cands:shape()[2]
  if layer < 0 or layer >= n_layers then
    util.fail("direction: layer %d is not a layer of %s (%d layers: 0-%d)", layer, source, n_layers, n_layers - 1)
  end
  if pos >= 0 or -pos > n_pos then
    util.fail("direction: pos %d is not a position of %s (%d positions: -%d..-1)", pos, source, n_pos, n_pos)
  end
  local v = {}
  for j = 1, d do v[j] = cands:at(n_pos + pos + 1, layer + 1, j) end
  return v
end

Experiment.direction = step("direction", function(self, spec)
  if spec == nil and self._direction then return self._direction end
  spec = spec or self.direction_spec
  if type(spec) == "string" then
    -- A path (--set direction=results/direction/<run>/direction.safetensors) is a saved direction.
    if spec:match("%.safetensors$") then spec = {from = "file", path = spec} else spec = {from = spec} end
  end
  util.check_fields(spec, direction_fields, "direction")
  if spec.layer then self:_check_layer(spec.layer, "direction: layer") end
  for _, l in ipairs(spec.layers or {}) do self:_check_layer(l, "direction: layers: layer") end
  local from = spec.from or "auto"
  local m = self:model()
  local cfgm = m:config()
  local d = cfgm.d_model
  local dirfile = spec.path or (self.model_entry.path .. "/direction.safetensors")
  if from == "auto" then from = util.exists(dirfile) and "file" or "select" end
  local org_dir = self.organism and self.organism.direction or {}
  local result = {from = from}
  local vec
  if from == "file" then
    if not util.exists(dirfile) then util.fail("direction: no file %s", dirfile) end
    local t, meta = core.load_safetensors(dirfile)
    -- Where the vector was taken: the spec, else the file's own metadata (a run's
    -- direction.safetensors, an organism's), else organism.json, else the target layer.
    local function meta_int(k) return meta and math.tointeger(tonumber(meta[k] or "")) end
    result.path = dirfile
    result.pos = spec.pos or meta_int("pos") or org_dir.pos
    result.layer = spec.layer or meta_int("layer") or org_dir.layer or self.target_layer
    if t.direction and not (spec.pos and t.candidates) then
      vec = t.direction
    elseif t.candidates then
      local shape = t.candidates:shape()
      if not result.pos or not result.layer then util.fail("direction: %s has candidates only; give pos and layer", dirfile) end
      vec = candidate(t.candidates, shape[1], result.pos, result.layer, d, dirfile)
    else
      util.fail("direction: %s has neither 'direction' nor 'candidates'", dirfile)
    end
    if #vec ~= d then
      util.fail("direction: %s holds %d values, but model '%s' has d_model %d", dirfile, #vec, self.model_name, d)
    end
  elseif from == "means" or from == "select" then
    local cands, harmful, harmless, n_pos = self:_candidates(spec)
    if from == "select" then
      local eval_harmful, eval_harmless = harmful, harmless
      if spec.n_eval then
        if spec.n_eval < 1 then util.fail("direction: n_eval must be at least 1, got %d", spec.n_eval) end
        eval_harmful = table.move(harmful, 1, math.min(spec.n_eval, #harmful), 1, {})
        eval_harmless = table.move(harmless, 1, math.min(spec.n_eval, #harmless), 1, {})
      end
      local mode = spec.mode or "lazy"
      if mode ~= "lazy" and mode ~= "full" then util.fail("direction: mode must be lazy or full, got '%s'", mode) end
      local batch = spec.batch or 8
      self:log("selecting the direction (%s) among %d positions x %d layers, on %d harmful and %d harmless prompts, " ..
               "batch %d", mode, n_pos, cfgm.n_layers, #eval_harmful, #eval_harmless, batch)
      local on_progress, finish = selection_progress(self)
      local sel = m:select_direction(cands, eval_harmful, eval_harmless, {refusal_ids = self:refusal_ids(),
        max_layer_frac = spec.max_layer_frac, max_kl = spec.max_kl, min_induce = spec.min_induce, batch = batch,
        layers = spec.layers, positions = spec.positions, skip_late_layers = spec.skip_late_layers, mode = mode,
        progress = on_progress})
      finish()
      result.selection = sel
      local n_bypass, n_all = 0, 0
      for _, sc in ipairs(sel.scores) do
        if not sc.dropped:find("unscored", 1, true) then
          n_bypass = n_bypass + 1
          if sc.kl then n_all = n_all + 1 end
        end
      end
      self:log("scored %d of %d candidates (induce and KL for %d), %d kept", n_bypass, #sel.scores, n_all, sel.n_kept)
      local rows = {}
      for _, s in ipairs(sel.scores) do
        local chosen = sel.best and s.pos == sel.best.pos and s.layer == sel.best.layer or false
        rows[#rows + 1] = csv.record({pos = s.pos, layer = s.layer, bypass = s.bypass, induce = s.induce, kl = s.kl,
          dropped = type(s.dropped) == "string" and s.dropped or "", chosen = chosen}, {"pos", "layer", "bypass", "induce", "kl", "dropped", "chosen"})
      end
      self:table("direction_selection", rows, {title = ("Direction selection (Arditi et al.), %s mode: every candidate " ..
        "(unscored: never run; bypass_only: induce and KL not needed)"):format(mode), show = 10})
      if sel.best then
        vec, result.pos, result.layer = sel.direction, sel.best.pos, sel.best.layer
      else
        from = "means"
        self:note(("No candidate passed the selection filters (%d kept); the direction falls back to the " ..
          "difference of means at the last position of layer %s."):format(sel.n_kept or 0, tostring(spec.layer or self.target_layer)))
      end
      result.n_pos = n_pos
      self._selection_for_plot = {sel = sel, n_pos = n_pos, n_layers = cfgm.n_layers}
    end
    if not vec then
      result.pos = spec.pos or -1
      result.layer = spec.layer or self.target_layer or cfgm.n_layers // 2
      vec = candidate(cands, n_pos, result.pos, result.layer, d, "the difference-of-means candidates")
    end
    result.from = from
  else
    util.fail("direction: from must be auto, file, means or select, got '%s'", from)
  end
  local unit, norm = core.normalize(vec)
  -- A zero or non-finite vector has no direction: every R and dR of the run would be NaN.
  if not (norm > 0 and norm < math.huge) then
    util.fail("direction: %s %s; a direction must be a non-zero vector of finite numbers",
              result.path or ("the " .. from .. " direction"), norm == 0 and "is all zeros" or "holds NaN or infinite values")
  end
  result.vector, result.norm = unit, norm
  -- Where the direction lives, by name: r is a difference of the block inputs at its layer, so
  -- steering or ablating it there needs no arithmetic (X:steer{direction = dir} adds it here).
  result.hook = result.layer and ("blocks.%d.hook_resid_pre"):format(result.layer) or nil
  -- The unit vector every later step used, so a table can be recomputed without this run.
  if core.dist.rank == 0 then core.save_safetensors(self.results_dir .. "/direction.safetensors", {direction = unit},
    {from = result.from, layer = tostring(result.layer), pos = tostring(result.pos), norm = ("%.9g"):format(norm),
     hook = result.hook}) end
  if not self.target_layer then self.target_layer = result.layer end
  self._manifest.direction = {from = result.from, path = result.path, pos = result.pos, layer = result.layer,
                              hook = result.hook, norm = norm}
  self._direction = result
  self:log("direction: %s, layer %s, position %s, norm %.4g", result.from, tostring(result.layer), tostring(result.pos), norm)
  return result
end)

return {vector = direction_vector}
