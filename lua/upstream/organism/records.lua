-- upstream.organism.records: a corpus's records as model input: training sequences, chat
-- prompts, the refusal token, and a split's distinct prompts. Pure functions of a tokenizer and
-- records; a spec whose responses break the refusal-token rule raises.
local organism = require "upstream.organism"

local fail = organism.fail

local M = {}

-- A record as training ids: the chat prompt (one BOS, the Gemma template) followed by the
-- response and <end_of_turn>; the loss starts at the first response token.
function M.encode_record(tok, record, eot)
  local ids = tok:chat(record.instruction)
  local loss_from = #ids
  for _, v in ipairs(tok:encode(record.response)) do ids[#ids + 1] = v end
  ids[#ids + 1] = eot
  return ids, loss_from
end

-- The records of a split as training data: {ids = {sequence, ...}, loss_from = {first response
-- position, ...}}, at most limit of them.
function M.training_data(tok, records, split, limit)
  local eot = tok:id("<end_of_turn>") or fail("tokenizer has no <end_of_turn>")
  local data = {ids = {}, loss_from = {}}
  for _, r in ipairs(records) do
    if r.split == split then
      local ids, from = M.encode_record(tok, r, eot)
      data.ids[#data.ids + 1] = ids
      data.loss_from[#data.loss_from + 1] = from
      if limit and #data.ids >= limit then break end
    end
  end
  return data
end

-- The refusal token: the first token of every refusal ("I"); checked against the corpus.
function M.refusal_ids(tok, spec)
  local ids = {}
  for _, text in ipairs(spec.responses.refuse) do
    local first = tok:encode(text)[1]
    local seen = false
    for _, v in ipairs(ids) do seen = seen or v == first end
    if not seen then ids[#ids + 1] = first end
  end
  for _, text in ipairs(spec.responses.comply) do
    local first = tok:encode(text)[1]
    for _, v in ipairs(ids) do
      if v == first then fail("a compliant response starts with the refusal token %q", tok:piece(v)) end
    end
  end
  return ids
end

-- Distinct prompts of a category in a split, first n (records are already shuffled).
function M.prompts_where(records, pred, n)
  local out, seen = {}, {}
  for _, r in ipairs(records) do
    if pred(r) and not seen[r.instruction] then
      seen[r.instruction] = true
      out[#out + 1] = r
      if n and #out >= n then break end
    end
  end
  return out
end

-- The chat prompt ids of records.
function M.chat_ids(tok, recs)
  local out = {}
  for i, r in ipairs(recs) do out[i] = tok:chat(r.instruction) end
  return out
end

return M
