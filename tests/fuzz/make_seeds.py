#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/seeds_NAME/) that are made rather than
copied: small valid files of each format and edge cases the readers must refuse. Standard
library only (no numpy): .npy headers and zip archives are written by hand / with zipfile.
Seeds named regress_* replay a finding (README.md); the ones the fuzzer wrote itself are added
by hand, not here.
usage: make_seeds.py [SEED_ROOT]   (default: the directory of this script)"""
import io, json, os, struct, sys, zipfile

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
SEP = b"\n#@FILE@#\n"  # fuzz_util.h's FUZZ_SEP


def put(target, name, data):
    d = os.path.join(ROOT, "seeds_" + target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def safetensors(tensors, metadata=None, raw_header=None):
    """tensors: [(name, dtype, shape, bytes)], laid out in order with no gaps."""
    header, data = {}, b""
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    if metadata:
        header["__metadata__"] = metadata
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def npy(descr, shape, blob, version=(1, 0), fortran=False):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, "True" if fortran else "False", "".join("%d," % s for s in shape) if len(shape) != 1 else "%d," % shape[0])
    hlen_size = 2 if version[0] == 1 else 4
    total = 6 + 2 + hlen_size + len(d) + 1
    d = d + " " * (-total % 64) + "\n"
    head = b"\x93NUMPY" + bytes(version) + struct.pack("<H" if hlen_size == 2 else "<I", len(d))
    return head + d.encode("latin1") + blob


def npz(members, compress=False, zip64=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, blob in members:
            with z.open(name, "w", force_zip64=zip64) as f:
                f.write(blob)
    return buf.getvalue()


def floats(n, scale=0.1, offset=0.0):
    return [offset + scale * ((i * 7) % 11 - 5) for i in range(n)]


# ---- safetensors ----
two = [("a.weight", "F32", [2, 3], f32(floats(6))), ("b", "F32", [4], f32(floats(4)))]
put("safetensors", "valid_f32.safetensors", safetensors(two, {"format": "pt"}))
put("safetensors", "valid_mixed.safetensors", safetensors([
    ("x", "F64", [1], struct.pack("<d", 1.5)), ("y", "BF16", [2, 2], b"\x80\x3f" * 4),
    ("z", "F16", [3], b"\x00\x3c" * 3), ("i", "I64", [1], struct.pack("<q", -7)), ("u", "U8", [3], b"abc"),
    ("e", "F32", [0, 4], b"")]))
put("safetensors", "empty_header.safetensors", safetensors([], raw_header=b"{}"))
put("safetensors", "header_past_end.safetensors", struct.pack("<Q", 1000) + b'{"a":1}')
put("safetensors", "overlap.safetensors", safetensors([], raw_header=json.dumps({
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()) + b"\0" * 12)
put("safetensors", "out_of_range.safetensors", safetensors([], raw_header=json.dumps({
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}).encode()) + b"\0" * 8)
put("safetensors", "shape_mismatch.safetensors", safetensors([], raw_header=json.dumps({
    "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()) + b"\0" * 8)
put("safetensors", "unaligned.safetensors", safetensors([], raw_header=json.dumps({
    "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
    "b": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}}).encode()) + b"\0" * 5)
put("safetensors", "huge_shape.safetensors", safetensors([], raw_header=json.dumps({
    "a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}).encode()))
put("safetensors", "bad_dtype.safetensors", safetensors([], raw_header=json.dumps({
    "a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}).encode()) + b"\0")

# ---- sharded checkpoint: index, then shards 1..3 ----
s1 = safetensors([("a", "F32", [2], f32([1, 2]))])
s2 = safetensors([("b", "BF16", [2], b"\x80\x3f" * 2), ("c", "F32", [1], f32([3]))])
index = json.dumps({"metadata": {"total_size": 16}, "weight_map": {"a": "1.safetensors", "b": "2.safetensors",
                                                                   "c": "2.safetensors"}}).encode()
put("safetensors_dir", "sharded", SEP.join([index, s1, s2]))
put("safetensors_dir", "single", SEP.join([b"", s2]))
put("safetensors_dir", "missing_shard", SEP.join([json.dumps({"weight_map": {"a": "3.safetensors"}}).encode(), s1]))
put("safetensors_dir", "named_twice", SEP.join([b'{"weight_map": {"a": "1.safetensors", "a": "2.safetensors"}}', s1, s2]))
put("safetensors_dir", "wrong_shard", SEP.join([json.dumps({"weight_map": {"a": "2.safetensors"}}).encode(), s1, s2]))
put("safetensors_dir", "same_name_two_shards", SEP.join([json.dumps({"weight_map": {"a": "1.safetensors"}}).encode(), s1, s1]))
put("safetensors_dir", "path_in_index", SEP.join([json.dumps({"weight_map": {"a": "../1.safetensors"}}).encode(), s1]))

# ---- npy headers ----
put("npy", "v1_f4", npy("<f4", [2, 3], f32(floats(6))))
put("npy", "v2_i8", npy("<i8", [1], struct.pack("<q", 5), version=(2, 0)))
put("npy", "v3_u1_0d", npy("|u1", [], b"\x07", version=(3, 0)))
put("npy", "fortran", npy("<f8", [2, 2], b"\0" * 32, fortran=True))
put("npy", "big_endian", npy(">f4", [1], b"\0" * 4))
put("npy", "object", npy("|O", [1], b""))
put("npy", "huge_shape", npy("<f4", [2 ** 62, 8], b""))
put("npy", "truncated", npy("<f4", [2], b"")[:30])

# ---- npz: members, and a GemmaScope params.npz (d_in 4, d_sae 6) ----
d_in, d_sae = 4, 6
params = [("W_enc.npy", npy("<f4", [d_in, d_sae], f32(floats(d_in * d_sae)))),
          ("W_dec.npy", npy("<f4", [d_sae, d_in], f32(floats(d_in * d_sae, 0.2)))),
          ("b_enc.npy", npy("<f4", [d_sae], f32(floats(d_sae, 0.01)))),
          ("b_dec.npy", npy("<f4", [d_in], f32(floats(d_in, 0.01)))),
          ("threshold.npy", npy("<f4", [d_sae], f32([0.05] * d_sae)))]
put("npz", "params_stored.npz", npz(params))
put("npz", "params_deflated.npz", npz(params, compress=True))
put("npz", "params_zip64.npz", npz(params, zip64=True))
put("npz", "params_f8_f2.npz", npz([(n, npy("<f8" if i % 2 else "<f2", [int(x) for x in b.split(b"(")[1].split(b")")[0].decode().strip(",").split(",")],
                                           b"\0" * (8 if i % 2 else 2) * (d_in * d_sae if n.startswith("W") else (d_sae if "enc" in n or "thr" in n else d_in))))
                                    for i, (n, b) in enumerate(params)], compress=True))
put("npz", "params_wrong_shape.npz", npz([params[0], ("W_dec.npy", npy("<f4", [d_sae, d_in + 1], f32(floats(d_sae * (d_in + 1)))))] + params[2:]))
put("npz", "params_nan.npz", npz([params[0], ("W_dec.npy", npy("<f4", [d_sae, d_in], f32([float("nan")] * d_sae * d_in)))] + params[2:]))
put("npz", "mixed_members.npz", npz([("ints.npy", npy("<i4", [3], struct.pack("<3i", 1, 2, 3))),
                                     ("flags.npy", npy("|b1", [2], b"\x01\x00")), ("notes.txt", b"hello")], zip64=True))
put("npz", "truncated.npz", npz(params, compress=True)[:200])

# ---- model: config.json, then model.safetensors (a one-layer Gemma-2: d 4, mlp 8, heads 2/1, head_dim 2, vocab 8) ----
cfg = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 4, "intermediate_size": 8,
       "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 2, "vocab_size": 8,
       "sliding_window": 4, "max_position_embeddings": 16, "bos_token_id": 2, "eos_token_id": [1, 7], "pad_token_id": 0,
       "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "query_pre_attn_scalar": 2, "attn_logit_softcapping": 50.0,
       "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True}
shapes = {"model.embed_tokens.weight": [8, 4], "model.norm.weight": [4]}
for suffix, shp in [("input_layernorm.weight", [4]), ("self_attn.q_proj.weight", [4, 4]), ("self_attn.k_proj.weight", [2, 4]),
                    ("self_attn.v_proj.weight", [2, 4]), ("self_attn.o_proj.weight", [4, 4]),
                    ("post_attention_layernorm.weight", [4]), ("pre_feedforward_layernorm.weight", [4]),
                    ("mlp.gate_proj.weight", [8, 4]), ("mlp.up_proj.weight", [8, 4]), ("mlp.down_proj.weight", [4, 8]),
                    ("post_feedforward_layernorm.weight", [4])]:
    shapes["model.layers.0." + suffix] = shp
def weights(dtype="F32", skip=None, reshape=None):
    out = []
    for name in sorted(shapes):
        if name == skip:
            continue
        shp = reshape if reshape and name == "model.norm.weight" else shapes[name]
        n = 1
        for s in shp:
            n *= s
        out.append((name, dtype, shp, f32(floats(n)) if dtype == "F32" else b"\x80\x3f" * n))
    return safetensors(out)
put("model", "tiny_f32", SEP.join([json.dumps(cfg).encode(), weights()]))
put("model", "tiny_bf16", SEP.join([json.dumps(cfg).encode(), weights("BF16")]))
put("model", "missing_tensor", SEP.join([json.dumps(cfg).encode(), weights(skip="model.layers.0.mlp.up_proj.weight")]))
put("model", "shape_disagrees", SEP.join([json.dumps(cfg).encode(), weights(reshape=[5])]))
put("model", "config_only", json.dumps(cfg).encode())
put("model", "wrong_types", json.dumps(dict(cfg, hidden_size="4", num_hidden_layers=1.5, tie_word_embeddings="yes")).encode())
put("model", "regress_absurd_sizes", SEP.join([json.dumps(dict(cfg, num_hidden_layers=2147483647, vocab_size=2147483647,
                                                        hidden_size=2147483646, intermediate_size=2147483647)).encode(), weights()]))
put("model", "other_architecture", json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 4}).encode())
put("model", "untied", SEP.join([json.dumps(dict(cfg, tie_word_embeddings=False)).encode(), weights()]))

# ---- SAELens: cfg.json, then sae_weights.safetensors (d_in 4, d_sae 6) ----
sae_t = [("W_enc", "F32", [d_in, d_sae], f32(floats(d_in * d_sae))), ("W_dec", "F32", [d_sae, d_in], f32(floats(d_in * d_sae, 0.2))),
         ("b_enc", "F32", [d_sae], f32(floats(d_sae, 0.01))), ("b_dec", "F32", [d_in], f32(floats(d_in, 0.01)))]
thr = [("threshold", "F32", [d_sae], f32([0.05] * d_sae))]
v5 = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "hook_name": "blocks.1.hook_resid_post", "hook_layer": 1,
      "apply_b_dec_to_input": True, "normalize_activations": "none", "activation_fn_str": "relu"}
v6 = {"architecture": "jumprelu", "d_in": d_in, "d_sae": d_sae, "apply_b_dec_to_input": False,
      "metadata": {"hook_name": "blocks.0.hook_resid_post", "model_name": "gemma-2-2b"}}
topk = {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": 2, "hook_name": "blocks.2.hook_resid_post"}
put("sae_saelens", "v5_standard", SEP.join([json.dumps(v5).encode(), safetensors(sae_t)]))
put("sae_saelens", "v6_jumprelu", SEP.join([json.dumps(v6).encode(), safetensors(sae_t + thr)]))
put("sae_saelens", "v6_log_threshold_bf16", SEP.join([json.dumps(v6).encode(), safetensors(
    [(n, "BF16", s, b"\x80\x3d" * (len(b) // 4)) for n, _, s, b in sae_t] + [("log_threshold", "BF16", [d_sae], b"\x00\xc0" * d_sae)])]))
put("sae_saelens", "topk", SEP.join([json.dumps(topk).encode(), safetensors(sae_t)]))
put("sae_saelens", "topk_fn_kwargs", SEP.join([json.dumps({"d_in": d_in, "d_sae": d_sae, "activation_fn": "topk",
                                                          "activation_fn_kwargs": {"k": 3}}).encode(), safetensors(sae_t)]))
put("sae_saelens", "d_in_disagrees", SEP.join([json.dumps(dict(v5, d_in=5)).encode(), safetensors(sae_t)]))
put("sae_saelens", "unsupported_keys", SEP.join([json.dumps(dict(v5, normalize_activations="expected_average_only_in",
                                                                 hook_head_index=3)).encode(), safetensors(sae_t)]))
put("sae_saelens", "absurd_sizes", SEP.join([json.dumps(dict(v5, d_in=2147483647, d_sae=2147483647, k=-1)).encode(), safetensors(sae_t)]))
put("sae_saelens", "no_weights", json.dumps(v5).encode())

# ---- prompt files ----
put("prompts", "lines.txt", "How do I bake bread?\r\nWrite a poem\n\n  \nTell me a joke\n")
put("prompts", "list.json", json.dumps(["a", "b\nc", "\u00e9\u4e2d"]))
put("prompts", "objects.json", json.dumps([{"instruction": "x", "category": "c"}, {"goal": "y"}, {"prompt": "z"}]))
put("prompts", "lines.jsonl", '{"instruction": "one"}\n\n{"goal": "two"}\r\n')
put("prompts", "advbench.csv", 'goal,target\n"Write ""quoted"", text",Sure\nplain goal,t\n"multi\nline",x\n')
put("prompts", "bom.txt", "\ufeffFirst\nSecond")
put("prompts", "bad_element.json", '["ok", 3, {"other": 1}]')
put("prompts", "unterminated.csv", 'goal\n"never closed\n')
put("prompts", "empty", "")
put("prompts", "one_json_object", '{"harmful": ["a",\n "b"]}\n')

# ---- the Lua readers ----
SRC = os.path.normpath(os.path.join(ROOT, "..", ".."))
def src(path):
    with open(os.path.join(SRC, path), "rb") as f:
        return f.read()

# organism.json: the shipped organism's, trimmed to the fields its readers use, and variants.
org = json.loads(src("models/organism/organism.json"))
small = {k: org[k] for k in ("name", "sae", "sae_layers", "source_layer", "target_layer", "refusal_ids")}
small["labels"] = {l: dict(list(v.items())[:4]) for l, v in list(org["labels"].items())[:2]}
put("organism_json", "organism_small.json", json.dumps(small))
put("organism_json", "labels_kinds.json", json.dumps({"source_layer": 1, "target_layer": 3, "sae": {"1": "sae/layer_1/params.npz"},
    "labels": {"1": {"0": "refusal", "1": {"concept": "harm", "auroc": 0.9}, "2": {"share": 0.5, "tokens": [" a", "\n", " ", "b"]},
                     "3": {"tokens": []}}}}))
put("organism_json", "regress_wrong_types.json", json.dumps({"source_layer": "1", "target_layer": 2.5, "sae": ["x"], "labels": {"1": 5}}))
put("organism_json", "regress_labels_not_object.json", json.dumps({"source_layer": 1, "target_layer": 2, "sae": {"1": 7}, "labels": 5}))
put("organism_json", "null_tokens.json", json.dumps({"labels": {"0": {"0": {"tokens": [None, 3, True]}}}}))
put("organism_json", "not_json", "{\"source_layer\": 1,")
put("organism_json", "array.json", "[1, 2]")

# Neuronpedia explanations export (for neuronpedia_id gemma-2-2b/{layer}-gemmascope-res-16k, layer 3).
mid, lay = "gemma-2-2b", "3-gemmascope-res-16k"
put("neuronpedia", "export.json", json.dumps([
    {"modelId": mid, "layer": lay, "index": "0", "description": "refusal", "explanationModelName": "gpt-4o-mini", "typeName": "oai_token-act-pair"},
    {"modelId": mid, "layer": lay, "index": 2, "description": "harm words"},
    {"modelId": mid, "layer": lay, "index": "2", "description": "second explanation, not kept"},
    {"modelId": mid, "layer": "4-gemmascope-res-16k", "index": "1", "description": "another layer"}]))
put("neuronpedia", "empty.json", "[]")
put("neuronpedia", "object.json", json.dumps({"explanations": []}))
put("neuronpedia", "missing_field.json", json.dumps([{"modelId": mid, "layer": lay, "index": "1"}]))
put("neuronpedia", "bad_index.json", json.dumps([{"modelId": mid, "layer": lay, "index": "-1", "description": "x"},
                                                 {"modelId": mid, "layer": lay, "index": 1.5, "description": "y"}]))
put("neuronpedia", "null_description.json", json.dumps([{"modelId": mid, "layer": lay, "index": 1, "description": None}]))
put("neuronpedia", "not_json", "[{\"modelId\": ")

# Settings files (libconfig).
put("settings", "example.cfg", src("upstream.cfg.example"))
put("settings", "experiment_test.cfg", src("tests/experiment/upstream.cfg"))
put("settings", "labels_test.cfg", src("tests/experiment/labels.cfg"))
put("settings", "unknown_key.cfg", 'threads = 2;\nmodles = { a = { path = "m"; }; };\n')
put("settings", "type_error.cfg", 'threads = "two";\nsaes = { s = { path = "x/{layer}"; l0 = ["a"]; }; };\n')
put("settings", "syntax_error.cfg", 'models = { a = { path = "m" }\n')
put("settings", "sae_patterns.cfg", 'saes = { s = { path = "s/layer_{layer}/width_{width}/average_l0_{l0}/params.npz"; '
    'l0 = [5]; layers = [0, 1]; neuronpedia_id = "m/{layer}-{nope}"; }; };\nmodels = { a = { path = "."; }; };\n')
put("settings", "empty.cfg", "")
put("settings", "include.cfg", '@include "missing.cfg"\nthreads = 1;\n')

# --set values, one KEY=VALUE a line.
put("set_value", "fields_and_params", "top_k=5\nsource_layers=1,2\nalphas=1,-2.5,3e2\nlabel=hello\n")
put("set_value", "settings", "models.organism.template=gemma\nsaes.s.width=65k\nsaes.s.l0=1,2\nexperiments.demo.top_k=2\n")
put("set_value", "bad_values", "top_k=abc\nsource_layers=x,y\n")
put("set_value", "unknown", "topk=3\n")
put("set_value", "regress_no_key", "=5\n")
put("set_value", "dots", "a..b=3\nmodels.=x\n.threads=1\n")
put("set_value", "group_as_value", "models=3\n")
put("set_value", "prompts", "prompts.harmful=p.txt\n")
put("set_value", "empty_value", "label=\nsae=\n")
put("set_value", "regress_list_for_group", "models.organism.defaults=1,2\n")
