/* bench_engine — throughput of the forward pass on gemma-2-2b's exact shapes.
 *
 * Builds the model in memory with random weights (no checkpoint needed), once
 * per storage dtype, and measures in the same run the two ceilings that bound
 * it on this machine: OpenBLAS sgemm GFLOP/s (prefill is compute-bound) and
 * memory read bandwidth (batch-1 decode is bandwidth-bound, since every weight
 * is read once per token). Each engine figure is printed with its ratio to the
 * relevant ceiling, so a regression shows as a falling percentage rather than
 * a number that only means something on the machine it came from.
 *
 * Prints figures and never fails on time: the exit status is non-zero only
 * when something errors (bad option, allocation, a forward pass failing).
 *
 *   bench_engine [--dtype bf16|f32|both] [--threads N] [--layers N]
 *                [--prompt T] [--decode S] [--batch B,B,...] [--reps R] [--bw-mb MB]
 *
 * Memory: full size is ~5.2 GB of weights in bf16 and ~10.5 GB in f32; the
 * dtypes run one after another and each model is freed before the next. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "bench_machine.h"
#include "engine/blas.h"
#include "base/error.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/model.h"

/* From OpenBLAS (cblas.h is blas.c's alone); printed so a figure says which build made it. */
extern char *openblas_get_config(void);
extern int openblas_get_parallel(void); /* 0 sequential, 1 pthreads, 2 OpenMP */

typedef struct bench_opts {
    int bf16, f32;  /* which storage dtypes to run */
    int threads;
    int layers;     /* 0: the real 26 */
    int prompt;     /* prefill length */
    int decode;     /* decode steps */
    int batches[4]; /* rows of each batched decode run */
    int n_batches;
    int reps;       /* timed repetitions of each measurement; the best is reported */
    int bw_mb;      /* bandwidth probe buffer */
} bench_opts;

/* The two ceilings the engine is judged against. */
typedef struct machine {
    double sgemm_thin;   /* GFLOP/s of the prefill-shaped product */
    double sgemm_square; /* GFLOP/s of a large square product */
    double bandwidth;    /* GB/s, multithreaded streaming read */
} machine;

static double peak_rss_gb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0 / 1e9; /* ru_maxrss is in KiB on Linux */
}

/* gemma-2-2b-it's config.json, with the layer count overridable for quick runs. */
static up_model_config gemma2_2b(int layers) {
    up_model_config c = up_model_config_gemma2_2b();
    if (layers > 0) c.n_layers = layers;
    return c;
}

/* ---- machine ceilings ------------------------------------------------------- */

/* Both ceilings (bench_machine.h). */
static void measure_machine(machine *mc, const bench_opts *o) {
    mc->bandwidth = bench_bandwidth((size_t)o->bw_mb << 20, o->reps + 2);
    mc->sgemm_thin = bench_sgemm(64, 9216, 2304, 10); /* ~20 ms each: cheap to repeat */
    mc->sgemm_square = bench_sgemm(4096, 4096, 4096, o->reps);
}

static void print_machine(const machine *mc, const bench_opts *o, const char *when) {
    printf("machine, measured %s (best of repetitions; load average %.2f):\n", when, load_average());
    printf("  read bandwidth, %d MB streaming sum, %d threads:    %7.1f GB/s\n", o->bw_mb, up_blas_threads(),
           mc->bandwidth);
    printf("  sgemm 64x9216x2304 (A @ B^T, the prefill MLP shape): %7.1f GFLOP/s\n", mc->sgemm_thin);
    printf("  sgemm 4096x4096x4096 (A @ B^T):                      %7.1f GFLOP/s\n", mc->sgemm_square);
}

/* ---- per-sublayer timing through the hook points ---------------------------- */

enum { SEG_EMBED, SEG_ATTN, SEG_MLP, SEG_RESID, SEG_FINAL_NORM, SEG_LM_HEAD, SEG_COUNT };
static const char *const seg_name[SEG_COUNT] = {
    "embed", "attn block", "mlp block", "resid adds", "final norm", "lm_head+cap"};

/* Every hook fires at a boundary between sublayers; the time since the previous boundary is
 * charged to the work that just ended. "attn block" = input norm, q/k/v projections, RoPE,
 * cache copy, attention, o_proj and post-attention norm; "mlp block" = pre-ffw norm,
 * gate/up, GELU*up, down and post-ffw norm. */
typedef struct profile {
    double last;
    double seg[SEG_COUNT];
} profile;

static int profile_hook(const up_hook_call *call, void *user) {
    profile *p = user;
    double t = now();
    int seg;
    switch (call->point.kind) {
    case UP_HOOK_EMBED: seg = SEG_EMBED; break;
    case UP_HOOK_ATTN_OUT: seg = SEG_ATTN; break;
    case UP_HOOK_MLP_OUT: seg = SEG_MLP; break;
    case UP_HOOK_LN_FINAL: seg = SEG_FINAL_NORM; break;
    default: seg = SEG_RESID; break; /* resid_pre/mid/post: only the residual adds precede them */
    }
    p->seg[seg] += t - p->last;
    p->last = t;
    return UP_HOOK_CONTINUE;
}

typedef struct profiler {
    up_hook items[UP_HOOK_KIND_COUNT];
    up_hooks hooks;
    profile prof;
} profiler;

static void profiler_init(profiler *pr) {
    memset(pr, 0, sizeof *pr);
    for (int k = 0; k < UP_HOOK_KIND_COUNT; k++) {
        int layer = (k == UP_HOOK_EMBED || k == UP_HOOK_LN_FINAL) ? -1 : UP_HOOK_ANY_LAYER;
        pr->items[k] = (up_hook){{(up_hook_kind)k, layer}, profile_hook, &pr->prof};
    }
    pr->hooks = (up_hooks){pr->items, UP_HOOK_KIND_COUNT};
}

/* One timed up_forward; the time after ln_final is the unembedding. Returns seconds. */
static double timed_forward(up_state *s, profiler *pr, const int32_t *tokens, int B, int T, float *logits) {
    up_error err;
    double t0 = now();
    pr->prof.last = t0;
    if (up_forward(s, tokens, NULL, NULL, B, T, &pr->hooks, logits, UP_LOGITS_LAST, &err)) {
        fprintf(stderr, "bench_engine: forward failed: %s\n", err.msg);
        exit(1);
    }
    double t1 = now();
    pr->prof.seg[SEG_LM_HEAD] += t1 - pr->prof.last;
    return t1 - t0;
}

/* ---- model accounting --------------------------------------------------------- */

typedef struct shape_costs {
    double attn_params, mlp_params, head_params; /* matmul parameters: all layers; lm_head */
} shape_costs;

static shape_costs costs_of(const up_model_config *c) {
    double d = c->d_model, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    shape_costs k;
    k.attn_params = c->n_layers * (q * d + 2 * kv * d + d * q);
    k.mlp_params = c->n_layers * 3.0 * c->d_mlp * d;
    k.head_params = (double)c->vocab_size * d;
    return k;
}

/* Attention FLOPs of appending T tokens after `past` cached ones, causal (masked columns are
 * skipped by the kernel, so they are not counted): QK^T and PV, 2*hd each per (query, key). */
static double attn_core_flops(const up_model_config *c, int B, int past, int T) {
    double pairs = 0;
    for (int t = 0; t < T; t++) pairs += past + t + 1;
    return (double)B * c->n_layers * c->n_heads * 4.0 * c->head_dim * pairs;
}

static void print_profile(const profile *p, int n_passes, const double seg_work[SEG_COUNT], const char *unit) {
    double total = 0;
    for (int i = 0; i < SEG_COUNT; i++) total += p->seg[i];
    for (int i = 0; i < SEG_COUNT; i++) {
        double t = p->seg[i] / n_passes;
        printf("      %-12s %9.2f ms  %5.1f%%", seg_name[i], 1e3 * t, 100.0 * p->seg[i] / total);
        if (seg_work && seg_work[i] > 0) printf("  %8.1f %s", seg_work[i] / t / 1e9, unit);
        printf("\n");
    }
}

/* ---- kernel probes ------------------------------------------------------------ */

/* up_linear alone on one of the model's own matrices, to separate the kernel from the pass.
 * Returns the best time of reps calls. */
static double time_linear(const up_weight *w, int M, int N, int K, int reps, float *x, float *y, float *scratch,
                          size_t scratch_floats) {
    up_linear(y, x, w->data, w->dtype, M, N, K, 0, scratch, scratch_floats);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        up_linear(y, x, w->data, w->dtype, M, N, K, 0, scratch, scratch_floats);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* The widening step of the bf16 prefill path, the way blas.c does it (parallel chunks of
 * up_convert_to_f32), so its cost can be set against the sgemm that follows it. */
static double time_widen(const up_weight *w, size_t n, float *dst, int reps) {
    const size_t chunk = 1 << 16, esz = up_dtype_size(w->dtype);
    const long n_chunks = (long)((n + chunk - 1) / chunk);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (long c = 0; c < n_chunks; c++) {
            size_t off = (size_t)c * chunk, len = n - off < chunk ? n - off : chunk;
            up_convert_to_f32(dst + off, (const char *)w->data + off * esz, w->dtype, len);
        }
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

static void probe_kernels(const up_model *m, const bench_opts *o, const machine *mc) {
    const up_model_config *c = &m->cfg;
    const int d = c->d_model, f = c->d_mlp, T = o->prompt, V = c->vocab_size;
    const up_weight *gate = &m->layers[0].gate_proj;
    const size_t esz = up_dtype_size(gate->dtype);
    /* Same scratch size as up_state_init gives the pass: the largest layer matrix. */
    const size_t scratch_floats = (size_t)f * d;
    float *scratch = xmalloc(scratch_floats * sizeof(float));
    const int M_max = T > 64 ? T : 64;
    float *x = xmalloc((size_t)M_max * d * sizeof(float));
    /* y holds the widest output probed: M_max rows of d_mlp, or one row of the vocabulary. */
    const size_t y_floats = (size_t)M_max * f > (size_t)V ? (size_t)M_max * f : (size_t)V;
    float *y = xmalloc(y_floats * sizeof(float));
    fill_uniform(x, (size_t)M_max * d, 3);

    /* Each row count's bound: reading the weights once (bandwidth) or the multiply-adds (sgemm
     * rate), whichever takes longer; a kernel's share is that time over its own. */
    printf("  kernels (up_linear on the model's own matrices, best of %d; share of the bound, the slower of\n"
           "  reading the weights once and the sgemm rate; target >= 70%% of sgemm from 16 rows):\n", o->reps);
    const int Ms[] = {1, 2, 4, 8, 16, 32, 64};
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++) {
        const int M = Ms[i];
        double t = time_linear(gate, M, f, d, o->reps, x, y, scratch, scratch_floats);
        double gb = (double)f * d * esz / 1e9, gf = 2.0 * M * f * d / 1e9;
        double bound = fmax(gb / mc->bandwidth, gf / mc->sgemm_thin);
        printf("    gate_proj M=%-3d %5dx%d %8.2f ms  %6.1f GB/s of weights  %6.1f GFLOP/s (%3.0f%% of sgemm)"
               "  %3.0f%% of bound (%s)\n", M, f, d, 1e3 * t, gb / t, gf / t, 100.0 * gf / t / mc->sgemm_thin,
               100.0 * bound / t, gb / mc->bandwidth > gf / mc->sgemm_thin ? "bandwidth" : "compute");
    }
    double t = time_linear(&m->lm_head, 1, V, d, o->reps, x, y, scratch, scratch_floats);
    double gb = (double)V * d * esz / 1e9;
    printf("    lm_head   M=1   %dx%d %8.2f ms  %6.1f GB/s of weights (%3.0f%% of bandwidth)\n", V, d, 1e3 * t, gb / t,
           100.0 * gb / t / mc->bandwidth);
    double tw = 0;
    if (gate->dtype != UP_DTYPE_F32 && T > UP_LINEAR_TILED_MAX_M) /* else up_linear does not widen */
        tw = time_widen(gate, (size_t)f * d, scratch, o->reps);
    if (T != 64) {
        t = time_linear(gate, T, f, d, o->reps, x, y, scratch, scratch_floats);
        double gf = 2.0 * T * f * d / t / 1e9;
        printf("    gate_proj M=%-3d %5dx%d %8.2f ms  %6.1f GFLOP/s (%3.0f%% of sgemm 64x9216x2304)\n", T, f, d, 1e3 * t,
               gf, 100.0 * gf / mc->sgemm_thin);
    } else {
        t = time_linear(gate, T, f, d, o->reps, x, y, scratch, scratch_floats);
    }
    if (tw > 0)
        printf("      of which widening bf16->f32 %.2f ms (%.0f%%; %.1f GB/s read+written)\n", 1e3 * tw, 100.0 * tw / t,
               (double)f * d * (esz + 4) / tw / 1e9);
    free(scratch), free(x), free(y);
}

/* ---- the engine ------------------------------------------------------------------ */

typedef struct result {
    double prefill_gflops, prefill_tok_s;
    double decode_tok_s, decode_gb_s;
    double batch_tok_s[4], batch_share[4];
} result;

static void random_tokens(int32_t *ids, size_t n, int vocab, uint64_t seed) {
    for (size_t i = 0; i < n; i++) ids[i] = 3 + (int32_t)(rng_next(&seed) % (uint64_t)(vocab - 3));
}

static void check(up_status st, const up_error *err) {
    if (st == UP_OK) return;
    fprintf(stderr, "bench_engine: %s\n", err->msg);
    exit(1);
}

static void run_dtype(up_dtype dtype, const bench_opts *o, const machine *mc, result *res) {
    const up_model_config cfg = gemma2_2b(o->layers);
    int B = 1;
    for (int i = 0; i < o->n_batches; i++) B = o->batches[i] > B ? o->batches[i] : B;
    const int T = o->prompt, S = o->decode, V = cfg.vocab_size;
    up_error err;
    printf("\n== %s storage, %d layers (load average %.2f) ==\n", up_dtype_name(dtype), cfg.n_layers, load_average());

    double t0 = now();
    up_model *m = NULL;
    check(up_model_init_random(&m, &cfg, dtype, 42, &err), &err);
    const double weight_bytes = (double)up_model_weight_bytes(m);
    printf("  model: %.3f B params, %.2f GB of weights, built in %.1f s\n", up_model_param_count(m) / 1e9,
           weight_bytes / 1e9, now() - t0);

    probe_kernels(m, o, mc);

    /* One state serves all three phases: B rows, room for the prompt and the decode steps. */
    up_state *s = NULL;
    check(up_state_init(&s, m, B, T + S, &err), &err);
    int32_t *tokens = xmalloc((size_t)B * T * sizeof(int32_t));
    int32_t *next = xmalloc((size_t)B * sizeof(int32_t));
    float *logits = xmalloc((size_t)B * V * sizeof(float));
    random_tokens(tokens, (size_t)B * T, V, 7);
    const shape_costs k = costs_of(&cfg);
    const double es = (double)up_dtype_size(dtype);
    profiler pr;

    /* Prefill: one row of T tokens, logits of the last position (what generation asks for).
     * FLOPs counted = 2*(layer matmul params)*T + causal attention (QK^T, PV) + 2*V*d for the
     * one unembedded row; norms, RoPE, GELU and softmax are left out (well under 1%). */
    const double pf_attn = attn_core_flops(&cfg, 1, 0, T);
    const double pf_flops = 2.0 * (k.attn_params + k.mlp_params) * T + pf_attn + 2.0 * k.head_params;
    up_state_reset(s);
    profiler_init(&pr);
    timed_forward(s, &pr, tokens, 1, T, logits); /* warm-up: first touch of scratch and cache */
    double best = 1e30;
    profiler_init(&pr);
    for (int r = 0; r < o->reps; r++) {
        up_state_reset(s);
        double dt = timed_forward(s, &pr, tokens, 1, T, logits);
        if (dt < best) best = dt;
    }
    res->prefill_tok_s = T / best;
    res->prefill_gflops = pf_flops / best / 1e9;
    printf("  prefill %d tokens (best of %d): %.3f s  %.1f tok/s  %.1f GFLOP/s = %.0f%% of sgemm 64x9216x2304"
           " (%.0f%% of square)\n",
           T, o->reps, best, res->prefill_tok_s, res->prefill_gflops, 100.0 * res->prefill_gflops / mc->sgemm_thin,
           100.0 * res->prefill_gflops / mc->sgemm_square);
    printf("    counted %.1f GFLOP/pass: layer matmuls %.1f, attention core %.3f, lm_head (1 row) %.2f\n",
           pf_flops / 1e9, 2.0 * (k.attn_params + k.mlp_params) * T / 1e9, pf_attn / 1e9, 2.0 * k.head_params / 1e9);
    printf("    time by segment (mean of %d passes; GFLOP/s of the counted work in it):\n", o->reps);
    double pf_work[SEG_COUNT] = {0};
    pf_work[SEG_ATTN] = 2.0 * k.attn_params * T + pf_attn;
    pf_work[SEG_MLP] = 2.0 * k.mlp_params * T;
    pf_work[SEG_LM_HEAD] = 2.0 * k.head_params;
    print_profile(&pr.prof, o->reps, pf_work, "GFLOP/s");

    /* Batch-1 decode continuing the prefilled row, each step fed its own greedy token. Bytes
     * counted per token = every weight matrix once (the tied embedding once, as the lm_head)
     * + the K and V cache columns attended to; activations are cache-resident and left out.
     * The first step follows the prefill directly, as in generation. */
    up_state_reset(s);
    timed_forward(s, &pr, tokens, 1, T, logits);
    next[0] = (int32_t)up_argmax(logits, V);
    profiler_init(&pr);
    double dec_time = 0, dec_best = 1e30, dec_bytes = 0;
    const double kv_col = 2.0 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * sizeof(float);
    for (int step = 0; step < S; step++) {
        double dt = timed_forward(s, &pr, next, 1, 1, logits);
        next[0] = (int32_t)up_argmax(logits, V);
        dec_time += dt;
        if (dt < dec_best) dec_best = dt;
        dec_bytes += weight_bytes + kv_col * (T + step + 1);
    }
    res->decode_tok_s = S / dec_time;
    res->decode_gb_s = dec_bytes / dec_time / 1e9;
    printf("  decode batch 1, %d steps after the %d-token prompt: %.1f ms/token (best %.1f)  %.2f tok/s\n", S, T,
           1e3 * dec_time / S, 1e3 * dec_best, res->decode_tok_s);
    printf("    %.3f GB read/token -> %.1f GB/s effective = %.0f%% of bandwidth (best step %.0f%%)\n",
           dec_bytes / S / 1e9, res->decode_gb_s, 100.0 * res->decode_gb_s / mc->bandwidth,
           100.0 * dec_bytes / S / dec_best / 1e9 / mc->bandwidth);
    printf("    time by segment (mean per step; GB/s of weights read in it):\n");
    double dec_work[SEG_COUNT] = {0};
    dec_work[SEG_ATTN] = k.attn_params * es;
    dec_work[SEG_MLP] = k.mlp_params * es;
    dec_work[SEG_LM_HEAD] = k.head_params * es;
    print_profile(&pr.prof, S, dec_work, "GB/s");

    /* Batched decode: B rows prefilled with a short prompt (a B x T prefill would cost B times
     * the one above), then S steps of B tokens. Up to UP_LINEAR_FUSED_MAX_M rows up_linear
     * reads each weight once for all rows, up to UP_LINEAR_TILED_MAX_M its tiled kernel runs,
     * above it widens and calls sgemm. A step's bound is the slower of reading every weight
     * once and its matmuls at the sgemm rate. */
    for (int bi = 0; bi < o->n_batches; bi++) {
        const int Bn = o->batches[bi];
        const int Tb = T < 8 ? T : 8;
        up_state_reset(s);
        timed_forward(s, &pr, tokens, Bn, Tb, logits); /* tokens read as (Bn, Tb) */
        for (int b = 0; b < Bn; b++) next[b] = (int32_t)up_argmax(logits + (size_t)b * V, V);
        profiler_init(&pr);
        double bt = 0;
        for (int step = 0; step < S; step++) {
            bt += timed_forward(s, &pr, next, Bn, 1, logits);
            for (int b = 0; b < Bn; b++) next[b] = (int32_t)up_argmax(logits + (size_t)b * V, V);
        }
        const double mm = 2.0 * (k.attn_params + k.mlp_params + k.head_params) * Bn;
        res->batch_tok_s[bi] = (double)Bn * S / bt;
        res->batch_share[bi] = fmax(weight_bytes / 1e9 / mc->bandwidth, mm / 1e9 / mc->sgemm_thin) / (bt / S);
        printf("  decode batch %d, %d steps after %d-token prompts: %.1f ms/step  %.2f tok/s (%.1fx batch 1)"
               "  %.1f GFLOP/s of matmuls  %.0f%% of bound\n",
               Bn, S, Tb, 1e3 * bt / S, res->batch_tok_s[bi], res->batch_tok_s[bi] / res->decode_tok_s,
               mm * S / bt / 1e9, 100.0 * res->batch_share[bi]);
        printf("    time by segment (mean per step; GFLOP/s of the matmuls in it):\n");
        double bw[SEG_COUNT] = {0};
        bw[SEG_ATTN] = 2.0 * k.attn_params * Bn;
        bw[SEG_MLP] = 2.0 * k.mlp_params * Bn;
        bw[SEG_LM_HEAD] = 2.0 * k.head_params * Bn;
        print_profile(&pr.prof, S, bw, "GFLOP/s");
    }

    free(tokens), free(next), free(logits);
    up_state_free(s);
    up_model_free(m);
    printf("  peak RSS so far: %.2f GB\n", peak_rss_gb());
}

/* ---- command line ---------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: bench_engine [--dtype bf16|f32|both] [--threads N] [--layers N] [--prompt T]\n"
            "                    [--decode S] [--batch B,B,...] [--reps R] [--bw-mb MB]\n"
            "defaults: both dtypes, OpenMP's thread count, 26 layers, T=64, S=16, B=8,16,32, R=3, MB=2048\n");
}

static int parse_int(const char *s, int lo, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > 1 << 20) return -1;
    *out = (int)v;
    return 0;
}

/* "8,16,32": up to four row counts, each 2..256. */
static int parse_batches(const char *s, bench_opts *o) {
    char buf[64];
    if (strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    o->n_batches = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int b;
        if (o->n_batches == 4 || parse_int(tok, 2, &b) || b > 256) return -1;
        o->batches[o->n_batches++] = b;
    }
    return o->n_batches > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    bench_opts o = {1, 1, 0, 0, 64, 16, {8, 16, 32}, 3, 3, 2048};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "--dtype")) {
            o.bf16 = !strcmp(v, "bf16") || !strcmp(v, "both");
            o.f32 = !strcmp(v, "f32") || !strcmp(v, "both");
            bad = !o.bf16 && !o.f32;
        } else if (!strcmp(a, "--threads")) bad = parse_int(v, 1, &o.threads);
        else if (!strcmp(a, "--layers")) bad = parse_int(v, 1, &o.layers);
        else if (!strcmp(a, "--prompt")) bad = parse_int(v, 1, &o.prompt);
        else if (!strcmp(a, "--decode")) bad = parse_int(v, 1, &o.decode);
        else if (!strcmp(a, "--batch")) bad = parse_batches(v, &o);
        else if (!strcmp(a, "--reps")) bad = parse_int(v, 1, &o.reps);
        else if (!strcmp(a, "--bw-mb")) bad = parse_int(v, 64, &o.bw_mb);
        else bad = 1;
        if (bad) {
            fprintf(stderr, "bench_engine: bad option %s%s%s\n", a, v ? " " : "", v ? v : "");
            usage();
            return 2;
        }
        i++;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* a run takes minutes: show each figure as it comes */
    if (o.threads > 0) up_blas_set_threads(o.threads);
    const double t_start = now();
    printf("bench_engine: gemma-2-2b shapes, random weights; %d threads; %s (%s)\n", up_blas_threads(),
           openblas_get_config(),
           openblas_get_parallel() == 2 ? "OpenMP" : openblas_get_parallel() == 1 ? "pthreads" : "sequential");

    /* The two thread pools (OpenBLAS's and OpenMP's) wait for work in ways these variables
     * change, and the figures move with them; name any that are set. */
    const char *env_names[] = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS",
                               "OMP_NUM_THREADS", "OMP_PROC_BIND"};
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        if (getenv(env_names[i])) printf("  %s=%s\n", env_names[i], getenv(env_names[i]));
    /* On a shared virtual machine the speed drifts; the ceilings are measured before and after
     * the engine runs, and the summary's ratios use the better of the two (the stricter bar). */
    machine mc;
    measure_machine(&mc, &o);
    print_machine(&mc, &o, "at the start");

    result res[2] = {{0}};
    if (o.bf16) run_dtype(UP_DTYPE_BF16, &o, &mc, &res[0]);
    if (o.f32) run_dtype(UP_DTYPE_F32, &o, &mc, &res[1]);

    machine end;
    measure_machine(&end, &o);
    printf("\n");
    print_machine(&end, &o, "at the end");
    const double bw = fmax(mc.bandwidth, end.bandwidth), peak = fmax(mc.sgemm_thin, end.sgemm_thin);
    printf("\nsummary, against the better of start and end (%.1f GB/s, sgemm 64x9216x2304 %.1f GFLOP/s):\n", bw, peak);
    printf("  storage  prefill tok/s  GFLOP/s  %%sgemm [target>=75]  decode tok/s  GB/s  %%bw [target>=70]");
    for (int b = 0; b < o.n_batches; b++) printf("  batch-%d tok/s (%% of bound)", o.batches[b]);
    printf("\n");
    for (int i = 0; i < 2; i++) {
        if (!(i == 0 ? o.bf16 : o.f32)) continue;
        const result *r = &res[i];
        printf("  %-7s  %13.1f  %7.1f  %19.0f%%  %12.2f  %4.1f  %15.0f%%", i == 0 ? "bf16" : "f32", r->prefill_tok_s,
               r->prefill_gflops, 100.0 * r->prefill_gflops / peak, r->decode_tok_s, r->decode_gb_s,
               100.0 * r->decode_gb_s / bw);
        for (int b = 0; b < o.n_batches; b++)
            printf("  %*.2f (%3.0f%%)", (int)strlen("batch-NN tok/s") - 3, r->batch_tok_s[b], 100.0 * r->batch_share[b]);
        printf("\n");
    }
    printf("  (batch shares are against the machine measured at the start; batch-16 target >= 70%% of bound)\n");
    printf("\npeak RSS %.2f GB; wall time %.1f s\n", peak_rss_gb(), now() - t_start);
    return 0;
}
