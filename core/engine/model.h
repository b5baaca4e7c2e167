/* model — a checkpoint's configuration and weights.
 *
 * Reads a Hugging Face model directory: config.json (architectures
 * ["Gemma2ForCausalLM"], model_type "gemma2") and model.safetensors or a
 * sharded model-0000k-of-0000n.safetensors set with
 * model.safetensors.index.json. tokenizer.json is not read here (see
 * tokenizer.h); its absence does not stop a model from loading.
 *
 * Weights stay memory-mapped in their storage dtype (F32, BF16 or F16; one
 * dtype per matrix, norms may differ); compute is always fp32. Every field
 * that changes the math is read from config.json; a missing required field or
 * an unknown architecture is UP_ERR_UNSUPPORTED/UP_ERR_FORMAT naming the key.
 * Every weight is read once at load: a NaN or infinity in any of them is UP_ERR_FORMAT naming
 * the tensor and the first bad element (a run would otherwise print NaN tables).
 * The family enum leaves room for Gemma-1 and Llama-style models.
 *
 * Ownership: up_model owns the mappings and its small allocations;
 * up_model_free releases everything (NULL-safe). A model may also be built in
 * memory (up_model_init_random) for benchmarks and tests. */
#ifndef UP_MODEL_H
#define UP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/tensor.h"

typedef enum { UP_FAMILY_GEMMA2 = 0 } up_family;
typedef enum { UP_ACT_GELU_TANH = 0, UP_ACT_GELU_EXACT } up_activation;

typedef struct up_model_config {
    up_family family;
    int d_model;        /* hidden_size */
    int d_mlp;          /* intermediate_size */
    int n_layers;       /* num_hidden_layers */
    int n_heads;        /* num_attention_heads */
    int n_kv_heads;     /* num_key_value_heads */
    int head_dim;
    int vocab_size;
    int sliding_window; /* applies to even layers (0, 2, ...) for Gemma-2; <= 0: none */
    float rms_norm_eps;
    float rope_theta;
    float query_pre_attn_scalar; /* scores scale = query_pre_attn_scalar^-0.5 */
    float attn_softcap;          /* attn_logit_softcapping; 0 = off */
    float final_softcap;         /* final_logit_softcapping; 0 = off */
    up_activation activation;    /* hidden_activation */
    int tie_word_embeddings;
    int bos_id, eos_id, pad_id;
    int max_position_embeddings;
} up_model_config;

/* A weight matrix or vector in its storage dtype. Shapes follow Hugging Face. */
typedef struct up_weight {
    const void *data;
    up_dtype dtype;
} up_weight;

typedef struct up_layer_weights {
    up_weight input_norm;     /* (d) input_layernorm */
    up_weight q_proj;         /* (nh*hd, d) */
    up_weight k_proj;         /* (nkv*hd, d) */
    up_weight v_proj;         /* (nkv*hd, d) */
    up_weight o_proj;         /* (d, nh*hd) */
    up_weight post_attn_norm; /* (d) post_attention_layernorm */
    up_weight pre_ffw_norm;   /* (d) pre_feedforward_layernorm */
    up_weight gate_proj;      /* (d_mlp, d) */
    up_weight up_proj;        /* (d_mlp, d) */
    up_weight down_proj;      /* (d, d_mlp) */
    up_weight post_ffw_norm;  /* (d) post_feedforward_layernorm */
} up_layer_weights;

typedef struct up_model {
    up_model_config cfg;
    up_weight embed;          /* (V, d) embed_tokens, also the unembedding when tied */
    up_weight lm_head;        /* (V, d); == embed when tied */
    up_weight final_norm;     /* (d) model.norm */
    up_layer_weights *layers; /* (n_layers) */
    float *norm_f32;          /* every norm vector widened to fp32, one allocation; the norm
                                 up_weights point here with dtype F32 */
    char *dir;                /* the directory it was loaded from (NULL if built in memory) */
    up_dtype storage;         /* dtype of the big matrices, for reporting */
    void *owner;              /* safetensors handle or in-memory weight block */
    int owner_is_memory;
} up_model;

/* Parses config.json at path into cfg. */
up_status up_model_config_load(up_model_config *cfg, const char *config_path, up_error *err);

/* gemma-2-2b(-it)'s exact configuration (docs/method.md §9), for benchmarks and random models. */
up_model_config up_model_config_gemma2_2b(void);

/* Loads DIR (config.json + safetensors). */
up_status up_model_load(up_model **out, const char *dir, up_error *err);

/* Builds a model with cfg's shapes and deterministic pseudo-random weights stored in `dtype`
 * (for benchmarks and tests; no file needed). */
up_status up_model_init_random(up_model **out, const up_model_config *cfg, up_dtype dtype,
                               uint64_t seed, up_error *err);

void up_model_free(up_model *m);

/* For a model built in memory with fp32 weights (up_model_init_random with F32): the block of
 * every matrix (embedding first) and the block of every norm vector, writable, for training.
 * Returns UP_ERR_INVALID for a memory-mapped or non-fp32 model. */
up_status up_model_param_blocks(up_model *m, float **mats, size_t *n_mats, float **norms, size_t *n_norms,
                                up_error *err);

/* Writes the model as a Hugging Face checkpoint: DIR/config.json and DIR/model.safetensors (F32,
 * HF tensor names), each atomically; creates DIR if needed. */
up_status up_model_save(const up_model *m, const char *dir, up_error *err);

/* The same in dtype (F32 or BF16; weights converted, bf16 rounded to nearest even) and, for
 * n_shards > 1, as save_pretrained lays it out: model-0000k-of-0000n.safetensors split by size in
 * module order, plus model.safetensors.index.json. config.json's torch_dtype follows dtype. */
up_status up_model_save_as(const up_model *m, const char *dir, up_dtype dtype, int n_shards, up_error *err);

/* Parameter count (tied embeddings counted once) and bytes of weights as stored. */
int64_t up_model_param_count(const up_model *m);
int64_t up_model_weight_bytes(const up_model *m);

#endif
