/* sae — sparse autoencoders over a residual stream: load, encode, decode, measure.
 *
 * Architectures (fp32 compute, x one row of d_in activations at the SAE's hook):
 *   x'  = x - b_dec when apply_b_dec_to_input, else x
 *   pre = x'·W_enc + b_enc
 *   JumpReLU: a = pre·1[pre > threshold]·1[pre > 0]        (GemmaScope, SAELens "jumprelu")
 *   ReLU:     a = max(pre, 0)                              (SAELens "standard")
 *   TopK:     a = max(pre, 0) on the k largest pre of the row, 0 elsewhere (SAELens "topk";
 *             ties go to the lower latent index)
 *   x̂ = a·W_dec + b_dec
 *
 * Files read (up_sae_load's path):
 *   - GemmaScope: a params.npz (or a directory holding one) with float arrays W_enc (d_in,
 *     d_sae), W_dec (d_sae, d_in), b_enc (d_sae), b_dec (d_in), threshold (d_sae); JumpReLU,
 *     apply_b_dec_to_input false. The hook is not in the file: a path segment "layer_{L}"
 *     gives the layer and the hook blocks.{L}.hook_resid_post (hook_mlp_out when a segment
 *     names a "-mlp" release); otherwise layer is -1 and the caller sets it with
 *     up_sae_set_hook.
 *   - SAELens: a directory (or its cfg.json or sae_weights.safetensors) with cfg.json
 *     (5.x flat or 6.x with a "metadata" object) and sae_weights.safetensors holding the same
 *     names (F32/BF16/F16, widened to fp32; "log_threshold" is accepted for "threshold").
 *     cfg keys read: architecture ("standard", "jumprelu", "topk"; absent = "standard"),
 *     activation_fn_str/activation_fn ("relu", or "topk" with activation_fn_kwargs.k), k,
 *     d_in, d_sae, apply_b_dec_to_input (absent = true, as in SAELens), hook_name (top level
 *     or metadata; "hook_point" in old files), hook_layer,
 *     normalize_activations (only null/"none"), finetuning_scaling_factor (only false),
 *     reshape_activations (only null/"none"), hook_head_index (only null),
 *     rescale_acts_by_decoder_norm (only false). Anything else is UP_ERR_UNSUPPORTED naming
 *     the key and value.
 * Every array's shape is checked against the others (and cfg.json's d_in/d_sae), and every
 * loaded value must be finite; failures are UP_ERR_FORMAT naming the file and key.
 *
 * Ownership: up_sae owns its weights (at most two allocations: the encoder family W_enc,
 * b_enc, threshold; the decoder family W_dec, b_dec) and its path; the fields are read-only
 * after load. up_sae_free releases everything (NULL-safe).
 *
 * Errors come back as an up_status with a message in the caller's up_error. Encoding needs
 * the encoder loaded (UP_SAE_ENCODER), decoding the decoder; asking for a part that was not
 * loaded is UP_ERR_INVALID.
 *
 * Threads: encode/decode use up_sgemm and OpenMP over rows; each row's result does not depend
 * on the thread count. */
#ifndef UP_SAE_H
#define UP_SAE_H

#include <stdint.h>

#include "base/error.h"

typedef enum { UP_SAE_JUMPRELU = 0, UP_SAE_RELU, UP_SAE_TOPK } up_sae_arch;

/* Parts to load: steering and latent scoring need only the decoder. */
enum { UP_SAE_DECODER = 1u << 0, UP_SAE_ENCODER = 1u << 1, UP_SAE_ALL = 3u };

#define UP_SAE_HOOK_MAX 128

typedef struct up_sae {
    up_sae_arch arch;
    int d_in;                   /* the model's d_model at the hook */
    int d_sae;                  /* number of latents */
    int k;                      /* TopK: latents kept per row; 0 for other architectures */
    int apply_b_dec_to_input;   /* encode x - b_dec instead of x */
    int layer;                  /* the hook's block, -1 when unknown */
    char hook[UP_SAE_HOOK_MAX]; /* TransformerLens hook name, "" when unknown */
    unsigned parts;             /* UP_SAE_DECODER | UP_SAE_ENCODER bits actually loaded */
    float *W_enc;               /* (d_in, d_sae); NULL unless UP_SAE_ENCODER */
    float *b_enc;               /* (d_sae); NULL unless UP_SAE_ENCODER */
    float *threshold;           /* (d_sae); JumpReLU with UP_SAE_ENCODER, else NULL */
    float *W_dec;               /* (d_sae, d_in); NULL unless UP_SAE_DECODER */
    float *b_dec;               /* (d_in); always loaded (encoding may need it) */
    char *path;                 /* what was loaded: the params.npz or the SAELens directory */
} up_sae;

/* Loads an SAE from `path` (see above), reading only the parts asked for (a bitmask of
 * UP_SAE_DECODER/UP_SAE_ENCODER; 0 means both). All arrays' headers are checked either way. */
up_status up_sae_load(up_sae **out, const char *path, unsigned parts, up_error *err);

/* Builds an SAE in memory with zeroed weights (every part), for trainers and tests.
 * hook may be NULL; k is used for TopK only. */
up_status up_sae_alloc(up_sae **out, up_sae_arch arch, int d_in, int d_sae, int k,
                       int apply_b_dec_to_input, const char *hook, up_error *err);

/* Writes a fully loaded SAE as a SAELens 6 directory: cfg.json and sae_weights.safetensors
 * (F32), each written to a temporary name and renamed; creates `dir` if needed. */
up_status up_sae_save(const up_sae *sae, const char *dir, up_error *err);

/* NULL-safe. */
void up_sae_free(up_sae *sae);

/* Sets layer and hook to blocks.{layer}.hook_resid_post (for files that do not say, or to read
 * a dictionary at another layer). */
up_status up_sae_set_hook(up_sae *sae, int layer, up_error *err);

/* Forgets the layer and hook (layer -1, hook ""): the SAE then applies at whatever source
 * layer a caller names, as one dictionary swept across layers (attribution checks nothing;
 * steering needs its layer given). */
void up_sae_forget_hook(up_sae *sae);

/* Checks that the SAE fits a model: d_in == d_model and, when the layer is known,
 * 0 <= layer < n_layers. UP_ERR_INVALID with both numbers otherwise. */
up_status up_sae_check_model(const up_sae *sae, int d_model, int n_layers, up_error *err);

/* acts (n, d_sae) = encoding of x (n, d_in). Allocates a bounded scratch (256 rows) when
 * apply_b_dec_to_input, or k entries per call for TopK; UP_ERR_NOMEM if that fails. */
up_status up_sae_encode(const up_sae *sae, const float *x, int n, float *acts, up_error *err);

/* out (n, d_in) = acts (n, d_sae) · W_dec + b_dec. Zero activations are skipped, so sparse
 * codes decode in O(L0·d_in) per row. out must not alias acts. */
up_status up_sae_decode(const up_sae *sae, const float *acts, int n, float *out, up_error *err);

typedef struct up_sae_metrics {
    double fvu;     /* Σ‖x−x̂‖² / Σ‖x−mean(x)‖² = 1 − FVE (mean over the n rows); NaN when
                       the rows do not vary */
    double mse;     /* Σ‖x−x̂‖² / (n·d_in): per element */
    double mean_l0; /* mean number of non-zero latents per row */
} up_sae_metrics;

/* Reconstruction quality on x (n, d_in), n >= 1; needs both parts. Sums in double. */
up_status up_sae_stats(const up_sae *sae, const float *x, int n, up_sae_metrics *out,
                       up_error *err);

/* "jumprelu", "relu", "topk". */
const char *up_sae_arch_name(up_sae_arch arch);

#endif
