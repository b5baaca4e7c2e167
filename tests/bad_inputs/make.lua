-- make.lua: the bad-input catalogue's generators (catalogue.tsv, column "make").
--
--   upstream tests/bad_inputs/make.lua MAKER IN SRC
--
-- writes one malformed input under the empty directory IN: a copy of a valid fixture of the
-- source tree SRC (the tiny checkpoint tests/golden/tiny_f32, its sharded bf16 twin, the tiny
-- tokenizer, the SAE fixtures tests/fixtures/sae/*) with one thing broken, or a small file
-- written from scratch. Every maker leaves exactly the files a case's command reads; each
-- comment says what is broken. Binary edits are done on the bytes (safetensors headers are
-- JSON text, zip member names plain bytes), so each file differs from the valid one only
-- where the comment says.
local upstream = require "upstream"

local maker, IN, SRC = arg[1], arg[2], arg[3]
assert(maker and IN and SRC, "usage: make.lua MAKER IN SRC")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function mkdir(dir) upstream.mkdirs(dir) return dir end

-- Replaces the first plain (not pattern) occurrence of `from` in s at or after `init`.
local function replace(s, from, to, init)
  local i, j = s:find(from, init or 1, true)
  assert(i, "make.lua: '" .. from .. "' not found")
  return s:sub(1, i - 1) .. to .. s:sub(j + 1)
end

-- A safetensors file as (header text, data bytes), and back: the header is padded with spaces
-- to keep the data area 8-byte aligned, as writers do.
local function st_split(bytes)
  local n = string.unpack("<I8", bytes)
  return bytes:sub(9, 8 + n), bytes:sub(9 + n)
end
local function st_join(header, data)
  header = header .. string.rep(" ", (8 - #header % 8) % 8)
  return string.pack("<I8", #header) .. header .. data
end
-- Edits the header of the safetensors file at path with fn(header) -> header.
local function st_edit(path, fn)
  local header, data = st_split(read(path))
  write(path, st_join(fn(header), data))
end

-- A safetensors file written from scratch: tensors = {{name, shape, values_fn(i) or 0}, ...}, F32.
local function st_write(path, tensors)
  local parts, data, offset = {}, {}, 0
  for _, t in ipairs(tensors) do
    local n = 1
    for _, d in ipairs(t[2]) do n = n * d end
    local dims = {}
    for _, d in ipairs(t[2]) do dims[#dims + 1] = tostring(d) end
    parts[#parts + 1] = ('"%s":{"dtype":"F32","shape":[%s],"data_offsets":[%d,%d]}'):format(
      t[1], table.concat(dims, ","), offset, offset + 4 * n)
    local vals = {}
    for i = 1, n do vals[i] = string.pack("<f", t[3] and t[3](i) or 0) end
    data[#data + 1] = table.concat(vals)
    offset = offset + 4 * n
  end
  write(path, st_join("{" .. table.concat(parts, ",") .. "}", table.concat(data)))
end

-- Copies of the fixtures.
local function tiny_model(dir)
  mkdir(dir)
  for _, f in ipairs {"config.json", "model.safetensors"} do
    write(dir .. "/" .. f, read(SRC .. "/tests/golden/tiny_f32/" .. f))
  end
  return dir
end
local function sharded_model(dir)
  mkdir(dir)
  for _, f in ipairs {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                      "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"} do
    write(dir .. "/" .. f, read(SRC .. "/tests/golden/tiny_bf16_sharded/" .. f))
  end
  return dir
end
local function copy_dir(from, to, files)
  mkdir(to)
  for _, f in ipairs(files) do write(to .. "/" .. f, read(from .. "/" .. f)) end
  return to
end
local function tokenizer(dir)
  return copy_dir(SRC .. "/tests/tokenizer/tiny", dir, {"tokenizer.json", "tokenizer_config.json"})
end
local function saelens(kind, dir)
  return copy_dir(SRC .. "/tests/fixtures/sae/saelens_" .. kind, dir, {"cfg.json", "sae_weights.safetensors"})
end
local function npz(dir)
  mkdir(dir)
  write(dir .. "/params.npz", read(SRC .. "/tests/fixtures/sae/gemmascope_stored/params.npz"))
  return dir .. "/params.npz"
end

local M = {}

-- safetensors ---------------------------------------------------------------------------

-- The header length field says 1 MB; the file has 0.8 MB.
function M.st_header_past_end()
  local p = tiny_model(IN .. "/model") .. "/model.safetensors"
  local bytes = read(p)
  write(p, string.pack("<I8", #bytes + 1000) .. bytes:sub(9))
end

-- The header is cut off mid-JSON (the length field says so too, so it is the JSON that fails).
function M.st_header_not_json()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors",
          function(h) return replace(h, '"dtype":"F32"', '"dtype":F32"') end)
end

-- The file is cut in half: the last tensors' data is missing.
function M.st_truncated()
  local p = tiny_model(IN .. "/model") .. "/model.safetensors"
  local bytes = read(p)
  write(p, bytes:sub(1, #bytes // 2))
end

-- Two tensors share bytes: input_layernorm's range starts inside embed_tokens'.
function M.st_overlap()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    return replace(h, '"data_offsets":[98304,98560]', '"data_offsets":[98048,98304]')
  end)
end

-- An offset far past the end of the file.
function M.st_offset_out_of_range()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    return replace(h, '"data_offsets":[98304,98560]', '"data_offsets":[98304,99998560]')
  end)
end

-- A weight stored as U32 (a dtype the format has but nothing can compute with).
function M.st_dtype_u32()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    local at = h:find('"model.layers.0.mlp.up_proj.weight"', 1, true)
    return replace(h, '"dtype":"F32"', '"dtype":"U32"', at)
  end)
end

-- A weight stored as I32 (a dtype upstream reads, but not for weights).
function M.st_dtype_i32()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    local at = h:find('"model.layers.0.mlp.up_proj.weight"', 1, true)
    return replace(h, '"dtype":"F32"', '"dtype":"I32"', at)
  end)
end

-- A dtype name the format does not define.
function M.st_dtype_unknown()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    return replace(h, '"dtype":"F32"', '"dtype":"F24"')
  end)
end

-- A shape whose byte count disagrees with its data_offsets (160 x 64 said to be 161 x 64).
function M.st_shape_vs_bytes()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    local at = h:find('"model.layers.0.mlp.up_proj.weight"', 1, true)
    return replace(h, '"shape":[160,64]', '"shape":[161,64]', at)
  end)
end

-- config.json says intermediate_size 128; the MLP weights are 160 x 64.
function M.st_shape_vs_config()
  local dir = tiny_model(IN .. "/model")
  write(dir .. "/config.json", replace(read(dir .. "/config.json"), '"intermediate_size": 160', '"intermediate_size": 128'))
end

-- A tensor the model needs is absent (renamed to a name nothing reads).
function M.st_missing_tensor()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    return replace(h, '"model.layers.2.mlp.up_proj.weight"', '"model.layers.2.mlp.upp_roj.weight"')
  end)
end

-- The header names one tensor twice (the second entry a copy of the first, same bytes).
function M.st_duplicate_name()
  st_edit(tiny_model(IN .. "/model") .. "/model.safetensors", function(h)
    return replace(h, '"model.layers.0.input_layernorm.weight":{"dtype":"F32","shape":[64],"data_offsets":[98304,98560]}',
      '"model.layers.0.input_layernorm.weight":{"dtype":"F32","shape":[64],"data_offsets":[98304,98560]},' ..
      '"model.layers.0.input_layernorm.weight":{"dtype":"F32","shape":[64],"data_offsets":[98304,98560]}')
  end)
end

-- A file of 4 bytes.
function M.st_tiny_file()
  local dir = tiny_model(IN .. "/model")
  write(dir .. "/model.safetensors", "\1\0\0\0")
end

-- A checkpoint directory with config.json and no weights.
function M.st_no_weights()
  local dir = tiny_model(IN .. "/model")
  os.remove(dir .. "/model.safetensors")
end

-- Sharded checkpoints -------------------------------------------------------------------

-- The index names three shards; the second is gone.
function M.shard_missing()
  os.remove(sharded_model(IN .. "/model") .. "/model-00002-of-00003.safetensors")
end

-- The index names one tensor twice (with two different shards).
function M.index_duplicate()
  local p = sharded_model(IN .. "/model") .. "/model.safetensors.index.json"
  local text = read(p)
  write(p, replace(text, '"model.embed_tokens.weight": "model-00001-of-00003.safetensors",',
                   '"model.embed_tokens.weight": "model-00001-of-00003.safetensors",\n'
                   .. '    "model.embed_tokens.weight": "model-00003-of-00003.safetensors",'))
end

-- The index says a tensor is in shard 3; it is in shard 1.
function M.index_wrong_shard()
  local p = sharded_model(IN .. "/model") .. "/model.safetensors.index.json"
  write(p, replace(read(p), '"model.embed_tokens.weight": "model-00001-of-00003.safetensors"',
                   '"model.embed_tokens.weight": "model-00003-of-00003.safetensors"'))
end

-- The index names a tensor no shard holds.
function M.index_extra_tensor()
  local p = sharded_model(IN .. "/model") .. "/model.safetensors.index.json"
  write(p, replace(read(p), '"weight_map": {', '"weight_map": {\n    "model.layers.9.mlp.up_proj.weight": "model-00001-of-00003.safetensors",'))
end

-- The index points outside the checkpoint directory.
function M.index_path_escape()
  local p = sharded_model(IN .. "/model") .. "/model.safetensors.index.json"
  write(p, replace(read(p), '"model.embed_tokens.weight": "model-00001-of-00003.safetensors"',
                   '"model.embed_tokens.weight": "../model-00001-of-00003.safetensors"'))
end

-- config.json ---------------------------------------------------------------------------

function M.config_missing() os.remove(tiny_model(IN .. "/model") .. "/config.json") end

function M.config_not_json()
  local dir = tiny_model(IN .. "/model")
  write(dir .. "/config.json", replace(read(dir .. "/config.json"), '"hidden_size": 64,', '"hidden_size": 64,,'))
end

function M.config_wrong_type()
  local dir = tiny_model(IN .. "/model")
  write(dir .. "/config.json", replace(read(dir .. "/config.json"), '"hidden_size": 64', '"hidden_size": "64"'))
end

-- 4 heads of which 3 are kv heads: heads must divide by kv heads.
function M.config_inconsistent()
  local dir = tiny_model(IN .. "/model")
  write(dir .. "/config.json", replace(read(dir .. "/config.json"), '"num_key_value_heads": 2', '"num_key_value_heads": 3'))
end

function M.config_architecture()
  local dir = tiny_model(IN .. "/model")
  local text = replace(read(dir .. "/config.json"), '"Gemma2ForCausalLM"', '"LlamaForCausalLM"')
  write(dir .. "/config.json", replace(text, '"model_type": "gemma2"', '"model_type": "llama"'))
end

-- NaN and Inf in weights a run uses ---------------------------------------------------------

-- Sets element `index` (0-based) of tensor `name` to the bit pattern `bits`: F32, or BF16
-- when `bf16` is true.
local function poison(path, name, index, bits, bf16)
  local bytes = read(path)
  local header = st_split(bytes)
  local at = header:find('"' .. name .. '"', 1, true)
  local b = tonumber(header:match('"data_offsets":%[(%d+),', at))
  local size = bf16 and 2 or 4
  local pos = 8 + #header + b + size * index + 1
  write(path, bytes:sub(1, pos - 1) .. string.pack(bf16 and "<I2" or "<I4", bits) .. bytes:sub(pos + size))
end
function M.weights_nan()
  poison(tiny_model(IN .. "/model") .. "/model.safetensors", "model.layers.1.mlp.up_proj.weight", 70, 0x7fc00000)
end
-- In the bf16 sharded checkpoint: +inf in the embedding (shard 1), row 300.
function M.weights_inf_bf16()
  poison(sharded_model(IN .. "/model") .. "/model-00001-of-00003.safetensors", "model.embed_tokens.weight",
         300 * 48 + 2, 0x7f80, true) -- shape [320, 48]
end
-- (with a valid direction for `upstream attribute`)
function M.weights_inf()
  poison(tiny_model(IN .. "/model") .. "/model.safetensors", "model.norm.weight", 5, 0xff800000)
  st_write(IN .. "/direction.safetensors", {{"direction", {64}, function(i) return i end}})
end

-- SAEs ----------------------------------------------------------------------------------

-- A SAELens SAE of d_in 32 (the model's d_model is 64), at layer 1.
function M.sae_d_in()
  local dir = mkdir(IN .. "/sae")
  write(dir .. "/cfg.json", '{"architecture": "standard", "d_in": 32, "d_sae": 16, "dtype": "float32", '
        .. '"hook_name": "blocks.1.hook_resid_post", "hook_layer": 1, "apply_b_dec_to_input": false, '
        .. '"normalize_activations": "none"}')
  st_write(dir .. "/sae_weights.safetensors", {{"W_dec", {16, 32}, function(i) return i % 7 / 7 end},
           {"W_enc", {32, 16}}, {"b_dec", {32}}, {"b_enc", {16}}})
end

-- The SAELens fixture says it reads blocks.2; the settings use it at layer 1.
function M.sae_other_layer()
  local dir = saelens("jumprelu", IN .. "/sae")
  write(dir .. "/cfg.json", replace(read(dir .. "/cfg.json"), "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"))
end

-- A GemmaScope params.npz cut in half.
function M.npz_truncated()
  local p = npz(IN .. "/sae/layer_1")
  local bytes = read(p)
  write(p, bytes:sub(1, #bytes // 2))
end

-- A params.npz whose W_dec member is named W_dex (in the local and the central header).
function M.npz_missing_member()
  local p = npz(IN .. "/sae/layer_1")
  write(p, (read(p):gsub("W_dec%.npy", "W_dex.npy")))
end

-- W_enc stored as <i4 (same size, not a float).
function M.npz_dtype()
  local p = npz(IN .. "/sae/layer_1")
  local bytes = read(p)
  local at = bytes:find("W_enc.npy", 1, true)
  write(p, replace(bytes, "'descr': '<f4'", "'descr': '<i4'", at))
end

-- Not a zip at all.
function M.npz_not_zip()
  local dir = mkdir(IN .. "/sae/layer_1")
  write(dir .. "/params.npz", "this is not a zip archive\n")
end

-- A NaN in the decoder of a SAELens SAE.
function M.sae_nan()
  local dir = saelens("jumprelu", IN .. "/sae")
  poison(dir .. "/sae_weights.safetensors", "W_dec", 100, 0x7fc00000)
end

-- An architecture SAELens has but upstream does not implement.
function M.sae_architecture()
  local dir = saelens("jumprelu", IN .. "/sae")
  write(dir .. "/cfg.json", replace(read(dir .. "/cfg.json"), '"architecture": "jumprelu"', '"architecture": "gated"'))
end

-- cfg.json is not JSON.
function M.sae_cfg_not_json()
  local dir = saelens("jumprelu", IN .. "/sae")
  write(dir .. "/cfg.json", read(dir .. "/cfg.json"):sub(1, 100))
end

-- Tokenizer -----------------------------------------------------------------------------

-- The first merge names the piece "qqq", which is not in the vocabulary.
function M.tok_merge_unknown()
  local p = tokenizer(IN .. "/tok") .. "/tokenizer.json"
  local text = read(p)
  write(p, replace(text, '"h"', '"qqq"', text:find('"merges"', 1, true)))
end

function M.tok_not_json()
  local p = tokenizer(IN .. "/tok") .. "/tokenizer.json"
  write(p, read(p):sub(1, 2000))
end

function M.tok_missing() mkdir(IN .. "/tok") end

-- The model type is WordPiece.
function M.tok_model_type()
  local p = tokenizer(IN .. "/tok") .. "/tokenizer.json"
  local text = read(p)
  write(p, replace(text, '"type": "BPE"', '"type": "WordPiece"', text:find('"model"', 1, true)))
end

-- <end_of_turn> (id 5) renumbered 1000: past the tiny checkpoint's 384-token vocabulary.
function M.tok_id_past_vocab()
  local p = tokenizer(IN .. "/tok") .. "/tokenizer.json"
  local text = read(p)
  text = replace(text, '"id": 5,', '"id": 1000,')
  write(p, replace(text, '"<end_of_turn>": 5', '"<end_of_turn>": 1000'))
end

-- Latent labels and model extras ------------------------------------------------------------

-- A Neuronpedia explanations export that is an object, not an array of explanations.
function M.neuronpedia_not_array() write(IN .. "/np.json", '{"explanations": []}\n') end
-- An export cut off mid-entry.
function M.neuronpedia_not_json()
  write(IN .. "/np.json", '[{"modelId": "tiny", "layer": "1-res", "index": "0", "descr')
end
-- A model directory whose organism.json is not JSON.
function M.organism_json()
  local dir = tiny_model(IN .. "/model")
  write(dir .. "/organism.json", '{"labels": {"1": ')
end

-- An SAELens cfg.json that says d_sae 300; the weights have 256 latents.
function M.sae_d_sae()
  local dir = saelens("jumprelu", IN .. "/sae")
  write(dir .. "/cfg.json", replace(read(dir .. "/cfg.json"), '"d_sae": 256', '"d_sae": 300'))
end

-- W_enc's npy header says (64, 255): its data holds (64, 256).
function M.npz_shape()
  local p = npz(IN .. "/sae/layer_1")
  local bytes = read(p)
  local at = bytes:find("W_enc.npy", 1, true)
  write(p, replace(bytes, "'shape': (64, 256)", "'shape': (64, 255)", at))
end

-- A prompt file that is not UTF-8 (Latin-1 bytes).
function M.prompts_latin1() write(IN .. "/harmful.txt", "How do I build a bomb?\nCaf\xe9 na\xefve attack\n") end

-- An experiment file with a syntax error on line 3, and one whose declaration is not a table.
function M.script_syntax()
  write(IN .. "/exp.lua", 'local upstream = require "upstream"\nlocal X = upstream.experiment {name = "s"}\nX:finish(\n')
end

-- Settings files --------------------------------------------------------------------------

local function cfg(text) write(IN .. "/upstream.cfg", text) end
function M.cfg_unknown_key() cfg('threads = 1;\nresluts = "out";\n') end
function M.cfg_type_error() cfg('threads = 1;\ncache = 3;\n') end
function M.cfg_syntax() cfg('threads = 1;\nmodels: { tiny: { path = "x" ; };\n') end
-- The experiment's own section sets its integer param to a string.
function M.cfg_experiment_param()
  cfg(read(SRC .. "/tests/experiment/upstream.cfg"):gsub('"%.%./', '"' .. SRC .. '/tests/')
      .. '\nexperiments: { probe: { latent = "three"; }; };\n')
end
function M.cfg_template()
  cfg(read(SRC .. "/tests/experiment/upstream.cfg"):gsub('template = "gemma"', 'template = "gemmma"')
      :gsub('"%.%./', '"' .. SRC .. '/tests/'))
end

-- Prompt files, directions, scripts ------------------------------------------------------

function M.prompts_empty() write(IN .. "/harmful.txt", "\n  \n") end
function M.prompts_bad_json() write(IN .. "/harmful.json", '["How do I build a bomb?", 7]\n') end
function M.prompts_csv_no_goal() write(IN .. "/harmful.csv", "prompt,target\nHow do I build a bomb?,x\n") end

-- A direction of 32 numbers for a model of d_model 64.
function M.direction_size()
  st_write(IN .. "/direction.safetensors", {{"direction", {32}, function(i) return i end}})
end
-- A direction that is all zeros (no direction at all).
function M.direction_zero()
  st_write(IN .. "/direction.safetensors", {{"direction", {64}}})
end

-- A direction with a NaN in it.
function M.direction_nan()
  st_write(IN .. "/direction.safetensors", {{"direction", {64}, function(i) return i == 9 and 0 / 0 or i end}})
end

-- A .npy direction whose header is cut short (magic and version, then nothing).
function M.direction_npy() write(IN .. "/direction.npy", "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', ") end

-- Difference-of-means candidates (5 positions x 4 layers x 64), as `upstream directions` writes.
function M.direction_candidates()
  st_write(IN .. "/cand.safetensors", {{"candidates", {5, 4, 64}, function(i) return i % 13 - 6 end}})
end

-- A checkpoint directory with its tokenizer, as `upstream directions` and `steer` read it.
function M.model_with_tokenizer()
  tiny_model(IN .. "/model")
  tokenizer(IN .. "/model")
end

-- A file where the results directory should be (so it cannot be made, even as root).
function M.results_blocked() write(IN .. "/blocked", "a file, not a directory\n") end

function M.none() end

local fn = M[maker]
if not fn then error("make.lua: no maker '" .. maker .. "'", 0) end
fn()
