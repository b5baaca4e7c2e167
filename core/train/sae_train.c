#include "train/sae_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "base/rng.h"

/* --- random numbers: xoshiro256** seeded by splitmix64, so a seed fixes every draw ---------- */

typedef struct rng {
    uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = up_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return out;
}

/* [0, 1) with 53 random bits. */
static double rng_uniform(rng *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; }

/* Uniform on [0, n) without modulo bias. */
static uint64_t rng_below(rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

static double rng_normal(rng *r) {
    double u = 1.0 - rng_uniform(r), v = rng_uniform(r); /* u in (0, 1] keeps log finite */
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* --- options ------------------------------------------------------------------------------- */

up_sae_train_opts up_sae_train_opts_default(up_sae_arch arch, int d_sae) {
    up_sae_train_opts o = {0};
    o.arch = arch;
    o.d_sae = d_sae;
    o.dec_norm = arch == UP_SAE_JUMPRELU ? UP_SAE_DEC_UNIT : UP_SAE_DEC_PENALTY;
    o.sparsity_coef = arch == UP_SAE_JUMPRELU ? 0.3 : 0.7;
    o.init_dec_norm = 0.1;
    o.lr = 4e-3;
    o.steps = 3000;
    o.batch = 256;
    o.lr_warmup = 100;
    o.lr_decay = o.steps / 5;
    o.sparsity_warmup = o.steps / 10;
    o.beta1 = 0.9, o.beta2 = 0.999, o.adam_eps = 1e-8;
    o.grad_clip = 1.0;
    o.seed = 42;
    o.normalize = 1;
    o.center_input = 0;
    o.b_dec_init = UP_SAE_BDEC_MEAN;
    o.bandwidth = 0.1;
    o.init_threshold = 0.1;
    o.log_every = 100;
    return o;
}

static up_status check_opts(const up_sae_train_opts *o, int64_t n, int d, up_error *err) {
#define BAD(...) return up_error_set(err, UP_ERR_INVALID, "up_sae_train: " __VA_ARGS__)
    if (n < 1 || d < 1) BAD("X must have at least one row and column (n = %lld, d = %d)", (long long)n, d);
    if (o->arch != UP_SAE_RELU && o->arch != UP_SAE_JUMPRELU)
        BAD("arch = %s: only relu and jumprelu can be trained", up_sae_arch_name(o->arch));
    if (o->d_sae < 1) BAD("d_sae = %d must be >= 1", o->d_sae);
    if ((int64_t)o->d_sae * d > (int64_t)1 << 31) BAD("d_sae = %d x d = %d is too large", o->d_sae, d);
    if (!(o->sparsity_coef >= 0) || !isfinite(o->sparsity_coef))
        BAD("sparsity_coef = %g must be finite and >= 0", o->sparsity_coef);
    if (o->dec_norm != UP_SAE_DEC_UNIT && o->dec_norm != UP_SAE_DEC_PENALTY)
        BAD("dec_norm = %d is not unit or penalty", (int)o->dec_norm);
    if (o->arch == UP_SAE_JUMPRELU && o->dec_norm != UP_SAE_DEC_UNIT)
        BAD("JumpReLU needs unit-norm decoder rows (its L0 penalty does not see row norms)");
    if (o->dec_norm == UP_SAE_DEC_PENALTY && !(o->init_dec_norm > 0 && isfinite(o->init_dec_norm)))
        BAD("init_dec_norm = %g must be > 0", o->init_dec_norm);
    if (!(o->lr > 0) || !isfinite(o->lr)) BAD("lr = %g must be > 0", o->lr);
    if (o->steps < 1) BAD("steps = %d must be >= 1", o->steps);
    if (o->batch < 1) BAD("batch = %d must be >= 1", o->batch);
    if ((int64_t)o->batch * o->d_sae > (int64_t)1 << 31) BAD("batch = %d x d_sae = %d is too large", o->batch, o->d_sae);
    if (o->lr_warmup < 0 || o->lr_decay < 0 || o->sparsity_warmup < 0)
        BAD("lr_warmup = %d, lr_decay = %d, sparsity_warmup = %d must be >= 0", o->lr_warmup,
            o->lr_decay, o->sparsity_warmup);
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
        BAD("beta1 = %g and beta2 = %g must be in [0, 1)", o->beta1, o->beta2);
    if (!(o->adam_eps > 0)) BAD("adam_eps = %g must be > 0", o->adam_eps);
    if (!(o->grad_clip >= 0)) BAD("grad_clip = %g must be >= 0", o->grad_clip);
    if ((unsigned)o->b_dec_init > UP_SAE_BDEC_ZERO) BAD("b_dec_init = %d is not mean, median or zero", (int)o->b_dec_init);
    if (o->arch == UP_SAE_JUMPRELU) {
        if (!(o->bandwidth > 0) || !isfinite(o->bandwidth)) BAD("bandwidth = %g must be > 0", o->bandwidth);
        if (!(o->init_threshold > 0) || !isfinite(o->init_threshold))
            BAD("init_threshold = %g must be > 0", o->init_threshold);
    }
    if (o->dead_window < 0) BAD("dead_window = %lld must be >= 0", (long long)o->dead_window);
    if (o->resample_every < 0 || o->resample_until < 0)
        BAD("resample_every = %d and resample_until = %d must be >= 0", o->resample_every, o->resample_until);
    if (o->log_every < 0) BAD("log_every = %d must be >= 0", o->log_every);
    if (o->hook && strlen(o->hook) >= UP_SAE_HOOK_MAX) BAD("hook name is too long");
#undef BAD
    return UP_OK;
}

/* --- the trainer's state ------------------------------------------------------------------- */

#define RESAMPLE_ROWS 8192
#define MEDIAN_ROWS 4096
#define NORM_CHUNK 65536 /* fixed chunks make the gradient norm independent of thread count */
#define OMP_MIN 262144   /* below this many elements a loop is not worth waking threads */

typedef struct trainer {
    const up_sae_train_opts *o;
    const float *X;         /* (n, d) raw */
    int64_t n;
    int d, S, B;
    int jump, unit, center;
    double scale;           /* s */
    double lam;             /* λ at the current step */
    /* Parameters, gradients and Adam moments: one allocation of 4 blocks of P floats. */
    float *mem;
    size_t P;
    float *p, *g, *m, *v;   /* (P) each */
    size_t o_W_enc, o_b_enc, o_thr, o_W_dec, o_b_dec; /* offsets of each tensor in a block */
    float *W_enc, *b_enc, *log_thr, *W_dec, *b_dec;  /* views of p: (d, S) (S) (S) (S, d) (d) */
    /* Workspace: one allocation. */
    void *work;
    float *xb;     /* (B, d) batch, normalised */
    float *xT;     /* (d, B) */
    float *pre;    /* (B, S) */
    float *act;    /* (B, S) */
    float *actT;   /* (S, B); reused as the JumpReLU threshold-gradient terms (B, S) */
    float *errb;   /* (B, d) x̂ − x, then d loss / d x̂ */
    float *dact;   /* (B, S) d loss / d a, then d loss / d pre */
    float *thr;    /* (S) θ = exp(log θ) */
    float *beff;   /* (S) b_enc − c·b_dec·W_enc */
    float *norms;  /* (S) decoder row norms */
    float *colsum; /* (S) */
    int *fired;    /* (S) firings in the batch */
    double *mean;  /* (d) data mean, normalised */
    double *partials;   /* (ceil(P / NORM_CHUNK)) */
    int64_t *last_fire; /* (S) token count after the last batch the latent fired in */
    int64_t *perm;      /* (n) this epoch's row order */
    int64_t perm_pos;
    int64_t *rs_rows;   /* (RESAMPLE_ROWS) */
    double *rs_cum;     /* (RESAMPLE_ROWS) */
    int *dead;          /* (S) */
    rng r;
    int64_t tokens;     /* rows seen */
    int64_t window;
    int resampled;
} trainer;

static void trainer_free(trainer *t) {
    free(t->mem), free(t->work);
    t->mem = NULL, t->work = NULL;
}

/* Carves consecutive aligned pieces out of one block (first pass sizes it, second assigns). */
typedef struct carver {
    char *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (bytes + 63) / 64 * 64;
    return p;
}

static up_status trainer_alloc(trainer *t, up_error *err) {
    const size_t d = (size_t)t->d, S = (size_t)t->S, B = (size_t)t->B;
    t->o_W_enc = 0;
    t->o_b_enc = d * S;
    t->o_thr = t->o_b_enc + S;
    t->o_W_dec = t->o_thr + (t->jump ? S : 0);
    t->o_b_dec = t->o_W_dec + S * d;
    t->P = t->o_b_dec + d;
    t->mem = calloc(4 * t->P, sizeof(float));
    size_t n_chunks = (t->P + NORM_CHUNK - 1) / NORM_CHUNK;
    size_t rs = (size_t)(t->n < RESAMPLE_ROWS ? t->n : RESAMPLE_ROWS);
    carver c = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        if (pass) {
            t->work = calloc(1, c.off);
            if (!t->work || !t->mem) {
                trainer_free(t);
                return up_error_set(err, UP_ERR_NOMEM, "up_sae_train: out of memory (d %zu, d_sae %zu, batch %zu, rows %lld)",
                                    d, S, B, (long long)t->n);
            }
            c = (carver){t->work, 0};
        }
        t->xb = carve(&c, B * d * sizeof(float));
        t->xT = carve(&c, B * d * sizeof(float));
        t->pre = carve(&c, B * S * sizeof(float));
        t->act = carve(&c, B * S * sizeof(float));
        t->actT = carve(&c, B * S * sizeof(float));
        t->errb = carve(&c, B * d * sizeof(float));
        t->dact = carve(&c, B * S * sizeof(float));
        t->thr = carve(&c, S * sizeof(float));
        t->beff = carve(&c, S * sizeof(float));
        t->norms = carve(&c, S * sizeof(float));
        t->colsum = carve(&c, S * sizeof(float));
        t->fired = carve(&c, S * sizeof(int));
        t->mean = carve(&c, d * sizeof(double));
        t->partials = carve(&c, n_chunks * sizeof(double));
        t->last_fire = carve(&c, S * sizeof(int64_t));
        t->perm = carve(&c, (size_t)t->n * sizeof(int64_t));
        t->rs_rows = carve(&c, rs * sizeof(int64_t));
        t->rs_cum = carve(&c, rs * sizeof(double));
        t->dead = carve(&c, S * sizeof(int));
    }
    t->p = t->mem, t->g = t->mem + t->P, t->m = t->mem + 2 * t->P, t->v = t->mem + 3 * t->P;
    t->W_enc = t->p + t->o_W_enc, t->b_enc = t->p + t->o_b_enc, t->log_thr = t->p + t->o_thr;
    t->W_dec = t->p + t->o_W_dec, t->b_dec = t->p + t->o_b_dec;
    return UP_OK;
}

/* --- small deterministic kernels ----------------------------------------------------------- */

/* out (cols) = Σ over rows of M (rows, cols), rows summed in order whatever the threads. */
static void colsum(const float *M, int rows, int cols, float *out) {
    const int blk = 256, nblk = (cols + blk - 1) / blk;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= OMP_MIN)
    for (int b = 0; b < nblk; b++) {
        int k0 = b * blk, k1 = k0 + blk < cols ? k0 + blk : cols;
        for (int k = k0; k < k1; k++) out[k] = 0;
        for (int r = 0; r < rows; r++) {
            const float *row = M + (size_t)r * cols;
            for (int k = k0; k < k1; k++) out[k] += row[k];
        }
    }
}

/* out (cols, rows) = M (rows, cols)ᵀ; up_sgemm transposes only its second operand. */
static void transpose(const float *M, int rows, int cols, float *out) {
    const int blk = 32;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= OMP_MIN)
    for (int c0 = 0; c0 < cols; c0 += blk)
        for (int r0 = 0; r0 < rows; r0 += blk)
            for (int c = c0; c < c0 + blk && c < cols; c++)
                for (int r = r0; r < r0 + blk && r < rows; r++)
                    out[(size_t)c * rows + r] = M[(size_t)r * cols + c];
}

static void row_norms(const float *W, int rows, int cols, float *out) {
    for (int k = 0; k < rows; k++) {
        double s = 0;
        for (int j = 0; j < cols; j++) s += (double)W[(size_t)k * cols + j] * W[(size_t)k * cols + j];
        out[k] = (float)sqrt(s);
    }
}

/* --- forward over m <= B rows already in xb ----------------------------------------------- */

static void forward(trainer *t, int m) {
    const int d = t->d, S = t->S;
    memcpy(t->beff, t->b_enc, (size_t)S * sizeof(float));
    if (t->center) /* beff = b_enc − b_dec·W_enc */
        up_sgemm(1, S, d, -1.0f, t->b_dec, t->W_enc, 0, 1.0f, t->beff);
    if (t->jump)
        for (int k = 0; k < S; k++) t->thr[k] = expf(t->log_thr[k]);
    up_sgemm(m, S, d, 1.0f, t->xb, t->W_enc, 0, 0.0f, t->pre);
#pragma omp parallel for schedule(static) if ((int64_t)m * S >= OMP_MIN)
    for (int b = 0; b < m; b++) {
        float *pre = t->pre + (size_t)b * S, *a = t->act + (size_t)b * S;
        for (int k = 0; k < S; k++) {
            float z = pre[k] + t->beff[k];
            pre[k] = z;
            /* θ > 0, so JumpReLU's second condition (pre > 0) holds whenever the first does. */
            a[k] = t->jump ? (z > t->thr[k] ? z : 0.0f) : (z > 0.0f ? z : 0.0f);
        }
    }
    for (int b = 0; b < m; b++) memcpy(t->errb + (size_t)b * d, t->b_dec, (size_t)d * sizeof(float));
    up_sgemm(m, d, S, 1.0f, t->act, t->W_dec, 0, 1.0f, t->errb);
    for (size_t i = 0; i < (size_t)m * d; i++) t->errb[i] -= t->xb[i];
}

/* --- data: moments, batches ---------------------------------------------------------------- */

/* dst (m, d) = the given rows of X, normalised. */
static void load_rows(const trainer *t, const int64_t *rows, int m, float *dst) {
    const int d = t->d;
    const float s = (float)t->scale;
    for (int b = 0; b < m; b++) {
        const float *src = t->X + (size_t)rows[b] * d;
        for (int j = 0; j < d; j++) dst[(size_t)b * d + j] = src[j] * s;
    }
}

static void shuffle(trainer *t) {
    for (int64_t i = 0; i < t->n; i++) t->perm[i] = i;
    for (int64_t i = t->n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(&t->r, (uint64_t)i + 1), tmp = t->perm[i];
        t->perm[i] = t->perm[j], t->perm[j] = tmp;
    }
    t->perm_pos = 0;
}

static void next_batch(trainer *t) {
    int64_t rows[256];
    for (int b0 = 0; b0 < t->B; b0 += 256) {
        int m = t->B - b0 < 256 ? t->B - b0 : 256;
        for (int i = 0; i < m; i++) {
            if (t->perm_pos == t->n) shuffle(t);
            rows[i] = t->perm[t->perm_pos++];
        }
        load_rows(t, rows, m, t->xb + (size_t)b0 * t->d);
    }
}

/* Mean and mean squared norm of the raw rows (double); rejects non-finite values. */
static up_status data_moments(trainer *t, double *mean_sq, up_error *err) {
    const int d = t->d;
    double sq = 0;
    for (int j = 0; j < d; j++) t->mean[j] = 0;
    for (int64_t i = 0; i < t->n; i++) {
        const float *x = t->X + (size_t)i * d;
        for (int j = 0; j < d; j++) {
            if (!isfinite(x[j]))
                return up_error_set(err, UP_ERR_INVALID, "up_sae_train: X[%lld][%d] is not finite",
                                    (long long)i, j);
            t->mean[j] += x[j];
            sq += (double)x[j] * x[j];
        }
    }
    for (int j = 0; j < d; j++) t->mean[j] /= (double)t->n;
    *mean_sq = sq / (double)t->n;
    return UP_OK;
}

/* Weiszfeld's iteration from the mean on up to MEDIAN_ROWS evenly spaced rows (raw units). */
static void geometric_median(const trainer *t, double *y, double *next) {
    const int d = t->d;
    int64_t m = t->n < MEDIAN_ROWS ? t->n : MEDIAN_ROWS, stride = t->n / m;
    memcpy(y, t->mean, (size_t)d * sizeof(double));
    for (int it = 0; it < 200; it++) {
        double wsum = 0, shift = 0, ynorm = 0;
        for (int j = 0; j < d; j++) next[j] = 0;
        for (int64_t i = 0; i < m; i++) {
            const float *x = t->X + (size_t)(i * stride) * d;
            double dist = 0;
            for (int j = 0; j < d; j++) dist += (x[j] - y[j]) * (x[j] - y[j]);
            double w = 1.0 / fmax(sqrt(dist), 1e-12);
            wsum += w;
            for (int j = 0; j < d; j++) next[j] += w * x[j];
        }
        for (int j = 0; j < d; j++) {
            next[j] /= wsum;
            shift += (next[j] - y[j]) * (next[j] - y[j]);
            ynorm += next[j] * next[j];
            y[j] = next[j];
        }
        if (shift <= 1e-18 * (ynorm + 1e-30)) break;
    }
}

/* --- initialisation ---------------------------------------------------------------------- */

static void init_params(trainer *t, double *tmp) {
    const int d = t->d, S = t->S;
    const double row_norm = t->unit ? 1.0 : t->o->init_dec_norm;
    for (int k = 0; k < S; k++) {
        float *w = t->W_dec + (size_t)k * d;
        double s;
        do {
            s = 0;
            for (int j = 0; j < d; j++) {
                w[j] = (float)rng_normal(&t->r);
                s += (double)w[j] * w[j];
            }
        } while (s == 0);
        double f = row_norm / sqrt(s);
        for (int j = 0; j < d; j++) w[j] = (float)(w[j] * f);
    }
    transpose(t->W_dec, S, d, t->W_enc);
    for (int k = 0; k < S; k++) t->b_enc[k] = 0;
    if (t->jump)
        for (int k = 0; k < S; k++) t->log_thr[k] = (float)log(t->o->init_threshold);
    if (t->o->b_dec_init == UP_SAE_BDEC_ZERO) {
        for (int j = 0; j < d; j++) t->b_dec[j] = 0;
    } else if (t->o->b_dec_init == UP_SAE_BDEC_MEDIAN) {
        geometric_median(t, tmp, tmp + d);
        for (int j = 0; j < d; j++) t->b_dec[j] = (float)(tmp[j] * t->scale);
    } else {
        for (int j = 0; j < d; j++) t->b_dec[j] = (float)(t->mean[j] * t->scale);
    }
}

/* --- one step ---------------------------------------------------------------------------- */

typedef struct step_stats {
    double loss, sse, sst, l0;
} step_stats;

/* Gradients of the batch in xb into g; returns the batch's sums. */
static step_stats backward(trainer *t) {
    const int d = t->d, S = t->S, B = t->B;
    const float lamB = (float)(t->lam / B), inv_eps = t->jump ? (float)(1.0 / t->o->bandwidth) : 0;
    float *gW_enc = t->g + t->o_W_enc, *gb_enc = t->g + t->o_b_enc, *gthr = t->g + t->o_thr;
    float *gW_dec = t->g + t->o_W_dec, *gb_dec = t->g + t->o_b_dec;
    step_stats st = {0};
    forward(t, B);

    /* Reconstruction error, then d loss / d x̂ = 2(x̂ − x)/B. */
    for (int b = 0; b < B; b++) {
        const float *e = t->errb + (size_t)b * d, *x = t->xb + (size_t)b * d;
        for (int j = 0; j < d; j++) {
            double c = x[j] / t->scale - t->mean[j];
            st.sse += (double)e[j] * e[j];
            st.sst += c * c * t->scale * t->scale;
        }
    }
    for (size_t i = 0; i < (size_t)B * d; i++) t->errb[i] *= 2.0f / B;
    colsum(t->errb, B, d, gb_dec);

    /* Firing counts (dead tracking, L0) and, for the L1 term, each latent's activation sum. */
    const int blk = 256, nblk = (S + blk - 1) / blk;
#pragma omp parallel for schedule(static) if ((int64_t)B * S >= OMP_MIN)
    for (int q = 0; q < nblk; q++) {
        int k0 = q * blk, k1 = k0 + blk < S ? k0 + blk : S;
        for (int k = k0; k < k1; k++) t->fired[k] = 0, t->colsum[k] = 0;
        for (int b = 0; b < B; b++) {
            const float *a = t->act + (size_t)b * S;
            for (int k = k0; k < k1; k++) {
                t->fired[k] += a[k] > 0.0f;
                t->colsum[k] += a[k];
            }
        }
    }
    double l1 = 0;
    if (!t->unit) row_norms(t->W_dec, S, d, t->norms);
    for (int k = 0; k < S; k++) {
        st.l0 += t->fired[k];
        l1 += (double)t->colsum[k] * (t->unit ? 1.0 : t->norms[k]);
    }
    st.loss = st.sse / B + (t->jump ? t->lam * st.l0 / B : t->lam * l1 / B);

    /* Decoder: d W_dec = aᵀ·d x̂ (+ the L1 term's pull on the row norms). */
    transpose(t->act, B, S, t->actT);
    up_sgemm(S, d, B, 1.0f, t->actT, t->errb, 0, 0.0f, gW_dec);
    if (!t->unit)
        for (int k = 0; k < S; k++) {
            if (t->norms[k] == 0) continue;
            float c = lamB * t->colsum[k] / t->norms[k];
            float *gw = gW_dec + (size_t)k * d;
            const float *w = t->W_dec + (size_t)k * d;
            for (int j = 0; j < d; j++) gw[j] += c * w[j];
        }

    /* d a = d x̂·W_decᵀ, then through the activation to d pre (in place). */
    up_sgemm(B, S, d, 1.0f, t->errb, t->W_dec, 1, 0.0f, t->dact);
    float *tg = t->actT; /* (B, S) threshold-gradient terms; actT is no longer needed */
#pragma omp parallel for schedule(static) if ((int64_t)B * S >= OMP_MIN)
    for (int b = 0; b < B; b++) {
        const float *pre = t->pre + (size_t)b * S;
        float *da = t->dact + (size_t)b * S, *tgb = tg + (size_t)b * S;
        for (int k = 0; k < S; k++) {
            if (t->jump) {
                float th = t->thr[k], u = (pre[k] - th) * inv_eps;
                /* Rectangle kernel: pseudo-derivatives of a and of the step w.r.t. θ. */
                tgb[k] = (u > -0.5f && u < 0.5f) ? -(th * da[k] + lamB) * inv_eps : 0.0f;
                da[k] = pre[k] > th ? da[k] : 0.0f;
            } else {
                da[k] = pre[k] > 0.0f ? da[k] + lamB * (t->unit ? 1.0f : t->norms[k]) : 0.0f;
            }
        }
    }
    if (t->jump) {
        colsum(tg, B, S, gthr);
        for (int k = 0; k < S; k++) gthr[k] *= t->thr[k]; /* chain rule through θ = exp(log θ) */
    }
    colsum(t->dact, B, S, gb_enc);
    transpose(t->xb, B, d, t->xT);
    up_sgemm(d, S, B, 1.0f, t->xT, t->dact, 0, 0.0f, gW_enc);
    if (t->center) /* pre = (x − b_dec)·W_enc + b_enc: b_dec also reaches the loss through pre */
        up_sgemm(1, d, S, -1.0f, gb_enc, t->W_enc, 1, 1.0f, gb_dec);

    if (t->unit) /* keep W_dec rows on the sphere: drop the radial part of their gradient */
        for (int k = 0; k < S; k++) {
            float *gw = gW_dec + (size_t)k * d;
            const float *w = t->W_dec + (size_t)k * d;
            double dot = 0;
            for (int j = 0; j < d; j++) dot += (double)gw[j] * w[j];
            for (int j = 0; j < d; j++) gw[j] -= (float)dot * w[j];
        }
    return st;
}

static double grad_norm(trainer *t) {
    const size_t P = t->P, n_chunks = (P + NORM_CHUNK - 1) / NORM_CHUNK;
#pragma omp parallel for schedule(static) if (P >= (size_t)OMP_MIN)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t i0 = c * NORM_CHUNK, i1 = i0 + NORM_CHUNK < P ? i0 + NORM_CHUNK : P;
        double s = 0;
        for (size_t i = i0; i < i1; i++) s += (double)t->g[i] * t->g[i];
        t->partials[c] = s;
    }
    double s = 0;
    for (size_t c = 0; c < n_chunks; c++) s += t->partials[c];
    return sqrt(s);
}

static void adam(trainer *t, int step, double lr, float gscale) {
    const double b1 = t->o->beta1, b2 = t->o->beta2;
    const float c1 = (float)(1.0 / (1.0 - pow(b1, step + 1))), c2 = (float)(1.0 / (1.0 - pow(b2, step + 1)));
    const float fb1 = (float)b1, fb2 = (float)b2, flr = (float)lr, eps = (float)t->o->adam_eps;
    const size_t P = t->P;
#pragma omp parallel for schedule(static) if (P >= (size_t)OMP_MIN)
    for (size_t i = 0; i < P; i++) {
        float g = t->g[i] * gscale;
        t->m[i] = fb1 * t->m[i] + (1 - fb1) * g;
        t->v[i] = fb2 * t->v[i] + (1 - fb2) * g * g;
        t->p[i] -= flr * (t->m[i] * c1) / (sqrtf(t->v[i] * c2) + eps);
    }
    if (t->unit)
        for (int k = 0; k < t->S; k++) {
            float *w = t->W_dec + (size_t)k * t->d;
            double s = 0;
            for (int j = 0; j < t->d; j++) s += (double)w[j] * w[j];
            if (s > 0)
                for (int j = 0; j < t->d; j++) w[j] = (float)(w[j] / sqrt(s));
        }
}

/* --- dead latents -------------------------------------------------------------------------- */

static int count_dead(trainer *t, int *dead) {
    int n = 0;
    for (int k = 0; k < t->S; k++) {
        int is = t->tokens - t->last_fire[k] >= t->window;
        if (dead) dead[k] = is;
        n += is;
    }
    return n;
}

static void resample(trainer *t) {
    const int d = t->d, S = t->S, B = t->B;
    int n_dead = count_dead(t, t->dead);
    if (n_dead == 0) return;
    /* Squared error of random rows under the current parameters, as a cumulative sum. */
    int64_t R = t->n < RESAMPLE_ROWS ? t->n : RESAMPLE_ROWS;
    for (int64_t i = 0; i < R; i++) t->rs_rows[i] = (int64_t)rng_below(&t->r, (uint64_t)t->n);
    double total = 0;
    for (int64_t r0 = 0; r0 < R; r0 += B) {
        int m = (int)(R - r0 < B ? R - r0 : B);
        load_rows(t, t->rs_rows + r0, m, t->xb);
        forward(t, m);
        for (int b = 0; b < m; b++) {
            double e = 0;
            for (int j = 0; j < d; j++) e += (double)t->errb[(size_t)b * d + j] * t->errb[(size_t)b * d + j];
            total += e;
            t->rs_cum[r0 + b] = total;
        }
    }
    if (!(total > 0)) return;
    /* The rows each dead latent will be built on, chosen before any parameter changes. */
    int64_t picks[256];
    double enc_norm = 0, dec_norm = 0;
    int alive = 0;
    for (int k = 0; k < S; k++) {
        if (t->dead[k]) continue;
        double s = 0, r = 0;
        for (int j = 0; j < d; j++) s += (double)t->W_enc[(size_t)j * S + k] * t->W_enc[(size_t)j * S + k];
        for (int j = 0; j < d; j++) r += (double)t->W_dec[(size_t)k * d + j] * t->W_dec[(size_t)k * d + j];
        enc_norm += sqrt(s), dec_norm += sqrt(r), alive++;
    }
    enc_norm = alive ? enc_norm / alive : 1.0;
    dec_norm = t->unit ? 1.0 : alive ? dec_norm / alive : t->o->init_dec_norm;
    int done = 0;
    for (int k0 = 0; k0 < S; k0 = done) {
        /* Up to min(B, 256) dead latents per pass through the workspace. */
        int cap = B < 256 ? B : 256, m = 0, k = k0;
        int ks[256];
        for (; k < S && m < cap; k++) {
            if (!t->dead[k]) continue;
            double u = rng_uniform(&t->r) * total;
            int64_t lo = 0, hi = R - 1;
            while (lo < hi) {
                int64_t mid = (lo + hi) / 2;
                if (t->rs_cum[mid] > u) hi = mid;
                else lo = mid + 1;
            }
            picks[m] = t->rs_rows[lo];
            ks[m++] = k;
        }
        done = k;
        if (m == 0) break;
        load_rows(t, picks, m, t->xb);
        forward(t, m);
        for (int i = 0; i < m; i++) {
            int kk = ks[i];
            const float *e = t->errb + (size_t)i * d; /* x̂ − x: the residual is −e */
            double s = 0;
            for (int j = 0; j < d; j++) s += (double)e[j] * e[j];
            if (!(s > 0)) continue;
            double inv = -1.0 / sqrt(s);
            for (int j = 0; j < d; j++) {
                double dir = e[j] * inv;
                t->W_dec[(size_t)kk * d + j] = (float)(dir * dec_norm);
                t->W_enc[(size_t)j * S + kk] = (float)(dir * 0.2 * enc_norm);
                t->m[t->o_W_dec + (size_t)kk * d + j] = t->v[t->o_W_dec + (size_t)kk * d + j] = 0;
                t->m[t->o_W_enc + (size_t)j * S + kk] = t->v[t->o_W_enc + (size_t)j * S + kk] = 0;
            }
            t->b_enc[kk] = 0;
            t->m[t->o_b_enc + kk] = t->v[t->o_b_enc + kk] = 0;
            if (t->jump) {
                t->log_thr[kk] = (float)log(t->o->init_threshold);
                t->m[t->o_thr + kk] = t->v[t->o_thr + kk] = 0;
            }
            t->last_fire[kk] = t->tokens;
            t->resampled++;
        }
    }
}

/* --- the result ------------------------------------------------------------------------------ */

/* Builds the raw-units SAE from the normalised parameters (see the header's folding rules). */
static up_status make_sae(trainer *t, up_sae **out, up_error *err) {
    const int d = t->d, S = t->S;
    up_status s = up_sae_alloc(out, t->o->arch, d, S, 0, 0, t->o->hook, err);
    if (s != UP_OK) return s;
    up_sae *sae = *out;
    const double inv_s = 1.0 / t->scale;
    row_norms(t->W_dec, S, d, t->norms);
    for (int k = 0; k < S; k++) {
        /* In PENALTY mode move each row's norm into its encoder side (unit rows out). */
        double nk = t->unit || t->norms[k] == 0 ? 1.0 : t->norms[k];
        double bias = t->b_enc[k];
        if (t->center)
            for (int j = 0; j < d; j++) bias -= (double)t->b_dec[j] * t->W_enc[(size_t)j * S + k];
        sae->b_enc[k] = (float)(bias * inv_s * nk);
        if (t->jump) sae->threshold[k] = (float)(exp((double)t->log_thr[k]) * inv_s * nk);
        for (int j = 0; j < d; j++) {
            sae->W_enc[(size_t)j * S + k] = (float)(t->W_enc[(size_t)j * S + k] * nk);
            sae->W_dec[(size_t)k * d + j] = (float)(t->W_dec[(size_t)k * d + j] / nk);
        }
    }
    for (int j = 0; j < d; j++) sae->b_dec[j] = (float)(t->b_dec[j] * inv_s);
    return UP_OK;
}

/* fvu, mse, mean L0 and dead latents of the finished SAE over all of X, raw units. */
static up_status evaluate(trainer *t, const up_sae *sae, up_sae_train_report *rep, up_error *err) {
    const int d = t->d, S = t->S, B = t->B;
    double sse = 0, sst = 0, l0 = 0;
    for (int k = 0; k < S; k++) t->last_fire[k] = 0; /* reused as firing counts */
    for (int64_t r0 = 0; r0 < t->n; r0 += B) {
        int m = (int)(t->n - r0 < B ? t->n - r0 : B);
        const float *x = t->X + (size_t)r0 * d;
        up_status s;
        if ((s = up_sae_encode(sae, x, m, t->act, err)) || (s = up_sae_decode(sae, t->act, m, t->errb, err)))
            return s;
        for (int b = 0; b < m; b++) {
            const float *a = t->act + (size_t)b * S;
            for (int k = 0; k < S; k++)
                if (a[k] != 0.0f) t->last_fire[k]++, l0++;
            for (int j = 0; j < d; j++) {
                double e = (double)x[(size_t)b * d + j] - t->errb[(size_t)b * d + j];
                double c = (double)x[(size_t)b * d + j] - t->mean[j];
                sse += e * e, sst += c * c;
            }
        }
    }
    rep->fvu = sst > 0 ? sse / sst : NAN;
    rep->mse = sse / ((double)t->n * d);
    rep->mean_l0 = l0 / (double)t->n;
    rep->n_dead = 0;
    for (int k = 0; k < S; k++) rep->n_dead += t->last_fire[k] == 0;
    rep->dead_fraction = (double)rep->n_dead / S;
    return UP_OK;
}

up_status up_sae_train(const float *X, int64_t n, int d, const up_sae_train_opts *o, up_sae **out,
                       up_sae_train_report *report, up_error *err) {
    *out = NULL;
    if (!o || !X) return up_error_set(err, UP_ERR_INVALID, "up_sae_train: no data or options");
    up_status s = check_opts(o, n, d, err);
    if (s != UP_OK) return s;
    trainer t = {.o = o, .X = X, .n = n, .d = d, .S = o->d_sae, .B = o->batch};
    t.jump = o->arch == UP_SAE_JUMPRELU;
    t.unit = o->dec_norm == UP_SAE_DEC_UNIT;
    t.center = o->center_input != 0;
    if ((s = trainer_alloc(&t, err)) != UP_OK) return s;
    double mean_sq = 0;
    if ((s = data_moments(&t, &mean_sq, err)) != UP_OK) goto done;
    if (o->normalize && !(mean_sq > 0)) {
        s = up_error_set(err, UP_ERR_INVALID, "up_sae_train: every row of X is zero; nothing to normalise");
        goto done;
    }
    t.scale = o->normalize ? sqrt(d / mean_sq) : 1.0;
    t.window = o->dead_window > 0 ? o->dead_window : (n < 262144 ? n : 262144);
    rng_seed(&t.r, o->seed);
    {
        double *tmp = malloc(2 * (size_t)d * sizeof(double));
        if (!tmp) {
            s = up_error_set(err, UP_ERR_NOMEM, "up_sae_train: out of memory");
            goto done;
        }
        init_params(&t, tmp);
        free(tmp);
    }
    shuffle(&t);
    const int resample_until = o->resample_until > 0 ? o->resample_until : o->steps / 2;
    const int log_every = o->log_every > 0 ? o->log_every : o->steps;
    step_stats acc = {0};
    int acc_steps = 0;
    double last_loss = NAN, lr = 0;
    for (int step = 0; step < o->steps; step++) {
        double warm = o->lr_warmup > 0 && step < o->lr_warmup ? (step + 1.0) / o->lr_warmup : 1.0;
        double decay = o->lr_decay > 0 && step >= o->steps - o->lr_decay
                           ? (double)(o->steps - step) / o->lr_decay : 1.0;
        lr = o->lr * warm * decay;
        t.lam = o->sparsity_coef *
                (o->sparsity_warmup > 0 && step < o->sparsity_warmup ? (step + 1.0) / o->sparsity_warmup : 1.0);
        next_batch(&t);
        step_stats st = backward(&t);
        if (!isfinite(st.loss)) {
            s = up_error_set(err, UP_ERR_INVALID,
                             "up_sae_train: the loss is not finite at step %d (lr %g too high?)", step, o->lr);
            goto done;
        }
        double gn = grad_norm(&t);
        float gscale = o->grad_clip > 0 && gn > o->grad_clip ? (float)(o->grad_clip / gn) : 1.0f;
        adam(&t, step, lr, gscale);
        t.tokens += t.B;
        for (int k = 0; k < t.S; k++)
            if (t.fired[k]) t.last_fire[k] = t.tokens;
        acc.loss += st.loss, acc.sse += st.sse, acc.sst += st.sst, acc.l0 += st.l0;
        acc_steps++;
        if (o->resample_every > 0 && (step + 1) % o->resample_every == 0 && step + 1 <= resample_until &&
            step + 1 < o->steps)
            resample(&t);
        if ((step + 1) % log_every == 0 || step + 1 == o->steps) {
            last_loss = acc.loss / acc_steps;
            if (o->progress) {
                up_sae_train_progress p = {
                    .step = step + 1, .steps = o->steps, .loss = last_loss,
                    .mse = acc.sse / ((double)acc_steps * t.B * d) / (t.scale * t.scale),
                    .l0 = acc.l0 / ((double)acc_steps * t.B),
                    .fvu = acc.sst > 0 ? acc.sse / acc.sst : NAN,
                    .dead_fraction = (double)count_dead(&t, NULL) / t.S,
                    .lr = lr, .sparsity_coef = t.lam, .resampled = t.resampled};
                if (o->progress(&p, o->user)) {
                    s = up_error_set(err, UP_ERR_ABORTED, "up_sae_train: stopped by the progress callback at step %d",
                                     step + 1);
                    goto done;
                }
            }
            acc = (step_stats){0};
            acc_steps = 0;
        }
    }
    if ((s = make_sae(&t, out, err)) != UP_OK) goto done;
    up_sae_train_report rep = {0};
    if ((s = evaluate(&t, *out, &rep, err)) != UP_OK) goto done;
    rep.steps = o->steps;
    rep.resampled = t.resampled;
    rep.scale = t.scale;
    rep.final_loss = last_loss;
    if (report) *report = rep;
done:
    if (s != UP_OK) {
        up_sae_free(*out);
        *out = NULL;
    }
    trainer_free(&t);
    return s;
}
