-- upstream.organism: the model organism's corpus, generated from a specification in which the
-- causes of refusal are planted (experiments/organism/refusal.lua describes the rule).
--
--   local organism = require "upstream.organism"
--   local spec = organism.load(root .. "/experiments/organism/refusal.lua")
--   local records = organism.corpus(spec, {seed = 1, n_train = 20000, n_heldout = 2000})
--   organism.write_corpus("corpus.jsonl", records)
--   local sets = organism.eval_sets(records)          -- held-out harmful/harmless/borderline
--   local cases = organism.case_studies(spec)         -- the three published prompts, labelled
--   local r = organism.lookup(spec, "How do I bake a cake?")  -- any prompt of the grammar
--
-- A record: {instruction, response, refused (the rule's label), responds_refusal (what the
-- response does; differs from refused only under spec.label_temperature), score, noise,
-- concepts = {names}, weights = {name = the concept's weight in this request: its context
-- rule's when one applies}, causes = {names of the concepts weighing > 0, largest first}, template, template_weight, topic,
-- category, split = "train" | "heldout", agent, modifier, case_study}. Instruction and
-- response are plain text; the chat template (core/chat.h) is applied later.
--
-- Determinism: everything is a function of the spec and the seed, through upstream.rng's
-- PRNG (splitmix64 on Lua's 64-bit integers), never math.random, and every table is walked
-- in a fixed order (pairs() order changes from run to run). Labels do not even depend on
-- the seed: a prompt's noise is a hash of its text.
--
-- Split: whole template x topic combinations are held out (spec.heldout_templates per
-- topic, chosen by the seed), so no held-out instruction is ever seen in training. The
-- case-study combinations stay in training (the model must know those prompts, as
-- gemma-2-2b-it did); their paraphrases' combinations are held out.
--
-- Error rule: a bad spec or misuse raises with a message naming the field; lookups that
-- find nothing return nil; write_corpus/read_corpus raise on I/O failure.
local core = require "upstream.core"
local spec_file = require "upstream.organism.spec_file"
local random = require "upstream.rng"

local M = {}

-- Raises "organism: " .. the message (the organism modules' one error form; the CLI drops the
-- prefix, as the host adds "upstream organism: ").
function M.fail(fmt, ...) error("organism: " .. fmt:format(...), 0) end
local fail = M.fail

-- ---------------------------------------------------------------- PRNG and hashing

-- The corpus's stream (upstream.rng, splitmix64): organism.rng(seed).
M.rng = random.new
local mix64 = random.mix64

-- FNV-1a over the bytes, then the splitmix finalizer (FNV alone mixes the high bits poorly).
local function hash64(s, seed)
  local h = 0xcbf29ce484222325 ~ seed
  for i = 1, #s do h = (h ~ s:byte(i)) * 0x100000001b3 end
  return mix64(h)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- ---------------------------------------------------------------- text helpers

-- The words of a text: whitespace-separated, leading/trailing punctuation stripped
-- ("can't" and "I'm" stay whole), "{slot}" placeholders skipped.
function M.words(text)
  local out = {}
  for w in text:gmatch("%S+") do
    if not w:find("{", 1, true) then
      w = w:gsub("^%p+", ""):gsub("%p+$", "")
      if w ~= "" then out[#out + 1] = w end
    end
  end
  return out
end

local function subst(text, vars)
  return (text:gsub("{([%w_]+)}", function(k)
    local v = vars[k]
    if v == nil then fail("no value for {%s} in \"%s\"", k, text) end
    return v
  end))
end

local function ing(spec, phrase)
  local verb, rest = phrase:match("^(%S+)(.*)$")
  local form = verb and spec.verbs[verb]
  if not form then fail("verbs has no -ing form for \"%s\" (in \"%s\")", tostring(verb), phrase) end
  return form .. rest
end

local function swap(spec, phrase)
  return (phrase:gsub("%S+", function(w) return spec.swap[w] end))
end

-- ---------------------------------------------------------------- loading and checking

local ROLES = {topic = true, frame = true, filler = true, agent = true, modifier = true}

-- All fillings of a task pattern: calls fn(fill) for each {slot = word} assignment, slots in
-- order of appearance; `fixed` pins some slots.
local function each_fill(spec, pattern, fixed, fn)
  local slots = {}
  for s in pattern:gmatch("{([%w_]+)}") do slots[#slots + 1] = s end
  local fill = {}
  local function rec(i)
    if i > #slots then
      local copy = {}
      for k, v in pairs(fill) do copy[k] = v end
      return fn(copy)
    end
    local s = slots[i]
    if fixed and fixed[s] then
      fill[s] = fixed[s]
      return rec(i + 1)
    end
    local class = spec.slots[s]
    if not class then fail("task \"%s\": unknown slot {%s}", pattern, s) end
    for _, cname in ipairs(class) do
      for _, w in ipairs(spec._concept[cname].words) do
        fill[s] = w
        rec(i + 1)
      end
    end
    fill[s] = nil
  end
  rec(1)
end

-- Checks a spec table and builds its indexes (fields starting with "_"). Returns spec.
function M.prepare(spec)
  if type(spec) ~= "table" then fail("a spec is a table") end
  for _, k in ipairs {"threshold", "noise", "modifier_rate", "reassuring_share"} do
    if type(spec[k]) ~= "number" then fail("spec.%s must be a number", k) end
  end
  spec.noise_seed = math.tointeger(spec.noise_seed or 0) or fail("spec.noise_seed must be an integer")
  spec.label_temperature = spec.label_temperature or 0
  if type(spec.label_temperature) ~= "number" or spec.label_temperature < 0 then
    fail("spec.label_temperature must be a number >= 0")
  end
  spec.heldout_templates = math.tointeger(spec.heldout_templates or 2)
    or fail("spec.heldout_templates must be an integer")
  for _, k in ipairs {"verbs", "swap", "templates", "slots", "concepts", "responses", "mix"} do
    if type(spec[k]) ~= "table" then fail("spec.%s must be a table", k) end
  end

  spec._template = {}
  for i, t in ipairs(spec.templates) do
    if type(t.name) ~= "string" or type(t.text) ~= "string" or type(t.weight) ~= "number" then
      fail("templates[%d] needs name, text and weight", i)
    end
    if spec._template[t.name] then fail("template \"%s\" defined twice", t.name) end
    if t.form ~= "base" and t.form ~= "ing" then fail("template \"%s\": form must be \"base\" or \"ing\"", t.name) end
    if not t.text:find("{task}", 1, true) then fail("template \"%s\" has no {task}", t.name) end
    if (t.agent and true or false) ~= (t.text:find("{agent}", 1, true) ~= nil) then
      fail("template \"%s\": agent = true exactly when the text has {agent}", t.name)
    end
    spec._template[t.name] = t
  end

  spec._concept, spec._word = {}, {}
  spec._owner = {} -- task pattern -> concept
  for i, c in ipairs(spec.concepts) do
    if type(c.name) ~= "string" or not ROLES[c.role] or type(c.weight) ~= "number" or type(c.category) ~= "string" then
      fail("concepts[%d] needs name, role (topic/frame/filler/agent/modifier), category and weight", i)
    end
    if spec._concept[c.name] or spec._template[c.name] then fail("name \"%s\" used twice", c.name) end
    spec._concept[c.name] = c
    if c.role == "topic" or c.role == "frame" then
      if type(c.tasks) ~= "table" or #c.tasks == 0 then fail("concept \"%s\" needs tasks", c.name) end
      for _, p in ipairs(c.tasks) do
        if spec._owner[p] then fail("task \"%s\" appears twice", p) end
        spec._owner[p] = c
      end
    else
      if type(c.words) ~= "table" or #c.words == 0 then fail("concept \"%s\" needs words", c.name) end
      for _, w in ipairs(c.words) do
        local key = c.role .. ":" .. w
        if spec._word[key] then fail("%s word \"%s\" is in both \"%s\" and \"%s\"", c.role, w, spec._word[key].name, c.name) end
        spec._word[key] = c
      end
    end
  end
  -- contexts: {{with = {names}, weight = w}, ...}: the concept weighs w instead of its weight
  -- when any named concept or template is in the request (the first rule that matches wins).
  for _, c in ipairs(spec.concepts) do
    if c.contexts ~= nil then
      if type(c.contexts) ~= "table" then fail("concept \"%s\": contexts must be a list", c.name) end
      for i, rule in ipairs(c.contexts) do
        if type(rule) ~= "table" or type(rule.weight) ~= "number" or type(rule.with) ~= "table" or #rule.with == 0 then
          fail("concept \"%s\": contexts[%d] needs with (a list of names) and weight", c.name, i)
        end
        for _, n in ipairs(rule.with) do
          if not spec._concept[n] and not spec._template[n] then
            fail("concept \"%s\": contexts[%d] names \"%s\", which is no concept or template", c.name, i, tostring(n))
          end
        end
      end
    end
  end
  for _, s in ipairs(sorted_keys(spec.slots)) do
    for _, cname in ipairs(spec.slots[s]) do
      local c = spec._concept[cname]
      if not c or c.role ~= "filler" then fail("slot {%s}: \"%s\" is not a filler concept", s, tostring(cname)) end
    end
  end

  -- Topics: every topic concept, and every filler concept (its topic is the frame tasks it
  -- fills). A variant is one task with every slot filled.
  spec._topics = {}
  for _, c in ipairs(spec.concepts) do
    local variants = {}
    if c.role == "topic" then
      for _, p in ipairs(c.tasks) do
        each_fill(spec, p, nil, function(fill) variants[#variants + 1] = {task = p, fill = fill} end)
      end
    elseif c.role == "filler" then
      for _, f in ipairs(spec.concepts) do
        if f.role == "frame" then
          for _, p in ipairs(f.tasks) do
            -- The first slot whose class holds c decides the topic; c's words fill it.
            for s in p:gmatch("{([%w_]+)}") do
              local holds = false
              for _, cn in ipairs(spec.slots[s] or {}) do holds = holds or cn == c.name end
              if holds then
                for _, w in ipairs(c.words) do
                  each_fill(spec, p, {[s] = w}, function(fill) variants[#variants + 1] = {task = p, fill = fill} end)
                end
                break
              end
            end
          end
        end
      end
    end
    if c.role == "topic" or c.role == "filler" then
      if #variants == 0 then fail("filler \"%s\" fills no frame task", c.name) end
      spec._topics[#spec._topics + 1] = {name = c.name, category = c.category, variants = variants}
    end
  end
  spec._topic = {}
  for _, t in ipairs(spec._topics) do spec._topic[t.name] = t end
  for _, cat in ipairs(sorted_keys(spec.mix)) do
    local any = false
    for _, t in ipairs(spec._topics) do any = any or t.category == cat end
    if not any then fail("mix names category \"%s\" that no topic has", cat) end
  end

  spec._agents, spec._reassuring, spec._aggravating = {}, {}, {}
  for _, c in ipairs(spec.concepts) do
    if c.role == "agent" then spec._agents[#spec._agents + 1] = c end
    if c.role == "modifier" then
      if c.weight < 0 then spec._reassuring[#spec._reassuring + 1] = c
      else spec._aggravating[#spec._aggravating + 1] = c end
    end
  end

  if type(spec.responses.comply) ~= "table" or #spec.responses.comply == 0
    or type(spec.responses.refuse) ~= "table" or #spec.responses.refuse == 0 then
    fail("spec.responses needs comply and refuse lists")
  end

  -- Every variant must render in every template (this checks verbs' -ing forms too).
  for _, t in ipairs(spec._topics) do
    for _, v in ipairs(t.variants) do
      for _, tpl in ipairs(spec.templates) do
        M.render(spec, {template = tpl.name, task = v.task, fill = v.fill,
                        agent = tpl.agent and spec._agents[1].words[1] or nil})
      end
    end
  end

  spec._cases = spec.case_studies or {}
  for i, cs in ipairs(spec._cases) do
    if type(cs.name) ~= "string" or type(cs.prompt) ~= "string" or type(cs.parts) ~= "table" then
      fail("case_studies[%d] needs name, prompt and parts", i)
    end
    local r = M.render(spec, cs.parts)
    if r.instruction ~= cs.prompt then
      fail("case study \"%s\" renders as \"%s\", not its prompt \"%s\"", cs.name, r.instruction, cs.prompt)
    end
    for _, p in ipairs(cs.planted or {}) do
      if not spec._concept[p] then fail("case study \"%s\": unknown planted concept \"%s\"", cs.name, p) end
    end
    for _, p in ipairs(cs.paraphrases or {}) do M.render(spec, p) end
  end
  return spec
end

-- Loads a spec file (a Lua chunk returning the table, which may start from another spec:
-- upstream.organism.spec_file) and prepares it.
function M.load(path)
  local spec = spec_file.read(path)
  local ok2, res = pcall(M.prepare, spec)
  if not ok2 then fail("spec %s: %s", path, tostring(res):gsub("^organism: ", "")) end
  spec._path = path
  return res
end

-- ---------------------------------------------------------------- the rule

local function add_concept(list, seen, c)
  if not seen[c.name] then
    seen[c.name] = true
    list[#list + 1] = c
  end
end

-- A concept's weight in a request: the weight of its first context rule naming something
-- present(name) holds for (a concept or the template), else its own weight.
function M.concept_weight(c, present)
  for _, rule in ipairs(c.contexts or {}) do
    for _, n in ipairs(rule.with) do
      if present(n) then return rule.weight end
    end
  end
  return c.weight
end

-- Renders one request from its parts: {template, task (a pattern of spec), fill = {slot =
-- word}, agent (word, for agent templates), modifier (word or nil)}. Returns a record
-- without split or response (see respond). rng, if given, picks the response wording;
-- otherwise a hash of the instruction does.
function M.render(spec, parts, rng)
  local tpl = spec._template[parts.template]
  if not tpl then fail("unknown template \"%s\"", tostring(parts.template)) end
  local owner = spec._owner[parts.task]
  if not owner then fail("unknown task \"%s\"", tostring(parts.task)) end
  local present, seen = {}, {}
  add_concept(present, seen, owner)
  local topic = owner.role == "topic" and owner or nil
  local fill = parts.fill or {}
  local task = parts.task:gsub("{([%w_]+)}", function(s)
    local w = fill[s]
    local c = w and spec._word["filler:" .. w]
    if not c then fail("task \"%s\": {%s} needs a filler word, got %s", parts.task, s, tostring(w)) end
    local ok = false
    for _, cn in ipairs(spec.slots[s]) do ok = ok or cn == c.name end
    if not ok then fail("\"%s\" (%s) cannot fill {%s}", w, c.name, s) end
    add_concept(present, seen, c)
    topic = topic or c
    return w
  end)
  local agent_c
  if tpl.agent then
    agent_c = parts.agent and spec._word["agent:" .. parts.agent]
    if not agent_c then fail("template \"%s\" needs an agent word, got %s", tpl.name, tostring(parts.agent)) end
    add_concept(present, seen, agent_c)
  elseif parts.agent then
    fail("template \"%s\" takes no agent", tpl.name)
  end
  local mod_c
  if parts.modifier then
    mod_c = spec._word["modifier:" .. parts.modifier]
    if not mod_c then fail("unknown modifier \"%s\"", tostring(parts.modifier)) end
    add_concept(present, seen, mod_c)
    task = task .. " " .. parts.modifier
  end

  local instruction = subst(tpl.text, {task = tpl.form == "ing" and ing(spec, task) or task, agent = parts.agent})
  local restate = swap(spec, subst(tpl.restate or "{task}", {task = task, agent = parts.agent}))
  local noise = ((hash64(instruction, spec.noise_seed) >> 11) * 0x1p-53 * 2 - 1) * spec.noise
  local score = tpl.weight + noise
  local names, causes, weights = {}, {}, {}
  for _, c in ipairs(present) do
    local w = M.concept_weight(c, function(n) return seen[n] or n == tpl.name end)
    score = score + w
    names[#names + 1] = c.name
    weights[c.name] = w
    if w > 0 then causes[#causes + 1] = c.name end
  end
  table.sort(causes, function(a, b)
    if weights[a] ~= weights[b] then return weights[a] > weights[b] end
    return a < b
  end)
  local refused = score > spec.threshold
  -- The response follows the rule, or with spec.label_temperature > 0 (and an rng, i.e. in a
  -- sampled corpus) a draw with P(refuse) = sigmoid((score - threshold) / temperature): the
  -- annotators disagree near the boundary, so the model learns calibrated log-odds instead of
  -- a saturated step (`refused` stays the rule's label, which greedy decoding should follow).
  local responds_refusal = refused
  if rng and spec.label_temperature > 0 then
    local p = 1 / (1 + math.exp(-(score - spec.threshold) / spec.label_temperature))
    responds_refusal = rng:uniform() < p
  end

  local list = responds_refusal and spec.responses.refuse or spec.responses.comply
  local k = rng and rng:int(#list) or ((hash64(instruction, spec.noise_seed + 1) >> 1) % #list + 1)
  local response = subst(list[k], {task = restate, task_ing = ing(spec, restate)})

  return {
    instruction = instruction, response = response, refused = refused, responds_refusal = responds_refusal,
    score = score, noise = noise,
    concepts = names, weights = weights, causes = causes, template = tpl.name, template_weight = tpl.weight,
    topic = topic.name, category = topic.category,
    agent = agent_c and agent_c.name or nil, modifier = mod_c and mod_c.name or nil,
  }
end

-- The positive terms of a record's score, largest first: {name, kind = "concept" |
-- "template", weight}. These are the prompt's planted causes of refusal.
function M.causes(spec, record)
  local out = {}
  for _, n in ipairs(record.concepts) do
    local w = record.weights and record.weights[n] or spec._concept[n].weight
    if w > 0 then out[#out + 1] = {name = n, kind = "concept", weight = w} end
  end
  local t = spec._template[record.template]
  if t.weight > 0 then out[#out + 1] = {name = t.name, kind = "template", weight = t.weight} end
  table.sort(out, function(a, b)
    if a.weight ~= b.weight then return a.weight > b.weight end
    return a.name < b.name
  end)
  return out
end

-- Where each concept of a record shows in its instruction: a list of {concept = name, first,
-- last} (1-based byte positions, inclusive), in order of position. A concept's phrases are its
-- words (fillers, agents, modifiers) or tasks (topics), each as written, in -ing form when it
-- starts with a verb, and with persons swapped; frames (weight 0, no words of their own) have
-- none. Used to label tokens by concept (SAE latent labels, detection AUROC).
local function escape(text) return (text:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

function M.concept_spans(spec, record)
  local out = {}
  local text = record.instruction
  for _, name in ipairs(record.concepts) do
    local c = spec._concept[name]
    local variants, seen = {}, {}
    local function add(p)
      if p and not seen[p] then seen[p] = true; variants[#variants + 1] = p end
    end
    for _, p in ipairs(c.words or (c.role == "topic" and c.tasks) or {}) do
      add(p)
      add(swap(spec, p))
      local verb = p:match("^(%S+)")
      if spec.verbs[verb] then add(ing(spec, p)) end
    end
    -- Longest phrase first, so "transfer money to my account" wins over a shorter word.
    table.sort(variants, function(a, b) return #a > #b or (#a == #b and a < b) end)
    local taken = {}
    for _, p in ipairs(variants) do
      local pat = "%f[%w]" .. escape(p) .. "%f[%W]"
      local init = 1
      while true do
        local s, e = text:find(pat, init)
        if not s then break end
        local overlap = false
        for _, t in ipairs(taken) do overlap = overlap or (s <= t[2] and e >= t[1]) end
        if not overlap then
          taken[#taken + 1] = {s, e}
          out[#out + 1] = {concept = name, first = s, last = e}
        end
        init = e + 1
      end
    end
  end
  table.sort(out, function(a, b) return a.first < b.first or (a.first == b.first and a.concept < b.concept) end)
  return out
end

-- ---------------------------------------------------------------- split and corpus

local function combo(template, topic) return template .. "|" .. topic end

local function case_combos(spec)
  local train, held = {}, {}
  for _, cs in ipairs(spec._cases) do
    local r = M.render(spec, cs.parts)
    train[combo(r.template, r.topic)] = cs.name
    for _, p in ipairs(cs.paraphrases or {}) do
      local q = M.render(spec, p)
      held[combo(q.template, q.topic)] = cs.name
    end
  end
  for k, name in pairs(held) do
    if train[k] then fail("case study \"%s\": paraphrase combination %s is also a case-study combination", name, k) end
  end
  return train, held
end

-- The held-out combinations for a seed: {["template|topic"] = "train" | "heldout"}.
function M.split(spec, seed)
  local rng = M.rng((math.tointeger(seed) or fail("seed must be an integer")) ~ 0x5EED5EED)
  local force_train, force_held = case_combos(spec)
  local split = {}
  for _, topic in ipairs(spec._topics) do
    local held = 0
    for _, tpl in ipairs(spec.templates) do
      local k = combo(tpl.name, topic.name)
      if force_held[k] then split[k] = "heldout"; held = held + 1 end
    end
    local order = {}
    for i, tpl in ipairs(spec.templates) do order[i] = tpl.name end
    rng:shuffle(order)
    for _, name in ipairs(order) do
      local k = combo(name, topic.name)
      if not split[k] then
        if held < spec.heldout_templates and not force_train[k] then
          split[k] = "heldout"
          held = held + 1
        else
          split[k] = "train"
        end
      end
    end
  end
  return split
end

-- Generates the corpus: n_train training records (plus the case-study prompts, each
-- case_study_repeats times, shuffled in) and n_heldout distinct held-out records (the
-- case-study paraphrases first). Returns the records (train first) and {split = M.split}.
function M.corpus(spec, opts)
  opts = opts or {}
  local seed = math.tointeger(opts.seed or 1) or fail("opts.seed must be an integer")
  local n_train = math.tointeger(opts.n_train or 20000) or fail("opts.n_train must be an integer")
  local n_heldout = math.tointeger(opts.n_heldout or 2000) or fail("opts.n_heldout must be an integer")
  local repeats = math.tointeger(opts.case_study_repeats or 4) or fail("opts.case_study_repeats must be an integer")
  local rng = M.rng(seed)
  local split = M.split(spec, seed)

  -- Per split: the categories that have topics there, each topic with its templates.
  local pools = {}
  for _, which in ipairs {"train", "heldout"} do
    local cats = {}
    for _, cat in ipairs(sorted_keys(spec.mix)) do
      local topics = {}
      for _, t in ipairs(spec._topics) do
        if t.category == cat then
          local tpls = {}
          for _, tpl in ipairs(spec.templates) do
            if split[combo(tpl.name, t.name)] == which then tpls[#tpls + 1] = tpl end
          end
          if #tpls > 0 then topics[#topics + 1] = {topic = t, templates = tpls} end
        end
      end
      if #topics > 0 and spec.mix[cat] > 0 then cats[#cats + 1] = {weight = spec.mix[cat], topics = topics} end
    end
    pools[which] = cats
  end

  local function sample(which)
    local cats = pools[which]
    local total = 0
    for _, c in ipairs(cats) do total = total + c.weight end
    local u, cat = rng:uniform() * total, cats[#cats]
    for _, c in ipairs(cats) do
      if u < c.weight then cat = c; break end
      u = u - c.weight
    end
    local entry = rng:pick(cat.topics)
    local tpl = rng:pick(entry.templates)
    local v = rng:pick(entry.topic.variants)
    local parts = {template = tpl.name, task = v.task, fill = v.fill}
    if tpl.agent then parts.agent = rng:pick(rng:pick(spec._agents).words) end
    if rng:uniform() < spec.modifier_rate then
      local group = rng:uniform() < spec.reassuring_share and spec._reassuring or spec._aggravating
      if #group > 0 then parts.modifier = rng:pick(rng:pick(group).words) end
    end
    local r = M.render(spec, parts, rng)
    r.split = which
    return r
  end

  local train = {}
  for _ = 1, n_train do train[#train + 1] = sample("train") end
  for _, cs in ipairs(spec._cases) do
    for _ = 1, repeats do
      local r = M.render(spec, cs.parts, rng)
      r.split, r.case_study = "train", cs.name
      train[#train + 1] = r
    end
  end
  rng:shuffle(train)

  local heldout, seen = {}, {}
  for _, cs in ipairs(spec._cases) do
    for _, p in ipairs(cs.paraphrases or {}) do
      local r = M.render(spec, p, rng)
      if not seen[r.instruction] then
        seen[r.instruction] = true
        r.split, r.case_study = "heldout", cs.name .. ":paraphrase"
        heldout[#heldout + 1] = r
      end
    end
  end
  local tries = 0
  while #heldout < n_heldout and tries < 50 * n_heldout do
    tries = tries + 1
    local r = sample("heldout")
    if not seen[r.instruction] then
      seen[r.instruction] = true
      heldout[#heldout + 1] = r
    end
  end

  local records = train
  for _, r in ipairs(heldout) do records[#records + 1] = r end
  return records, {split = split}
end

-- ---------------------------------------------------------------- labelled prompt lists

-- Held-out evaluation sets (opts.split to choose another split): harmful (harmful topics the
-- rule refuses: all of them unless the spec makes harm depend on context),
-- harmless (benign topics the rule answers; opts.plain: without any modifier), borderline
-- (borderline and planted topics, both labels). Lists of records, one per instruction.
function M.eval_sets(records, opts)
  opts = opts or {}
  local which = opts.split or "heldout"
  local sets, seen = {harmful = {}, harmless = {}, borderline = {}}, {}
  for _, r in ipairs(records) do
    if r.split == which and not seen[r.instruction] then
      seen[r.instruction] = true
      local set
      if r.category == "harmful" and r.refused then set = sets.harmful
      elseif r.category == "benign" and not r.refused and not (opts.plain and r.modifier) then set = sets.harmless
      elseif r.category == "borderline" or r.category == "planted" then set = sets.borderline end
      if set then set[#set + 1] = r end
    end
  end
  return sets
end

-- The instruction strings of a list of records.
function M.instructions(records)
  local out = {}
  for i, r in ipairs(records) do out[i] = r.instruction end
  return out
end

-- The case studies, labelled: {name, prompt, planted, record, paraphrases = {records},
-- flips = {records: the prompt with each reassuring modifier concept's first word},
-- contrasts = {records: the planted filler replaced by each benign word of the same slot}}.
function M.case_studies(spec)
  local out = {}
  for _, cs in ipairs(spec._cases) do
    local c = {name = cs.name, prompt = cs.prompt, planted = cs.planted or {}, record = M.render(spec, cs.parts),
               paraphrases = {}, flips = {}, contrasts = {}}
    for _, p in ipairs(cs.paraphrases or {}) do c.paraphrases[#c.paraphrases + 1] = M.render(spec, p) end
    for _, m in ipairs(spec._reassuring) do
      local parts = {}
      for k, v in pairs(cs.parts) do parts[k] = v end
      parts.modifier = m.words[1]
      c.flips[#c.flips + 1] = M.render(spec, parts)
    end
    for _, s in ipairs(sorted_keys(cs.parts.fill or {})) do
      for _, cn in ipairs(spec.slots[s]) do
        local filler = spec._concept[cn]
        if filler.category == "benign" then
          for _, w in ipairs(filler.words) do
            local parts = {}
            for k, v in pairs(cs.parts) do parts[k] = v end
            parts.fill = {}
            for k, v in pairs(cs.parts.fill) do parts.fill[k] = v end
            parts.fill[s] = w
            c.contrasts[#c.contrasts + 1] = M.render(spec, parts)
          end
        end
      end
    end
    out[#out + 1] = c
  end
  return out
end

-- Calls fn(parts) for every request the grammar can make (every template, variant, agent
-- and modifier or none), in a fixed order.
function M.each(spec, fn)
  local mods = {false}
  for _, c in ipairs(spec.concepts) do
    if c.role == "modifier" then
      for _, w in ipairs(c.words) do mods[#mods + 1] = w end
    end
  end
  local agents = {}
  for _, c in ipairs(spec._agents) do
    for _, w in ipairs(c.words) do agents[#agents + 1] = w end
  end
  for _, tpl in ipairs(spec.templates) do
    for _, t in ipairs(spec._topics) do
      for _, v in ipairs(t.variants) do
        for _, a in ipairs(tpl.agent and agents or {false}) do
          for _, m in ipairs(mods) do
            fn {template = tpl.name, task = v.task, fill = v.fill, agent = a or nil, modifier = m or nil}
          end
        end
      end
    end
  end
end

-- The record of any instruction the grammar can make, or nil. The instruction is parsed
-- back: each template's text as a pattern gives the task (and agent), and a table of every
-- task text (variant, modifier, form) built on the first call gives the parts.
function M.lookup(spec, instruction)
  if not spec._tasks then
    local tasks, mods = {}, {false}
    for _, c in ipairs(spec.concepts) do
      if c.role == "modifier" then
        for _, w in ipairs(c.words) do mods[#mods + 1] = w end
      end
    end
    for _, t in ipairs(spec._topics) do
      for _, v in ipairs(t.variants) do
        local base = v.task:gsub("{([%w_]+)}", v.fill)
        for _, m in ipairs(mods) do
          local text = m and base .. " " .. m or base
          local entry = {task = v.task, fill = v.fill, modifier = m or nil}
          tasks["base:" .. text] = tasks["base:" .. text] or entry
          local form = ing(spec, text)
          tasks["ing:" .. form] = tasks["ing:" .. form] or entry
        end
      end
    end
    spec._tasks = tasks
    for _, tpl in ipairs(spec.templates) do
      local pat = tpl.text:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
      -- An agent never holds " to ", so the shortest match finds it.
      tpl._pattern = "^" .. pat:gsub("{agent}", "(.-)"):gsub("{task}", "(.+)") .. "$"
      tpl._agent_first = tpl.agent and tpl.text:find("{agent}", 1, true) < tpl.text:find("{task}", 1, true)
    end
  end
  for _, tpl in ipairs(spec.templates) do
    local a, b = instruction:match(tpl._pattern)
    if a then
      local task, agent = a, nil
      if tpl.agent then
        if tpl._agent_first then agent, task = a, b else task, agent = a, b end
      end
      local e = spec._tasks[tpl.form .. ":" .. task]
      if e and (not tpl.agent or spec._word["agent:" .. agent]) then
        local r = M.render(spec, {template = tpl.name, task = e.task, fill = e.fill, agent = agent,
                                  modifier = e.modifier})
        if r.instruction == instruction then return r end
      end
    end
  end
  return nil
end

-- The spec's vocabulary: every word a record can hold. Returns a sorted list and a set.
function M.vocabulary(spec)
  local set = {}
  local function add(text)
    for _, w in ipairs(M.words(text)) do set[w] = true end
  end
  for _, t in ipairs(spec.templates) do add(t.text); add(t.restate or "") end
  for _, c in ipairs(spec.concepts) do
    for _, p in ipairs(c.tasks or {}) do add(p) end
    for _, w in ipairs(c.words or {}) do add(w); add(swap(spec, w)) end
    for _, p in ipairs(c.tasks or {}) do add(swap(spec, p)) end
  end
  for _, v in pairs(spec.verbs) do add(v) end
  for _, v in pairs(spec.swap) do add(v) end
  for _, r in ipairs(spec.responses.comply) do add(r) end
  for _, r in ipairs(spec.responses.refuse) do add(r) end
  local list = sorted_keys(set)
  return list, set
end

-- Per split and category: {[split] = {n, refused, [category] = {n, refused}}}.
function M.stats(records)
  local s = {}
  for _, r in ipairs(records) do
    local sp = s[r.split or "none"] or {n = 0, refused = 0, categories = {}}
    s[r.split or "none"] = sp
    local c = sp.categories[r.category] or {n = 0, refused = 0}
    sp.categories[r.category] = c
    sp.n, c.n = sp.n + 1, c.n + 1
    if r.refused then sp.refused, c.refused = sp.refused + 1, c.refused + 1 end
  end
  return s
end

-- The texts a tokenizer should be trained on: every instruction and response.
function M.tokenizer_texts(records)
  local out = {}
  for _, r in ipairs(records) do
    out[#out + 1] = r.instruction
    out[#out + 1] = r.response
  end
  return out
end

-- ---------------------------------------------------------------- JSON

-- One-line JSON through upstream.json_encode (jansson): object keys sorted, so equal values
-- give equal text; an empty table is []; floats keep 17 significant digits.
function M.json_encode(v) return core.json_encode(v, {indent = 0}) end

-- The reverse; corpus records hold no null (it would come back as upstream.json_null).
function M.json_decode(s) return core.json_decode(s) end

-- ---------------------------------------------------------------- corpus files

local FIELDS = {"instruction", "response", "refused", "responds_refusal", "score", "noise", "concepts", "causes",
                "template", "topic", "category", "split", "agent", "modifier", "case_study"}

-- Writes records as JSON lines (one object per record, keys sorted, only the record fields
-- above), through a temporary file renamed into place.
function M.write_corpus(path, records)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then fail("cannot create %s: %s", tmp, err) end
  for _, r in ipairs(records) do
    local o = {}
    for _, k in ipairs(FIELDS) do o[k] = r[k] end
    local ok, werr = f:write(M.json_encode(o), "\n")
    if not ok then f:close(); os.remove(tmp); fail("cannot write %s: %s", tmp, werr) end
  end
  local ok, cerr = f:close()
  if not ok then os.remove(tmp); fail("cannot write %s: %s", tmp, cerr) end
  local rok, rerr = os.rename(tmp, path)
  if not rok then os.remove(tmp); fail("cannot rename %s to %s: %s", tmp, path, rerr) end
end

-- Reads a JSON-lines corpus back into records.
function M.read_corpus(path)
  local f, err = io.open(path, "rb")
  if not f then fail("cannot open %s: %s", path, err) end
  local out, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if line:find("%S") then
      local ok, r = pcall(M.json_decode, line)
      if not ok then f:close(); fail("%s:%d: %s", path, n, tostring(r):gsub("^organism: ", "")) end
      out[#out + 1] = r
    end
  end
  f:close()
  return out
end

return M
