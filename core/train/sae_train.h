/* sae_train — trains a sparse autoencoder on residual-stream activations, writes it as a
 * GemmaScope params.npz, collects the activations, and measures latents as concept detectors.
 *
 * Model trained (x one row of d activations; the SAE sees x·s, s the normalisation below):
 *   pre = (x − c·b_dec)·W_enc + b_enc      c = 1 with center_input, else 0
 *   ReLU:     a = max(pre, 0)
 *   JumpReLU: a = pre·1[pre > θ], θ = exp(log θ) > 0
 *   x̂ = a·W_dec + b_dec
 * Loss per row, averaged over the batch:
 *   ReLU:     ‖x − x̂‖² + λ·Σ_k a_k·‖W_dec[k]‖   (Anthropic's "April update" L1 penalty)
 *   JumpReLU: ‖x − x̂‖² + λ·Σ_k 1[pre_k > θ_k]   (L0, as GemmaScope / "Jumping Ahead")
 * JumpReLU's θ learns through the straight-through estimator with a rectangle kernel
 * K(u) = 1[|u| < 1/2] of bandwidth ε: ∂a_k/∂θ_k := −(θ_k/ε)·K((pre_k − θ_k)/ε) and
 * ∂1[pre_k > θ_k]/∂θ_k := −(1/ε)·K(...); the step passes no gradient to pre.
 *
 * Decoder rows, two modes (UP_SAE_DEC_*):
 *   UNIT     every row has unit norm: the row's gradient loses its radial part before the
 *            Adam step and the row is renormalised after it (GemmaScope). JumpReLU needs this
 *            mode: its L0 penalty does not see decoder norms, so free norms are unpenalised.
 *   PENALTY  rows are free and the L1 term is weighted by each row's norm (the April update).
 *            The written SAE is reparametrised to unit rows (row norm moved into the encoder
 *            column, b_enc and θ; a positively homogeneous activation makes x̂ unchanged).
 * Initialisation: W_dec rows in uniformly random directions with norm 1 (UNIT) or
 * init_dec_norm (PENALTY); W_enc = W_decᵀ; b_enc = 0; θ = init_threshold; b_dec = the data's
 * mean, its geometric median (Weiszfeld's iteration on up to 4096 evenly spaced rows, in
 * double) or 0.
 * Normalisation (normalize = 1): the data is scaled by s so that the mean ‖x·s‖² is d (so
 * coefficients carry across models and hooks), and s is folded back at the end: the SAE
 * returned and written acts on raw activations (b_enc, θ, b_dec divided by s) and its
 * latents are the trained ones divided by s. center_input is folded into b_enc too, so the
 * result always has apply_b_dec_to_input = 0, as a GemmaScope file must.
 * Optimiser: Adam with bias correction; learning rate warmed up linearly from 0 over
 * lr_warmup steps and decayed linearly to 0 over the last lr_decay steps; λ warmed up
 * linearly from 0 over sparsity_warmup steps; optional clipping of the global gradient norm.
 * Batches: rows drawn without replacement from a per-epoch shuffle of X.
 * Dead latents: a latent is dead in training when it has not fired (a > 0) on any of the
 * last dead_window tokens. With resample_every > 0, every resample_every steps up to
 * resample_until, each dead latent is re-initialised on a row drawn with probability ∝ its
 * squared reconstruction error (from up to 8192 random rows): W_dec row = the normalised
 * residual x − x̂ (times the alive rows' mean norm in PENALTY mode), W_enc column = the same
 * direction times 0.2 × the alive columns' mean norm, b_enc = 0, θ = init_threshold, Adam
 * moments of those parameters zeroed (Anthropic's resampling, on the residual rather than
 * the input).
 *
 * Numerics: fp32 parameters and products (up_sgemm); metric sums, norms and the data's
 * moments in double. The same X, options (seed included) and thread count give the same
 * bits: OpenBLAS partitions by thread count, and every reduction of ours runs in a fixed
 * order whatever the thread count.
 *
 * File written (up_sae_save_npz): GemmaScope params.npz, float32 members W_enc (d, d_sae),
 * W_dec (d_sae, d), b_enc (d_sae), b_dec (d), threshold (d_sae), via up_npz_write_f32 (see
 * npz_write.h: numpy.savez's format, temp name + rename). A ReLU SAE is written with
 * threshold 0 (JumpReLU at θ = 0 is ReLU), so up_sae_load reads it back as "jumprelu".
 *
 * Ownership: X, labels and scores stay the caller's and are only read. up_sae_train returns
 * a new up_sae (free with up_sae_free); up_sae_collect_resid returns a malloc'd matrix
 * (free()). The trainer makes one allocation for parameters, gradients and Adam moments and
 * one for its workspace; the per-step kernels allocate nothing.
 *
 * Errors: an up_status with a message in the caller's up_error. Bad options or shapes are
 * UP_ERR_INVALID naming the option and its value; a progress callback returning non-zero
 * stops training with UP_ERR_ABORTED (nothing is returned); non-finite data or a loss that
 * turns non-finite is UP_ERR_INVALID naming the row or the step. Core never prints: progress
 * comes through the callback. */
#ifndef UP_SAE_TRAIN_H
#define UP_SAE_TRAIN_H

#include <stdint.h>

#include "base/error.h"
#include "engine/model.h"
#include "formats/npz_write.h"
#include "sae/sae.h"

typedef enum { UP_SAE_DEC_UNIT = 0, UP_SAE_DEC_PENALTY } up_sae_dec_norm;
typedef enum { UP_SAE_BDEC_MEAN = 0, UP_SAE_BDEC_MEDIAN, UP_SAE_BDEC_ZERO } up_sae_bdec_init;

/* What the progress callback sees: averages over the steps since the previous report. */
typedef struct up_sae_train_progress {
    int step, steps;      /* steps done, steps asked for */
    double loss;          /* training loss (normalised units, λ as warmed up) */
    double mse;           /* ‖x − x̂‖² per element, raw units */
    double l0;            /* mean active latents per row */
    double fvu;           /* Σ‖x − x̂‖² / Σ‖x − mean(X)‖² over those batches */
    double dead_fraction; /* latents with no firing in the last dead_window tokens */
    double lr, sparsity_coef; /* at the last step */
    int resampled;        /* latents resampled so far */
} up_sae_train_progress;

/* Return non-zero to stop training (up_sae_train then returns UP_ERR_ABORTED). */
typedef int (*up_sae_train_progress_fn)(const up_sae_train_progress *p, void *user);

typedef struct up_sae_train_opts {
    up_sae_arch arch;         /* UP_SAE_RELU or UP_SAE_JUMPRELU */
    int d_sae;                /* latents, >= 1 */
    double sparsity_coef;     /* λ: L1 (ReLU) or L0 (JumpReLU) coefficient, >= 0 */
    int sparsity_warmup;      /* steps over which λ ramps up from 0 */
    up_sae_dec_norm dec_norm; /* JumpReLU: UNIT only */
    double init_dec_norm;     /* PENALTY mode's initial row norm, > 0 */
    double lr;                /* Adam step size, > 0 */
    int lr_warmup, lr_decay;  /* steps of linear warm-up from 0 and of linear decay to 0 */
    double beta1, beta2, adam_eps;
    double grad_clip;         /* clip the global gradient norm to this; 0: no clipping */
    int batch;                /* rows per step, >= 1 */
    int steps;                /* >= 1 */
    uint64_t seed;            /* initialisation, shuffles and resampling */
    int normalize;            /* scale data to mean ‖x‖² = d while training (folded back) */
    int center_input;         /* encode x − b_dec while training (folded into b_enc) */
    up_sae_bdec_init b_dec_init;
    double bandwidth;         /* JumpReLU ε, normalised units, > 0 */
    double init_threshold;    /* JumpReLU initial θ, normalised units, > 0 */
    int64_t dead_window;      /* tokens; 0: min(rows of X, 262144) */
    int resample_every;       /* steps between resamplings; 0: never */
    int resample_until;       /* last step that may resample; 0: steps / 2 */
    int log_every;            /* steps between progress reports; the last step always reports */
    up_sae_train_progress_fn progress; /* may be NULL */
    void *user;
    const char *hook;         /* hook name given to the SAE, e.g. "blocks.1.hook_resid_post";
                                 NULL: unknown (layer -1) */
} up_sae_train_opts;

/* Defaults: settings that trained the synthetic dictionaries of tests/test_sae_train.c well
 * (d 32, 64 features, 3-5 per token, d_sae 128; FVE ~0.91-0.92 at L0 ~4 for JumpReLU, FVE
 * ~0.91 at L0 ~12 for ReLU). The sparsity coefficient is data-dependent: sweep it for a
 * target L0 (in normalised units a JumpReLU threshold settles near sqrt(λ)).
 *   ReLU:     PENALTY rows (init norm 0.1), λ 0.7
 *   JumpReLU: UNIT rows, λ 0.3, ε 0.1, θ₀ 0.1
 *   both:     lr 4e-3, batch 256, 3000 steps, lr warm-up 100 steps, lr decay over the last
 *             20%, λ warm-up over the first 10%, Adam (0.9, 0.999, 1e-8), gradient-norm clip
 *             1, normalize on, center_input off, b_dec = mean, no resampling, seed 42,
 *             progress every 100 steps.
 * Change steps with lr_decay and sparsity_warmup, which the defaults tie to 3000 steps. */
up_sae_train_opts up_sae_train_opts_default(up_sae_arch arch, int d_sae);

typedef struct up_sae_train_report {
    /* Of the returned SAE over all rows of X, in raw units: */
    double fvu, mse, mean_l0;   /* as up_sae_stats defines them */
    int n_dead;                 /* latents that fire on no row of X */
    double dead_fraction;       /* n_dead / d_sae */
    /* Of the run: */
    int steps;                  /* steps done */
    int resampled;              /* latents resampled in all */
    double scale;               /* s (1 without normalize) */
    double final_loss;          /* mean training loss of the last reporting interval */
} up_sae_train_report;

/* Trains on X (n, d), n >= 1 rows. *out gets the SAE (arch as asked, apply_b_dec_to_input 0,
 * hook from opts). report may be NULL. */
up_status up_sae_train(const float *X, int64_t n, int d, const up_sae_train_opts *opts,
                       up_sae **out, up_sae_train_report *report, up_error *err);

/* Writes a loaded JumpReLU or ReLU SAE (both parts) as a GemmaScope params.npz at path (the
 * file itself). apply_b_dec_to_input is folded into b_enc (b_enc − b_dec·W_enc, fp32).
 * TopK is UP_ERR_UNSUPPORTED. */
up_status up_sae_save_npz(const up_sae *sae, const char *path, up_npz_compression compression,
                          up_error *err);

/* Collects blocks.{layer}.hook_resid_post over sequences ids[i] (lens[i] tokens each, i <
 * n_seqs), run batch at a time (left-padded), in order: every slot except pads and BOS
 * tokens (id == cfg.bos_id), sequence by sequence, up to max_rows rows (<= 0: all). *out
 * (n_out, d_model) is malloc'd (the caller frees); the pass stops after the hooked layer. */
up_status up_sae_collect_resid(const up_model *m, const int32_t *const *ids, const int *lens,
                               int n_seqs, int layer, int64_t max_rows, int batch, float **out,
                               int64_t *n_out, up_error *err);

/* pre (n, d_sae) = (x − c·b_dec)·W_enc + b_enc for x (n, d_in) (c = apply_b_dec_to_input):
 * each latent's score before its threshold. A JumpReLU activation is exactly 0 below θ, so
 * as a detector score it ties every missed occurrence with the negatives; the pre-activation
 * ranks them. Needs the encoder (UP_ERR_INVALID otherwise); allocates nothing. */
up_status up_sae_pre_activations(const up_sae *sae, const float *x, int n, float *pre, up_error *err);

/* Area under the ROC curve of scores (n) as a detector of labels (n; non-zero = positive):
 * P(score of a positive > score of a negative) + ½·P(tie), exact (Mann–Whitney U with
 * average ranks for ties), in double. NaN when either class is empty, a score is NaN or
 * memory runs out. */
double up_sae_auroc(const float *scores, const int *labels, int64_t n);

/* The AUROC of every latent's activation (acts (n, d_sae)) against labels (n); auroc
 * (d_sae) may be NULL. *best gets the latent with the highest AUROC (lowest index on ties)
 * and *best_auroc its value. UP_ERR_INVALID when a class is empty. */
up_status up_sae_best_auroc(const float *acts, const int *labels, int64_t n, int d_sae,
                            double *auroc, int *best, double *best_auroc, up_error *err);

#endif
