-- upstream.organism.stages: turns an organism specification into a trained model organism.
--
--   build(SPEC.lua, DIR, opts)   (upstream organism build SPEC.lua --out DIR [--smoke] [--set ...])
--
-- build stores a copy of the spec as DIR/spec.lua (eval reads it), then runs every stage in
-- order; each stage's output is written atomically and a stage whose output exists is skipped,
-- so a killed build resumes where it stopped (training itself resumes from its checkpoint at
-- DIR/work/train.state):
--   1. corpus      organism.corpus(spec) (deterministic from the seed; not stored)
--   2. tokenizer   BPE trained on every instruction and response   -> DIR/tokenizer.json
--   3. model       a Gemma-2 model trained on the chat-formatted corpus, loss on the response
--                  and its <end_of_turn>                          -> DIR/config.json, model.safetensors
--   4. direction   difference-in-means candidates on training prompts, Arditi selection
--                                                                 -> DIR/direction.safetensors
--   5. sae         an SAE on blocks.{l}.hook_resid_post over corpus tokens
--                                                                 -> DIR/sae/layer_{l}/params.npz
--   6. labels      every latent labelled by the concept it detects best (AUROC over tokens)
--                                                                 -> DIR/organism.json
-- Every stage logs to stderr and appends to DIR/build.log (the training log); its long parts
-- (training steps, forward passes over prompts, the detectors) show a progress bar on stderr
-- (upstream.progress) while build.log keeps the periodic lines. opts.quiet (--quiet): nothing on
-- stderr, build.log as ever. The recipe is upstream.organism.recipe's; the directory layout is
-- upstream.organism.store's.
-- Returns the build context ({spec, recipe, records, train = the training report when the
-- model stage trained}); a failing stage raises and leaves the finished stages in place.
local upstream = require "upstream"
local organism = require "upstream.organism"
local util = require "upstream.util"
local recipes = require "upstream.organism.recipe"
local records = require "upstream.organism.records"
local probes = require "upstream.organism.probes"
local store = require "upstream.organism.store"
local spec_file = require "upstream.organism.spec_file"
local progress = require "upstream.progress"

local fail, copy, exists, write_atomic = organism.fail, util.copy, util.exists, util.write_atomic
local sae_path = store.sae_path

local M = {}

-- ---------------------------------------------------------------- files and logging

local function mkdir(path)
  local ok, err = upstream.mkdirs(path)
  if not ok then fail("cannot create directory %s", err) end
end

local Log = {}
Log.__index = Log

local function open_log(path, quiet)
  local f = io.open(path, "ab") or fail("cannot append to %s", path)
  return setmetatable({f = f, t0 = os.time(), quiet = quiet}, Log)
end

-- A line in build.log only: what a progress bar shows on stderr meanwhile.
function Log:file_line(fmt, ...)
  local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
  self.f:write(stamp, " ", fmt:format(...), "\n")
  self.f:flush()
end

function Log:line(fmt, ...)
  self:file_line(fmt, ...)
  if self.quiet then return end
  progress.clear() -- a bar drawn on the terminal gives way; it is redrawn at its next update
  io.stderr:write(fmt:format(...), "\n")
end

-- A progress bar on stderr for a long part of a stage (silent under --quiet).
function Log:progress(label, total, unit)
  return progress.new(label, total, {quiet = self.quiet, unit = unit})
end

function Log:close() self.f:close() end

-- ---------------------------------------------------------------- stages

local function stage_tokenizer(ctx)
  local path = ctx.out .. "/tokenizer.json"
  if exists(path) then return ctx.log:line("tokenizer: %s exists, kept", path) end
  local info = upstream.train_bpe(organism.tokenizer_texts(ctx.records),
                                  {vocab_size = ctx.recipe.tokenizer.vocab_size, out = path})
  ctx.log:line("tokenizer: %d ids (%d merges, %d characters), %d words, %.2f s", info.vocab_size, info.n_merges,
               info.n_chars, info.n_words, info.seconds)
end

local function stage_model(ctx)
  local out = ctx.out
  if exists(out .. "/model.safetensors") and exists(out .. "/config.json") then
    return ctx.log:line("model: %s/model.safetensors exists, kept", out)
  end
  local rc, tc = ctx.recipe.model, ctx.recipe.train
  local tok <close> = upstream.tokenizer(out .. "/tokenizer.json")
  local cfg = copy(rc)
  cfg.seed, cfg.shared_embedding = nil, nil
  cfg.vocab_size = tok:vocab_size()
  cfg.query_pre_attn_scalar = rc.head_dim
  cfg.bos_id, cfg.eos_id, cfg.pad_id = tok:bos_id(), tok:eos_id(), tok:id("<pad>") or 0
  local data = records.training_data(tok, ctx.records, "train")
  local held = records.training_data(tok, ctx.records, "heldout", tc.heldout)
  local maxlen, shortest_prompt = 0, math.huge
  for i, ids in ipairs(data.ids) do
    maxlen = math.max(maxlen, #ids)
    shortest_prompt = math.min(shortest_prompt, data.loss_from[i])
  end
  cfg.max_position_embeddings = 512
  ctx.log:line("model: d_model %d, %d layers, %d heads / %d kv, d_mlp %d, window %d (shortest prompt %d tokens), "
               .. "vocab %d; %d training sequences (longest %d)", cfg.d_model, cfg.n_layers, cfg.n_heads,
               cfg.n_kv_heads, cfg.d_mlp, cfg.sliding_window, shortest_prompt, cfg.vocab_size, #data.ids, maxlen)
  local model <close> = upstream.new_model(cfg, {seed = rc.seed, shared_embedding = rc.shared_embedding})
  mkdir(out .. "/work")
  local opts = copy(tc)
  opts.heldout = held
  opts.checkpoint = out .. "/work/train.state"
  local last_print = -math.huge
  local bar <close> = ctx.log:progress("train", tc.steps, "steps")
  opts.progress = function(p)
    if p.heldout_loss then
      ctx.log:line("train: step %d/%d  loss %.4f  held-out loss %.4f  lr %.2e  |g| %.3f  %.0f s", p.step, p.steps,
                   p.loss, p.heldout_loss, p.lr, p.grad_norm, p.seconds)
    elseif p.step == 1 or p.step == p.steps or p.seconds - last_print >= 10 then
      last_print = p.seconds
      ctx.log:file_line("train: step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f s", p.step, p.steps, p.loss, p.lr,
                        p.grad_norm, p.seconds)
    end
    if p.resumed_from and p.resumed_from > 0 and bar.done == 0 then bar:resume(p.resumed_from) end
    bar:update(p.step, ("loss %.4f"):format(p.loss))
  end
  local r = model:train(data, opts)
  if r.resumed_from and r.resumed_from > 0 then ctx.log:line("train: resumed from step %d", r.resumed_from) end
  ctx.log:line("train: done, first loss %.4f, last loss %.4f, held-out loss %s", r.first_loss, r.last_loss,
               r.heldout_loss and ("%.4f"):format(r.heldout_loss) or "-")
  model:save(out)
  os.remove(out .. "/work/train.state")
  ctx.train = r
end

local function stage_direction(ctx)
  local path = ctx.out .. "/direction.safetensors"
  if exists(path) then return ctx.log:line("direction: %s exists, kept", path) end
  local dc = ctx.recipe.direction
  local model <close> = upstream.model(ctx.out)
  local tok <close> = upstream.tokenizer(ctx.out)
  -- The training split's harmful prompts the rule refuses and benign ones it answers: the
  -- eval's sets, drawn from the other split.
  local sets = organism.eval_sets(ctx.records, {split = "train"})
  local harmful, harmless = sets.harmful, sets.harmless
  local function slice(list, a, b)
    local out = {}
    for i = a, math.min(b, #list) do out[#out + 1] = list[i] end
    return out
  end
  local cand_harmful = records.chat_ids(tok, slice(harmful, 1, dc.n_candidates))
  local cand_harmless = records.chat_ids(tok, slice(harmless, 1, dc.n_candidates))
  local bar <close> = ctx.log:progress("direction candidates", #cand_harmful + #cand_harmless, "prompts")
  local cand = model:directions(cand_harmful, cand_harmless, {positions = dc.positions,
    progress = progress.sets(bar, {#cand_harmful, #cand_harmless}, {"harmful", "harmless"})})
  local refusal = records.refusal_ids(tok, ctx.spec)
  local last = dc.n_candidates + dc.n_select
  local sel = model:select_direction(cand, records.chat_ids(tok, slice(harmful, dc.n_candidates + 1, last)),
                                     records.chat_ids(tok, slice(harmless, dc.n_candidates + 1, last)),
                                     -- full: every candidate's scores in the build log (cheap at this size)
                                     {refusal_ids = refusal, max_kl = dc.max_kl, min_induce = dc.min_induce, mode = "full"})
  for _, c in ipairs(sel.scores) do
    if c.bypass then
      ctx.log:line("direction: candidate pos %d layer %d  bypass %8.3f  induce %8.3f  KL %7.4f  %s", c.pos, c.layer,
                   c.bypass, c.induce, c.kl, c.dropped)
    end
  end
  if not sel.best then fail("direction: no candidate passes the filters (%d candidates)", #sel.scores) end
  local unit, norm = upstream.normalize(sel.direction)
  local meta = {pos = tostring(sel.best.pos), layer = tostring(sel.best.layer), norm = ("%.9g"):format(norm),
                base_harmful = ("%.6g"):format(sel.base_harmful), base_harmless = ("%.6g"):format(sel.base_harmless)}
  for _, s in ipairs(sel.scores) do
    if s.pos == sel.best.pos and s.layer == sel.best.layer then
      meta.bypass, meta.induce, meta.kl = ("%.6g"):format(s.bypass), ("%.6g"):format(s.induce), ("%.6g"):format(s.kl)
    end
  end
  upstream.save_safetensors(path .. ".tmp", {direction = sel.direction, unit = unit, candidates = cand}, meta)
  assert(os.rename(path .. ".tmp", path))
  ctx.log:line("direction: pos %d, layer %d (resid_pre), |r| %.3f, bypass %s, induce %s, KL %s; %d of %d candidates "
               .. "kept; base harmful %.3f, harmless %.3f", sel.best.pos, sel.best.layer, norm, meta.bypass,
               meta.induce, meta.kl, sel.n_kept, #sel.scores, sel.base_harmful, sel.base_harmless)
end

local function stage_sae(ctx)
  local sc = ctx.recipe.sae
  local path = sae_path(ctx.out, sc.layer)
  if exists(path) then return ctx.log:line("sae: %s exists, kept", path) end
  local model <close> = upstream.model(ctx.out)
  local tok <close> = upstream.tokenizer(ctx.out)
  local eot = tok:id("<end_of_turn>")
  local seqs = {}
  for _, r in ipairs(ctx.records) do
    if r.split == "train" then
      seqs[#seqs + 1] = (records.encode_record(tok, r, eot))
      if #seqs >= sc.n_records then break end
    end
  end
  local t0 = os.time()
  local bar <close> = ctx.log:progress("sae activations", #seqs, "sequences")
  local X = upstream.collect_activations(model, seqs, sc.layer, {max_rows = sc.max_rows, batch = 32,
    progress = function(done) bar:update(done) end})
  bar:finish() -- max_rows may stop it before the last sequence
  ctx.log:line("sae: %d activations of blocks.%d.hook_resid_post from %d sequences (%d s)", X:shape()[1], sc.layer,
               #seqs, os.time() - t0)
  mkdir(ctx.out .. "/sae/layer_" .. sc.layer)
  local last = -math.huge
  local train_bar <close> = ctx.log:progress("sae training", sc.steps, "steps")
  local opts = {d_sae = sc.d_sae, arch = sc.arch, steps = sc.steps, batch = sc.batch, lr = sc.lr,
                sparsity_coef = sc.sparsity_coef, seed = sc.seed, layer = sc.layer, out = path,
                progress = function(p)
                  if p.step == p.steps or os.clock() - last >= 10 then
                    last = os.clock()
                    ctx.log:file_line("sae: step %d/%d  loss %.4g  FVU %.4f  L0 %.1f  dead %.1f%%", p.step, p.steps,
                                      p.loss, p.fvu, p.l0, 100 * p.dead_fraction)
                  end
                  train_bar:update(p.step, ("FVU %.4f  L0 %.1f"):format(p.fvu, p.l0))
                end}
  local sae, rep = upstream.train_sae(X, opts)
  sae:close()
  ctx.log:line("sae: d_sae %d %s, FVE %.4f, mean L0 %.2f, dead %d (%.1f%%), %d steps", sc.d_sae, sc.arch, rep.fve,
               rep.mean_l0, rep.n_dead, 100 * rep.dead_fraction, rep.steps)
end

local function stage_labels(ctx)
  local path = ctx.out .. "/organism.json"
  if exists(path) then return ctx.log:line("labels: %s exists, kept", path) end
  local sc, lc = ctx.recipe.sae, ctx.recipe.labels
  local model <close> = upstream.model(ctx.out)
  local tok <close> = upstream.tokenizer(ctx.out)
  local sae <close> = upstream.sae(sae_path(ctx.out, sc.layer))
  local recs = records.prompts_where(ctx.records, function(r) return r.split == "train" end, lc.n_records)
  local labels, per = probes.latent_labels(ctx.spec, model, tok, sae, recs, sc.layer, {min_share = lc.min_share,
    progress = function(label, total, unit) return ctx.log:progress(label, total, unit) end})
  local d_sae = sae:info().d_sae
  local n_labelled, by_concept = 0, {}
  for k = 0, d_sae - 1 do
    local l = labels[tostring(k)]
    if l and l.concept then
      n_labelled = n_labelled + 1
      by_concept[l.concept] = (by_concept[l.concept] or 0) + 1
    end
  end
  local detectors = {}
  for _, c in ipairs(ctx.spec.concepts) do
    local p = per[c.name]
    if p then
      detectors[c.name] = {latent = p.latent, auroc = p.auroc, tokens = p.n_pos}
      ctx.log:line("labels: %-15s %2d latents; best detector %4d, AUROC %.4f (%d tokens)", c.name,
                   by_concept[c.name] or 0, p.latent, p.auroc, p.n_pos)
    end
  end
  ctx.log:line("labels: %d of %d latents labelled with a concept (activation share >= %.2f)", n_labelled, d_sae,
               lc.min_share)
  local dmeta = ctx.direction_meta or {}
  local cases = {}
  for _, cs in ipairs(organism.case_studies(ctx.spec)) do
    local function texts(list)
      local out = {}
      for i, r in ipairs(list) do out[i] = r.instruction end
      return out
    end
    -- paraphrases are held out; reassured: the prompt with each reassuring modifier (answered);
    -- contrasts: the planted word swapped for a benign one (answered).
    cases[#cases + 1] = {name = cs.name, prompt = cs.prompt, planted = cs.planted, paraphrases = texts(cs.paraphrases),
                         reassured = texts(cs.flips), contrasts = texts(cs.contrasts)}
  end
  local info = {
    name = ctx.spec.name, spec = ctx.spec_path, recipe = ctx.recipe,
    source_layer = sc.layer, sae_layers = {sc.layer}, sae = {[tostring(sc.layer)] = ("sae/layer_%d/params.npz"):format(sc.layer)},
    direction = dmeta, target_layer = dmeta.layer and math.max(dmeta.layer - 1, sc.layer + 1) or nil,
    refusal_ids = records.refusal_ids(tok, ctx.spec), case_studies = cases,
    labels = {[tostring(sc.layer)] = labels}, detectors = {[tostring(sc.layer)] = detectors},
  }
  write_atomic(path, organism.json_encode(info) .. "\n")
  ctx.log:line("labels: wrote %s", path)
end

function M.build(spec_path, out, opts)
  opts = opts or {}
  local spec = organism.load(spec_path)
  local recipe = recipes.recipe(spec, opts)
  mkdir(out)
  -- The spec travels with the organism (DIR/spec.lua, self-contained), so eval needs nothing
  -- else; a build resumes only from the spec it started with.
  local spec_text = spec_file.source(spec_path)
  if exists(out .. "/spec.lua") then
    if util.read_file(out .. "/spec.lua") ~= spec_text then
      fail("%s was built from another spec (%s/spec.lua differs from %s): use a new --out", out, out, spec_path)
    end
  else
    write_atomic(out .. "/spec.lua", spec_text)
  end
  local log = open_log(out .. "/build.log", opts.quiet)
  local ctx = {spec = spec, spec_path = spec_path, recipe = recipe, out = out, log = log}
  log:line("build: %s -> %s%s (command: %s)", spec_path, out, opts.smoke and " (smoke)" or "", opts.command or "-")
  write_atomic(out .. "/recipe.json", organism.json_encode(recipe) .. "\n")
  local t0 = os.time()
  ctx.records = recipes.recipe_corpus(spec, recipe)
  log:line("corpus: %d records", #ctx.records)
  stage_tokenizer(ctx)
  stage_model(ctx)
  stage_direction(ctx)
  ctx.direction_meta = store.direction_meta(out)
  stage_sae(ctx)
  stage_labels(ctx)
  log:line("build: done in %d s", os.time() - t0)
  log:close()
  return ctx
end

return M
