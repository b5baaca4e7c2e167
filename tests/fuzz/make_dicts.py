#!/usr/bin/env python3
"""Writes the fuzz targets' libFuzzer dictionaries (tests/fuzz/NAME.dict): the words of each
format, so mutations can insert a key or a dtype whole. usage: make_dicts.py"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = "\n#@FILE@#\n"  # fuzz_util.h's FUZZ_SEP
j = lambda *words: ['"%s"' % w for w in words]  # JSON strings, quotes included

SAFETENSORS = j("dtype", "shape", "data_offsets", "__metadata__", "F32", "BF16", "F16", "I64", "I32", "U8",
                "F64", "BOOL", "F8_E4M3", "C64") + ["18446744073709551615", "9223372036854775807", "[0,0]",
                                                    "\0\0\0\0\0\0\0\0"]
NPY = ["\x93NUMPY", "'descr'", "'fortran_order'", "'shape'", "True", "False", "'<f4'", "'<f2'", "'<f8'", "'>f4'",
       "'|u1'", "'|b1'", "'<i8'", "'|O'", "(", ",)", "\x01\x00", "\x02\x00", "\x03\x00"]
ZIP = ["PK\x03\x04", "PK\x01\x02", "PK\x05\x06", "PK\x06\x06", "PK\x06\x07", "\xff\xff\xff\xff", "\x01\x00\x10\x00",
       "W_enc.npy", "W_dec.npy", "b_enc.npy", "b_dec.npy", "threshold.npy"]
DICTS = {
    "safetensors": SAFETENSORS,
    "safetensors_dir": SAFETENSORS + [SEP] + j("weight_map", "1.safetensors", "2.safetensors", "3.safetensors",
                                               "model.safetensors", "metadata", "total_size"),
    "npy": NPY,
    "npz": NPY + ZIP,
    "model": SAFETENSORS + [SEP] + j(
        "architectures", "Gemma2ForCausalLM", "model_type", "gemma2", "hidden_size", "intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
        "sliding_window", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
        "rms_norm_eps", "rope_theta", "query_pre_attn_scalar", "attn_logit_softcapping",
        "final_logit_softcapping", "hidden_activation", "hidden_act", "gelu", "tie_word_embeddings",
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight") + [
        "model.layers.0.", "2147483647", "-1", "null", "true", "1e308"],
    "sae_saelens": SAFETENSORS + [SEP] + j(
        "architecture", "standard", "jumprelu", "topk", "activation_fn_str", "activation_fn",
        "activation_fn_kwargs", "relu", "k", "d_in", "d_sae", "apply_b_dec_to_input", "hook_name", "hook_point",
        "hook_layer", "normalize_activations", "finetuning_scaling_factor", "reshape_activations",
        "hook_head_index", "rescale_acts_by_decoder_norm", "metadata", "W_enc", "W_dec", "b_enc", "b_dec",
        "threshold", "log_threshold", "blocks.0.hook_resid_post", "none") + ["null", "2147483647"],
    "prompts": j("instruction", "goal", "prompt") + ["goal,", ",goal", "\xef\xbb\xbf", "\r\n", '""', "[", "{"],
    "grid_cell": j("format", "key", "score", "p_refusal", "R", "tokens", "text", "refusal_match", "logprob",
                   "repetition", "spec", "check", "inf", "-inf") + ["null", "\n}"],
    "settings": ["threads", "cache", "results", "plots", "model", "models", "saes", "experiments", "path",
                 "tokenizer", "template", "refusal_tokens", "refusal_ids", "defaults", "source_layers",
                 "target_layer", "sae", "format", "hook", "width", "l0", "layers", "labels", "neuronpedia",
                 "neuronpedia_id", "label_text", "latent", "name", "{layer}", "{width}", "{l0}", "@include",
                 " = ", "; ", "{ ", " }", "( ", " )", "[ ", " ]", "true", "0x10", "1L"],
    "set_value": ["top_k", "source_layers", "target_layer", "alphas", "label", "sae", "model", "seed",
                  "direction", "params.", "prompts.", "models.organism.", "saes.s.", "experiments.demo.", "=", ",",
                  "true", "false", "1e9", "-1", "\n"],
    "organism_json": j("source_layer", "target_layer", "sae", "sae_layers", "labels", "concept", "name", "tokens",
                       "share", "auroc", "1") + ["null"],
    "neuronpedia": j("modelId", "layer", "index", "description", "gemma-2-2b", "3-gemmascope-res-16k", "-1") +
                   ["null", "1.5"],
}


def quote(word):
    out = ""
    for ch in word:
        c = ord(ch)
        out += ch if 32 <= c < 127 and ch not in '"\\' else ("\\" + ch if ch in '"\\' else "\\x%02X" % c)
    return '"%s"' % out


for name, words in DICTS.items():
    with open(os.path.join(HERE, name + ".dict"), "w") as f:
        f.write("# libFuzzer dictionary of fuzz_%s (written by make_dicts.py)\n" % name)
        for w in words:
            f.write(quote(w) + "\n")
