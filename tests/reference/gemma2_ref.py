#!/usr/bin/python3
"""Reference for the C engine: tiny random Gemma-2 checkpoints, golden tensors, SAE fixtures.

Run with Debian's torch (python3-torch, python3-numpy; no transformers, no safetensors
package needed):

    /usr/bin/python3 tests/reference/gemma2_ref.py

It rewrites, deterministically (fixed seeds):

    tests/golden/tiny_f32/            config.json, model.safetensors (F32), golden.safetensors
    tests/golden/tiny_bf16_sharded/   config.json, model-0000k-of-00003.safetensors (BF16),
                                      model.safetensors.index.json, golden.safetensors
    tests/fixtures/sae/               gemmascope_{stored,deflated}/params.npz,
                                      saelens_{jumprelu,relu,topk}/{cfg.json,sae_weights.safetensors},
                                      expected.safetensors

The Gemma-2 forward below is written from the semantics of Hugging Face's
modeling_gemma2.py (eager attention, the implementation HF recommends for Gemma-2):

  * RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), in fp32 (here: fp64, see below).
  * embeddings scaled by sqrt(hidden_size), the normalizer first cast to the activation
    dtype (fp32 for the C engine, so sqrt(48) is rounded to fp32 before use).
  * block: h += post_attention_layernorm(attn(input_layernorm(h)));
           h += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).
  * MLP: down(gelu_tanh(gate(x)) * up(x)).
  * attention: RoPE (theta, full head_dim, "rotate-half" layout: dim i pairs with
    i + head_dim/2, inv_freq[i] = theta^(-2i/head_dim), cos/sin of cat(freqs, freqs)),
    GQA (query head h reads KV head h // (n_heads / n_kv_heads)),
    scores = q.k * query_pre_attn_scalar^-0.5, then softcap c*tanh(s/c), THEN the mask,
    softmax, weighted sum of V, o_proj.
  * sliding window on even layers (layer_idx % 2 == 0): key j visible from query i iff
    i - W < j <= i (HF: tril(ones, diagonal=-W) masked). Odd layers: plain causal.
  * final norm, tied unembedding (logits = h . embed_tokens^T), final softcap.

Numerics: weights are exact fp32 (or bf16) values; the goldens are computed in float64 from
those exact values and then rounded to fp32. The script also runs the same forward in fp32
and records the fp32-vs-fp64 discrepancy (the error a correct fp32 engine should be near).
"""

import json
import math
import os
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GOLDEN_DIR = os.path.join(ROOT, "tests", "golden")
SAE_DIR = os.path.join(ROOT, "tests", "fixtures", "sae")

N_GREEDY = 12
CASE_LENGTHS = (1, 9, 20)

# --------------------------------------------------------------------------------------
# safetensors (written by hand: 8-byte LE header length, JSON header, data)
# --------------------------------------------------------------------------------------

_ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int32: "I32",
             torch.float16: "F16", torch.int64: "I64"}
_ST_TORCH = {v: k for k, v in _ST_DTYPE.items()}
_NP_OF = {"F32": "<f4", "BF16": "<i2", "I32": "<i4", "F16": "<f2", "I64": "<i8"}


def _raw_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(_NP_OF[_ST_DTYPE[t.dtype]]).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """Writes tensors (name -> torch tensor) like the safetensors library does: data ordered
    by (larger element size first, then name), the header listing them in that order after
    an optional __metadata__ (string -> string), padded with spaces to a multiple of 8."""
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in order:
        t = tensors[name]
        b = _raw_bytes(t)
        header[name] = {"dtype": _ST_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(len(hj).to_bytes(8, "little"))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return off  # bytes of tensor data


def read_safetensors(path):
    """Independent reader used by the self-checks (bit-exact round trip)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=_NP_OF[info["dtype"]]).copy()
        t = torch.from_numpy(arr)
        if info["dtype"] == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(info["shape"])
    return out, meta


def write_text(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# model specs
# --------------------------------------------------------------------------------------

SPECS = [
    dict(name="tiny_f32", storage="F32", seed=1234, embed_std=0.06,
         hidden_size=64, intermediate_size=160, num_hidden_layers=4,
         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=384,
         sliding_window=6, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
         final_logit_softcapping=3.0, rms_norm_eps=1e-6, rope_theta=10000.0,
         max_position_embeddings=128, eos_token_id=1, layer_types=False,
         grad_targets=(3, 2), n_shards=1),
    dict(name="tiny_bf16_sharded", storage="BF16", seed=5718, embed_std=0.06,
         hidden_size=48, intermediate_size=96, num_hidden_layers=3,
         num_attention_heads=6, num_key_value_heads=2, head_dim=8, vocab_size=320,
         sliding_window=5, query_pre_attn_scalar=8, attn_logit_softcapping=5.0,
         final_logit_softcapping=3.0, rms_norm_eps=1e-6, rope_theta=10000.0,
         max_position_embeddings=128, eos_token_id=[1, 107], layer_types=True,
         grad_targets=(2,), n_shards=3),
]


def hf_config(spec):
    """config.json in the key order Hugging Face writes (sorted), Gemma-2 keys only."""
    n = spec["num_hidden_layers"]
    cfg = {
        "architectures": ["Gemma2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": spec["attn_logit_softcapping"],
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": spec["eos_token_id"],
        "final_logit_softcapping": spec["final_logit_softcapping"],
        "head_dim": spec["head_dim"],
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": spec["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": spec["intermediate_size"],
        "max_position_embeddings": spec["max_position_embeddings"],
        "model_type": "gemma2",
        "num_attention_heads": spec["num_attention_heads"],
        "num_hidden_layers": n,
        "num_key_value_heads": spec["num_key_value_heads"],
        "pad_token_id": 0,
        "query_pre_attn_scalar": spec["query_pre_attn_scalar"],
        "rms_norm_eps": spec["rms_norm_eps"],
        "rope_theta": spec["rope_theta"],
        "sliding_window": spec["sliding_window"],
        "tie_word_embeddings": True,
        "torch_dtype": "float32" if spec["storage"] == "F32" else "bfloat16",
        "transformers_version": "4.42.4",
        "use_cache": True,
        "vocab_size": spec["vocab_size"],
    }
    if spec["layer_types"]:  # newer transformers (>= 4.53) also write the per-layer pattern
        cfg["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                              for i in range(n)]
        cfg["transformers_version"] = "4.53.0"
    return dict(sorted(cfg.items()))


def layer_param_names(i):
    """Per-layer tensor names, in Hugging Face module order (used for shard splitting)."""
    p = "model.layers.%d." % i
    return [p + s for s in (
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
        "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight")]


def make_weights(spec):
    """Random weights in fp32, scaled so activations stay O(1) and the caps bite."""
    g = torch.Generator().manual_seed(spec["seed"])
    d, f = spec["hidden_size"], spec["intermediate_size"]
    nh, nkv, hd, V = (spec["num_attention_heads"], spec["num_key_value_heads"],
                      spec["head_dim"], spec["vocab_size"])

    def randn(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    # embeddings small enough that the blocks, not the current token's own embedding,
    # decide the next token (else greedy just repeats one token)
    W = {"model.embed_tokens.weight": randn(V, d, std=spec["embed_std"])}
    # q/k larger than 1/sqrt(d): scores of several units, so the attention softcap is
    # well outside its linear regime for a good share of entries.
    qk_std = 2.2 / math.sqrt(d)
    for i in range(spec["num_hidden_layers"]):
        names = layer_param_names(i)
        shapes = {
            names[0]: ((nh * hd, d), qk_std),
            names[1]: ((nkv * hd, d), qk_std),
            names[2]: ((nkv * hd, d), 1.0 / math.sqrt(d)),
            names[3]: ((d, nh * hd), 1.0 / math.sqrt(nh * hd)),
            names[4]: ((f, d), 1.0 / math.sqrt(d)),
            names[5]: ((f, d), 1.0 / math.sqrt(d)),
            names[6]: ((d, f), 1.0 / math.sqrt(f)),
        }
        for n in names[:7]:
            shape, std = shapes[n]
            W[n] = randn(*shape, std=std)
        for n in names[7:]:
            W[n] = randn(d, std=0.3)
    # final norm (1 + w) around 2.5: logits reach well past the final softcap without
    # making the embeddings (which also feed the residual stream) large
    W["model.norm.weight"] = 1.5 + randn(d, std=0.3)
    if spec["storage"] == "BF16":
        W = {k: v.to(torch.bfloat16) for k, v in W.items()}
    return W


# --------------------------------------------------------------------------------------
# the forward pass
# --------------------------------------------------------------------------------------

DEFAULT_OPTS = dict(sliding=True, gqa="repeat", rope="half", scale="qpas",
                    attn_cap=True, final_cap=True)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(T, hd, theta, dtype):
    # HF: inv_freq = 1/(theta^(arange(0, hd, 2)/hd)); emb = cat(freqs, freqs)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(dtype) / hd))
    pos = torch.arange(T, dtype=dtype)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin, layout):
    # x: [T, heads, hd]
    if layout == "half":
        return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]
    # "interleaved" (GPT-J / Meta layout), only used to show the goldens tell them apart
    hd = x.shape[-1]
    c, s = cos[:, None, : hd // 2], sin[:, None, : hd // 2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


class Model:
    def __init__(self, spec, weights, dtype):
        self.spec, self.dtype = spec, dtype
        self.W = {k: v.to(dtype) for k, v in weights.items()}  # exact upcast of fp32/bf16
        self.d = spec["hidden_size"]
        self.nh, self.nkv, self.hd = (spec["num_attention_heads"],
                                      spec["num_key_value_heads"], spec["head_dim"])
        self.eps = spec["rms_norm_eps"]
        # the normalizer is cast to the activation dtype (fp32 in the C engine) before use
        self.normalizer = float(np.float32(math.sqrt(self.d)))

    def embed(self, ids):
        E = self.W["model.embed_tokens.weight"]
        return E[torch.as_tensor(ids, dtype=torch.long)] * self.normalizer

    def attention(self, x, i, opts, cap, stats):
        s, W, T = self.spec, self.W, x.shape[0]
        p = "model.layers.%d.self_attn." % i
        q = (x @ W[p + "q_proj.weight"].T).view(T, self.nh, self.hd)
        k = (x @ W[p + "k_proj.weight"].T).view(T, self.nkv, self.hd)
        v = (x @ W[p + "v_proj.weight"].T).view(T, self.nkv, self.hd)
        cos, sin = rope_cos_sin(T, self.hd, s["rope_theta"], self.dtype)
        q = apply_rope(q, cos, sin, opts["rope"])
        k = apply_rope(k, cos, sin, opts["rope"])
        rep = self.nh // self.nkv
        if opts["gqa"] == "repeat":  # HF repeat_kv: head h reads kv head h // rep
            kv_of = [h // rep for h in range(self.nh)]
        else:                        # a wrong mapping, for the self-check only
            kv_of = [h % self.nkv for h in range(self.nh)]
        kk, vv = k[:, kv_of, :], v[:, kv_of, :]
        scale = (s["query_pre_attn_scalar"] if opts["scale"] == "qpas" else self.hd) ** -0.5
        scores = torch.einsum("ihd,jhd->hij", q, kk) * scale
        if stats is not None:  # how far into the softcap's non-linear range the scores go
            a = scores.detach().abs()
            stats["score_max"].append(a.max().item())
            stats["score_frac"].append((a > cap / 2).double().mean().item())
        if opts["attn_cap"] and cap:
            scores = cap * torch.tanh(scores / cap)  # softcap first ...
        qi = torch.arange(T)[:, None]
        kj = torch.arange(T)[None, :]
        allowed = kj <= qi
        if opts["sliding"] and i % 2 == 0:
            allowed = allowed & (kj > qi - s["sliding_window"])  # i - W < j <= i
        scores = scores.masked_fill(~allowed[None], float("-inf"))  # ... then the mask
        probs = torch.softmax(scores, dim=-1)
        z = torch.einsum("hij,jhd->ihd", probs, vv)
        out = z.reshape(T, self.nh * self.hd) @ W[p + "o_proj.weight"].T
        return out, dict(rot_q=q, rot_k=k, v=v, pattern=probs, z=z)

    def block(self, h, i, opts, cache=None, stats=None):
        W, eps = self.W, self.eps
        p = "model.layers.%d." % i
        ln1 = rms_norm(h, W[p + "input_layernorm.weight"], eps)
        attn, parts = self.attention(ln1, i, opts, self.spec["attn_logit_softcapping"], stats)
        attn_out = rms_norm(attn, W[p + "post_attention_layernorm.weight"], eps)
        mid = h + attn_out
        ln2 = rms_norm(mid, W[p + "pre_feedforward_layernorm.weight"], eps)
        gate = ln2 @ W[p + "mlp.gate_proj.weight"].T
        up = ln2 @ W[p + "mlp.up_proj.weight"].T
        post = F.gelu(gate, approximate="tanh") * up
        mlp = post @ W[p + "mlp.down_proj.weight"].T
        mlp_out = rms_norm(mlp, W[p + "post_feedforward_layernorm.weight"], eps)
        out = mid + mlp_out
        if cache is not None:
            b = "blocks.%d." % i
            cache[b + "hook_resid_pre"] = h
            cache[b + "ln1.hook_normalized"] = ln1
            for k, v in parts.items():
                cache[b + "attn.hook_" + k] = v
            cache[b + "hook_attn_out"] = attn_out
            cache[b + "hook_resid_mid"] = mid
            cache[b + "ln2.hook_normalized"] = ln2
            cache[b + "mlp.hook_post"] = post
            cache[b + "hook_mlp_out"] = mlp_out
            cache[b + "hook_resid_post"] = out
        return out

    def unembed(self, h, opts, stats=None):
        x = rms_norm(h, self.W["model.norm.weight"], self.eps)
        z = x @ self.W["model.embed_tokens.weight"].T
        if stats is not None:
            stats["logit_max"].append(z.detach().abs().max().item())
        cap = self.spec["final_logit_softcapping"]
        if opts["final_cap"] and cap:
            z = cap * torch.tanh(z / cap)
        return x, z

    def forward(self, ids, opts=None, cache=None, stats=None):
        opts = dict(DEFAULT_OPTS, **(opts or {}))
        h = self.embed(ids)
        if cache is not None:
            cache["hook_embed"] = h
        for i in range(self.spec["num_hidden_layers"]):
            h = self.block(h, i, opts, cache, stats)
        x, logits = self.unembed(h, opts, stats)
        if cache is not None:
            cache["ln_final.hook_normalized"] = x
            cache["logits"] = logits
        return logits

    def greedy(self, ids, n):
        ids, margins = list(ids), []
        for _ in range(n):
            last = self.forward(ids)[-1]
            top = torch.topk(last, 2).values
            margins.append((top[0] - top[1]).item())
            ids.append(int(torch.argmax(last).item()))
        return ids[-n:], min(margins)

    def grad_wrt_resid_post(self, resid_post_l, l, L, v, positions):
        """dR/d resid_post_l for R = sum_{t in positions} <resid_post_L[t], v>, by autograd
        through blocks l+1..L only (activation gradients; weights are constants)."""
        h0 = resid_post_l.detach().clone().requires_grad_(True)
        h = h0
        for i in range(l + 1, L + 1):
            h = self.block(h, i, DEFAULT_OPTS)
        R = (h[positions] @ v).sum()
        (g,) = torch.autograd.grad(R, h0)
        return R.detach(), g


# --------------------------------------------------------------------------------------
# golden generation for one checkpoint
# --------------------------------------------------------------------------------------

def make_cases(spec):
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    V = spec["vocab_size"]
    cases = []
    for T in CASE_LENGTHS:
        rest = torch.randint(3, V, (T - 1,), generator=g).tolist()
        cases.append([2] + rest)
    return cases


def positions_list(T):
    return sorted(set([0, T // 2, T - 1]))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def write_checkpoint(spec, W):
    out = os.path.join(GOLDEN_DIR, spec["name"])
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # a clean directory: no stale shards from older layouts
        if f.endswith(".safetensors") or f.endswith(".json"):
            os.remove(os.path.join(out, f))
    write_text(os.path.join(out, "config.json"), json.dumps(hf_config(spec), indent=2) + "\n")
    if spec["n_shards"] == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), W, {"format": "pt"})
        return out
    # shards split by size in module order, like save_pretrained (a layer may straddle shards)
    order = ["model.embed_tokens.weight"]
    for i in range(spec["num_hidden_layers"]):
        order += layer_param_names(i)
    order.append("model.norm.weight")
    total = sum(W[n].numel() * W[n].element_size() for n in order)
    n_sh = spec["n_shards"]
    target = total / n_sh
    shards, cur, cur_bytes = [], [], 0
    for n in order:
        b = W[n].numel() * W[n].element_size()
        if cur and cur_bytes + b > target * 1.02 and len(shards) < n_sh - 1:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(n)
        cur_bytes += b
    shards.append(cur)
    assert len(shards) == n_sh, [len(s) for s in shards]
    weight_map = {}
    for k, names in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, n_sh)
        write_safetensors(os.path.join(out, fname), {n: W[n] for n in names}, {"format": "pt"})
        for n in names:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_text(os.path.join(out, "model.safetensors.index.json"), json.dumps(index, indent=2) + "\n")
    return out


def check_reassembly(spec, out, W):
    """Reads the checkpoint back with the independent reader and compares bit for bit."""
    if spec["n_shards"] == 1:
        got, meta = read_safetensors(os.path.join(out, "model.safetensors"))
    else:
        with open(os.path.join(out, "model.safetensors.index.json")) as f:
            index = json.load(f)
        got, total = {}, 0
        for fname in sorted(set(index["weight_map"].values())):
            part, _ = read_safetensors(os.path.join(out, fname))
            for n, t in part.items():
                assert index["weight_map"][n] == fname, n
                assert n not in got, n
                got[n] = t
                total += t.numel() * t.element_size()
        assert total == index["metadata"]["total_size"], (total, index["metadata"])
        assert set(index["weight_map"]) == set(got)
    assert set(got) == set(W), set(got) ^ set(W)
    for n in W:
        assert got[n].dtype == W[n].dtype and got[n].shape == W[n].shape, n
        a = got[n].view(torch.int16) if W[n].dtype == torch.bfloat16 else got[n]
        b = W[n].view(torch.int16) if W[n].dtype == torch.bfloat16 else W[n]
        assert torch.equal(a, b), n
    assert "lm_head.weight" not in got
    return len(got)


def run_spec(spec):
    torch.manual_seed(0)
    W = make_weights(spec)
    out = write_checkpoint(spec, W)
    n_tensors = check_reassembly(spec, out, W)

    m64 = Model(spec, W, torch.float64)
    m32 = Model(spec, W, torch.float32)
    n_layers = spec["num_hidden_layers"]
    cases = make_cases(spec)
    G = {}
    gv = torch.Generator().manual_seed(spec["seed"] + 2)
    worst = dict(logits=0.0, acts=0.0, grad=0.0)
    stats = dict(score_max=[], score_frac=[], logit_max=[])
    min_margin = float("inf")
    greedy_fp32_agrees = True

    for c, ids in enumerate(cases):
        T = len(ids)
        pre = "case%d." % c
        cache = {}
        logits = m64.forward(ids, cache=cache, stats=stats)
        cache32 = {}
        logits32 = m32.forward(ids, cache=cache32)
        worst["logits"] = max(worst["logits"], rel_err(logits32.double(), logits))
        for k in cache:
            if "hook_resid" in k or k.endswith("_out"):
                worst["acts"] = max(worst["acts"], rel_err(cache32[k].double(), cache[k]))

        G[pre + "input_ids"] = torch.tensor(ids, dtype=torch.int32)
        for k, t in cache.items():
            G[pre + k] = t.detach().to(torch.float32)

        gen, margin = m64.greedy(ids, N_GREEDY)
        gen32, _ = m32.greedy(ids, N_GREEDY)
        greedy_fp32_agrees &= gen32 == gen
        min_margin = min(min_margin, margin)
        G[pre + "greedy"] = torch.tensor(gen, dtype=torch.int32)

        # gradients
        v = torch.randn(spec["hidden_size"], generator=gv, dtype=torch.float64)
        v = (v / v.norm()).to(torch.float32)  # the stored fp32 vector is the exact one used
        G[pre + "grad.v"] = v
        v64 = v.double()
        modes = [("last", [T - 1])]
        if T > 1:
            P = positions_list(T)
            G[pre + "grad.positions"] = torch.tensor(P, dtype=torch.int32)
            modes.append(("list", P))
        for L in spec["grad_targets"]:
            for mode, P in modes:
                R = (cache["blocks.%d.hook_resid_post" % L][P] @ v64).sum()
                G[pre + "grad.L%d.%s.R" % (L, mode)] = R.reshape(1).to(torch.float32)
                for l in range(L):
                    R2, g = m64.grad_wrt_resid_post(cache["blocks.%d.hook_resid_post" % l],
                                                    l, L, v64, P)
                    assert abs(R2 - R) <= 1e-12 * max(1.0, abs(R.item()))
                    _, g32 = m32.grad_wrt_resid_post(
                        cache32["blocks.%d.hook_resid_post" % l], l, L, v, P)
                    worst["grad"] = max(worst["grad"], rel_err(g32.double(), g))
                    G[pre + "grad.L%d.%s.blocks.%d.hook_resid_post" % (L, mode, l)] = \
                        g.to(torch.float32)
                    if l == 0 and mode == "last" and c == len(cases) - 1:
                        # directional finite difference: autograd and R agree
                        e = torch.randn(g.shape, generator=gv, dtype=torch.float64)
                        eps = 1e-6
                        hp = cache["blocks.0.hook_resid_post"] + eps * e
                        hm = cache["blocks.0.hook_resid_post"] - eps * e
                        Rp, _ = m64.grad_wrt_resid_post(hp, 0, L, v64, P)
                        Rm, _ = m64.grad_wrt_resid_post(hm, 0, L, v64, P)
                        fd = (Rp - Rm).item() / (2 * eps)
                        an = (g * e).sum().item()
                        assert abs(fd - an) <= 1e-6 * max(1.0, abs(an)), (fd, an)

    # ---- self-checks: the goldens discriminate the semantics that matter ----
    long_ids = cases[-1]
    base = m64.forward(long_ids)
    checks = {}
    for label, opts in [("no_sliding_window", dict(sliding=False)),
                        ("gqa_h_mod_nkv", dict(gqa="tile")),
                        ("rope_interleaved", dict(rope="interleaved")),
                        ("scale_by_head_dim", dict(scale="head_dim")),
                        ("no_attn_softcap", dict(attn_cap=False)),
                        ("no_final_softcap", dict(final_cap=False))]:
        diff = (m64.forward(long_ids, opts) - base).abs().max().item()
        if label == "scale_by_head_dim" and spec["query_pre_attn_scalar"] == spec["head_dim"]:
            continue  # as in gemma-2-2b, the two coincide here
        checks[label] = diff
        assert diff > 1e-2, (spec["name"], label, diff)
    # sliding window only matters past W tokens: the first W positions are unchanged
    W_ = spec["sliding_window"]
    ns = m64.forward(long_ids, dict(sliding=False))
    assert (ns[:W_] - base[:W_]).abs().max().item() < 1e-12
    assert (ns[W_:] - base[W_:]).abs().max().item() > 1e-2
    # the caps are non-linear here: pre-cap values well beyond cap/2
    cap_a, cap_f = spec["attn_logit_softcapping"], spec["final_logit_softcapping"]
    score_max, logit_max = max(stats["score_max"]), max(stats["logit_max"])
    score_frac = sum(stats["score_frac"]) / len(stats["score_frac"])
    assert score_max > cap_a and score_frac > 0.1, stats
    assert logit_max > cap_f, stats
    assert greedy_fp32_agrees
    assert min_margin > 2e-3, min_margin  # no near-ties: any correct fp32 engine agrees
    assert spec["num_key_value_heads"] < spec["num_attention_heads"]

    # activation scale report
    rms = [G["case2.blocks.%d.hook_resid_post" % l].pow(2).mean().sqrt().item()
           for l in range(n_layers)]

    summary = {
        "model": spec["name"],
        "storage": spec["storage"],
        "config": json.dumps({k: spec[k] for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "sliding_window",
            "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
            "rms_norm_eps", "rope_theta")}),
        "cases": json.dumps({"case%d" % c: len(ids) for c, ids in enumerate(cases)}),
        "greedy_new_tokens": str(N_GREEDY),
        "grad_targets": json.dumps(list(spec["grad_targets"])),
        "compute": "float64 from the exact stored weight values, rounded to F32; "
                   "embedding normalizer sqrt(d) rounded to fp32 first",
        "tolerance_note": (
            "fp32 torch forward vs these goldens: max rel err (max|diff|/max|ref|) "
            "logits %.2e, hooks %.2e, grads %.2e; expect <=1e-4 rel on logits from a C fp32 "
            "engine; greedy min top1-top2 margin %.3e (fp32 greedy agrees)"
            % (worst["logits"], worst["acts"], worst["grad"], min_margin)),
    }
    write_safetensors(os.path.join(out, "golden.safetensors"), G, summary)
    back, _ = read_safetensors(os.path.join(out, "golden.safetensors"))
    assert set(back) == set(G)

    print("== %s (%s, %d tensors%s)" % (spec["name"], spec["storage"], n_tensors,
          ", %d shards reassembled bit-exactly" % spec["n_shards"] if spec["n_shards"] > 1
          else ", read back bit-exactly"))
    print("   cases T=%s  greedy case2: %s" % ([len(x) for x in cases],
                                              G["case2.greedy"].tolist()))
    print("   resid_post rms by layer (case2): %s" % " ".join("%.2f" % r for r in rms))
    print("   attn |score| max pre-cap %.2f (cap %.1f), share |s|>cap/2: %.1f%%"
          % (score_max, cap_a, 100 * score_frac))
    print("   logits |z| max pre-cap %.2f (cap %.1f)" % (logit_max, cap_f))
    print("   max |dlogits| vs variants (T=20): " +
          ", ".join("%s %.3f" % (k, v) for k, v in checks.items()))
    print("   " + summary["tolerance_note"])
    print("   golden tensors: %d" % len(G))
    return m64, cases, G


# --------------------------------------------------------------------------------------
# SAE fixtures
# --------------------------------------------------------------------------------------

D_SAE = 256
HOOK = "blocks.1.hook_resid_post"
TOPK = 8
MARGIN = 1e-2  # every decision (threshold, ReLU, top-k cut) is at least this far from a tie


def _sorted_gap_threshold(col, q):
    """A value between two adjacent sorted entries of col near quantile q, far from both."""
    s = np.sort(col)
    n = len(s)
    m0 = int(round(q * (n - 1)))
    for dm in sorted(range(-n, n), key=abs):
        m = m0 + dm
        if 0 <= m < n - 1 and s[m + 1] - s[m] > 4 * MARGIN:
            return 0.5 * (s[m] + s[m + 1])
    raise RuntimeError("no gap")


def make_sae_params(x, kind, seed, apply_b_dec, neg_thresholds=0):
    """Random SAE weights whose decisions on x are well separated (fp32 agrees with fp64)."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    W_dec = rng.standard_normal((D_SAE, d))
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_dec *= rng.uniform(0.5, 1.5, size=(D_SAE, 1))
    W_enc = (W_dec.T / np.linalg.norm(W_dec, axis=1)[None, :] ** 2) * 0.8 \
        + 0.05 * rng.standard_normal((d, D_SAE))
    b_dec = 0.3 * rng.standard_normal(d)
    W_dec, W_enc, b_dec = (a.astype(np.float32) for a in (W_dec, W_enc, b_dec))
    xin = x - b_dec.astype(np.float64) if apply_b_dec else x
    pre0 = xin @ W_enc.astype(np.float64)  # [n, d_sae], without b_enc
    p = dict(W_enc=W_enc, W_dec=W_dec, b_dec=b_dec)
    if kind == "jumprelu":
        # per latent: fires on a share q of the rows; threshold > 0 (as GemmaScope's);
        # for the SAELens variant a few thresholds are negative so ReLU(pre) matters.
        b_enc = np.zeros(D_SAE)
        thr = np.zeros(D_SAE)
        neg = set(rng.choice(D_SAE, neg_thresholds, replace=False).tolist())
        for k in range(D_SAE):
            q = rng.uniform(0.80, 0.97)
            cut = _sorted_gap_threshold(pre0[:, k], q)
            t = rng.uniform(0.2, 1.5)
            if k in neg:
                t = -rng.uniform(0.3, 0.8)
            b_enc[k] = t - cut  # pre0 + b_enc crosses t exactly at the gap
            thr[k] = t
        p.update(b_enc=b_enc.astype(np.float32), threshold=thr.astype(np.float32))
    elif kind == "relu":
        b_enc = np.array([-_sorted_gap_threshold(pre0[:, k], rng.uniform(0.8, 0.97))
                          for k in range(D_SAE)])
        p.update(b_enc=b_enc.astype(np.float32))
    elif kind == "topk":
        for attempt in range(200):
            b_enc = np.array([-np.quantile(pre0[:, k], rng.uniform(0.9, 0.99))
                              for k in range(D_SAE)]) + rng.normal(0, 0.1, D_SAE)
            # repair near-ties at the top-k cut and at 0 among the top k by lowering the
            # offending latent's bias (a few passes settle it)
            for _ in range(100):
                pre = pre0 + b_enc.astype(np.float32).astype(np.float64)
                order = np.argsort(-pre, axis=1, kind="stable")
                srt = np.take_along_axis(pre, order, 1)
                bad_cut = np.nonzero(srt[:, TOPK - 1] - srt[:, TOPK] <= MARGIN)[0]
                bad_zero = np.argwhere(np.abs(srt[:, :TOPK]) <= MARGIN)
                if len(bad_cut) == 0 and len(bad_zero) == 0:
                    break
                for r in bad_cut:
                    b_enc[order[r, TOPK]] -= 3 * MARGIN
                for r, j in bad_zero:
                    b_enc[order[r, j]] -= 3 * MARGIN
            srt = -np.sort(-pre, axis=1)
            gap = (srt[:, TOPK - 1] - srt[:, TOPK]).min()
            near0 = np.abs(srt[:, :TOPK]).min()
            npos = (srt[:, :TOPK] > 0).sum(1)
            if gap > MARGIN and near0 > MARGIN and npos.min() < TOPK and \
                    (pre > 0).sum(1).max() > TOPK:
                break
        else:
            raise RuntimeError("no topk b_enc with clean margins")
        p.update(b_enc=b_enc.astype(np.float32))
    return p


def sae_encode(x, p, kind, apply_b_dec_to_input):
    """Float64 encode/decode from the exact fp32 parameter values."""
    P = {k: v.astype(np.float64) for k, v in p.items()}
    xin = x - P["b_dec"] if apply_b_dec_to_input else x
    pre = xin @ P["W_enc"] + P["b_enc"]
    if kind == "jumprelu":
        acts = np.maximum(pre, 0.0) * (pre > P["threshold"])
        # decisions: pre vs threshold everywhere; pre vs 0 only where pre > threshold
        margin = min(np.abs(pre - P["threshold"]).min(),
                     np.abs(pre[pre > P["threshold"]]).min())
        extra = dict(relu_bites=int(((pre > P["threshold"]) & (pre <= 0)).sum()))
    elif kind == "relu":
        acts = np.maximum(pre, 0.0)
        margin = np.abs(pre).min()
        extra = {}
    else:
        idx = np.argsort(-pre, axis=1, kind="stable")[:, :TOPK]
        acts = np.zeros_like(pre)
        rows = np.arange(pre.shape[0])[:, None]
        acts[rows, idx] = np.maximum(pre[rows, idx], 0.0)
        srt = -np.sort(-pre, axis=1)
        margin = min((srt[:, TOPK - 1] - srt[:, TOPK]).min(), np.abs(srt[:, :TOPK]).min())
        extra = dict(rows_fewer_than_k_positive=int(((srt[:, :TOPK] > 0).sum(1) < TOPK).sum()),
                     rows_more_than_k_positive=int(((pre > 0).sum(1) > TOPK).sum()))
    recon = acts @ P["W_dec"] + P["b_dec"]
    l0 = (acts > 0).sum(1)
    return acts, recon, margin, l0, extra


def saelens_v6_cfg(arch, d_in, apply_b_dec, extra=None):
    """cfg.json as SAELens >= 6 writes it: json.dump(SAEConfig.to_dict()) — dataclass
    fields in order (base fields, then the architecture's own), metadata nested, then
    "architecture" appended."""
    cfg = {"d_in": d_in, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0",
                        "dataset_path": "upstream/tiny-random", "hook_name": HOOK,
                        "model_name": "tiny_f32", "model_class_name": "HookedTransformer",
                        "hook_head_index": None, "context_size": 128,
                        "seqpos_slice": [None], "model_from_pretrained_kwargs": {},
                        "prepend_bos": True, "exclude_special_tokens": False,
                        "sequence_separator_token": "bos",
                        "disable_concat_sequences": False}}
    cfg.update(extra or {})
    cfg["architecture"] = arch
    return cfg


def saelens_v5_cfg(arch, d_in, apply_b_dec, activation_fn_str, activation_fn_kwargs):
    """cfg.json as SAELens 5.x writes it (flat; hook_layer; activation_fn_str/kwargs)."""
    return {"architecture": arch, "d_in": d_in, "d_sae": D_SAE, "dtype": "float32",
            "device": "cpu", "model_name": "tiny_f32", "hook_name": HOOK, "hook_layer": 1,
            "hook_head_index": None, "activation_fn_str": activation_fn_str,
            "activation_fn_kwargs": activation_fn_kwargs,
            "apply_b_dec_to_input": apply_b_dec, "finetuning_scaling_factor": False,
            "sae_lens_training_version": "5.9.2", "prepend_bos": True,
            "dataset_path": "upstream/tiny-random", "dataset_trust_remote_code": True,
            "context_size": 128, "normalize_activations": "none", "neuronpedia_id": None,
            "model_from_pretrained_kwargs": {}, "seqpos_slice": [None]}


def write_npz(path, arrays, compressed):
    # numpy writes each entry with zipfile's default timestamp (1980-01-01) and zip64
    # extra fields (force_zip64), so the bytes are reproducible
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    os.replace(tmp, path)
    with zipfile.ZipFile(path) as z:  # sanity: the compression method we meant
        want = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        assert all(i.compress_type == want for i in z.infolist())
    back = np.load(path)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


def run_sae(G_f32):
    # x: real layer-1 resid_post activations of tiny_f32, all golden cases (1 + 9 + 20 rows)
    rows = [G_f32["case%d.%s" % (c, HOOK)] for c in range(len(CASE_LENGTHS))]
    x32 = torch.cat(rows, 0).numpy().astype(np.float32)
    x = x32.astype(np.float64)
    n, d_in = x.shape
    os.makedirs(SAE_DIR, exist_ok=True)

    fixtures = [  # name, kind, seed, apply_b_dec_to_input, negative thresholds
        ("gemmascope", "jumprelu", 100, False, 0),
        ("saelens_jumprelu", "jumprelu", 101, False, 6),
        ("saelens_relu", "relu", 102, True, 0),
        ("saelens_topk", "topk", 103, True, 0),
    ]
    E = {"x": torch.from_numpy(x32)}
    meta = {"hook_name": HOOK, "n": str(n), "d_in": str(d_in), "d_sae": str(D_SAE),
            "x_source": "tiny_f32 golden case0..2 blocks.1.hook_resid_post rows, in order",
            "compute": "float64 from the exact fp32 parameters and x, rounded to F32"}
    print("== SAE fixtures (x: %d rows of tiny_f32 %s, |x| rms %.2f)"
          % (n, HOOK, float(np.sqrt((x ** 2).mean()))))
    for name, kind, seed, abd, neg in fixtures:
        p = make_sae_params(x, kind, seed, abd, neg)
        acts, recon, margin, l0, extra = sae_encode(x, p, kind, abd)
        assert margin > MARGIN, (name, margin)
        names = [name] if not name.startswith("gemmascope") else \
            ["gemmascope_stored", "gemmascope_deflated"]
        for nm in names:
            dd = os.path.join(SAE_DIR, nm)
            os.makedirs(dd, exist_ok=True)
            if nm.startswith("gemmascope"):
                arrays = {k: p[k] for k in ("W_dec", "W_enc", "b_dec", "b_enc", "threshold")}
                write_npz(os.path.join(dd, "params.npz"), arrays, nm.endswith("deflated"))
            else:
                tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()}
                write_safetensors(os.path.join(dd, "sae_weights.safetensors"), tensors)
                if kind == "jumprelu":
                    cfg = saelens_v6_cfg("jumprelu", d_in, abd)
                elif kind == "topk":
                    cfg = saelens_v6_cfg("topk", d_in, abd,
                                         {"k": TOPK, "rescale_acts_by_decoder_norm": False})
                else:
                    cfg = saelens_v5_cfg("standard", d_in, abd, "relu", {})
                write_text(os.path.join(dd, "cfg.json"), json.dumps(cfg))
            E[nm + ".acts"] = torch.from_numpy(acts.astype(np.float32))
            E[nm + ".recon"] = torch.from_numpy(recon.astype(np.float32))
        fve = 1 - ((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        print("   %-18s %-8s b_dec->input %-5s L0 mean %.1f (min %d, max %d)  decision margin "
              "%.3f  FVE %.2f %s" % (name, kind, abd, l0.mean(), l0.min(), l0.max(), margin,
                                     fve, extra if extra else ""))
        meta[name + ".L0_mean"] = "%.2f" % l0.mean()
        if kind == "topk" or neg:  # the ReLU after top-k / a negative threshold is exercised
            assert all(v > 0 for v in extra.values()), (name, extra)
    write_safetensors(os.path.join(SAE_DIR, "expected.safetensors"), E, meta)


def main():
    if not sys.version_info >= (3, 7):
        raise SystemExit("python >= 3.7 needed")
    torch.set_num_threads(1)  # the same bits every run
    G_f32 = None
    for spec in SPECS:
        _, _, G = run_spec(spec)
        if spec["name"] == "tiny_f32":
            G_f32 = G
    run_sae(G_f32)
    total = 0
    for base in (os.path.join(GOLDEN_DIR), SAE_DIR):
        for dp, _, fs in os.walk(base):
            total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print("== total size of tests/golden + tests/fixtures/sae: %.2f MB" % (total / 1e6))


if __name__ == "__main__":
    main()
