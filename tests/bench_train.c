/* bench_train — seconds per training step of a model the size of the organism's.
 *
 * Builds a random fp32 Gemma-2 model with the organism recipe's default shape (d_model 96,
 * d_mlp 384, 6 layers, 4/2 heads of 24, vocab 1024; lua/upstream/organism_build.lua) and
 * trains it with up_train on random sequences (prompt then response, 48 tokens, loss on the
 * response) for --steps steps of --batch sequences. Such small products are where two thread
 * pools fighting for the cores show most, so this is the figure to watch for that.
 *
 * Prints the mean and best seconds per step (after one warm-up step) and never fails on time:
 * the exit status is non-zero only when something errors.
 *
 *   bench_train [--steps 20] [--batch 32] [--len 48] [--threads N]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/blas.h"
#include "engine/model.h"
#include "train/train.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct timing {
    double last, best, total;
    int counted;
} timing;

/* Step 1 pays for first touches and thread start-up: it is left out. */
static int on_step(const up_train_progress *p, void *user) {
    timing *t = user;
    const double dt = p->seconds - t->last;
    t->last = p->seconds;
    if (p->step > 1) {
        t->total += dt, t->counted++;
        if (dt < t->best) t->best = dt;
    }
    return 0;
}

static int parse_int(const char *v, int *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < 1 || x > 1 << 20) return 1;
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    int steps = 20, batch = 32, len = 48, threads = 0, bad = 0;
    for (int i = 1; i < argc && !bad; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--steps")) bad = parse_int(v, &steps);
        else if (!strcmp(a, "--batch")) bad = parse_int(v, &batch);
        else if (!strcmp(a, "--len")) bad = parse_int(v, &len) || len < 4;
        else if (!strcmp(a, "--threads")) bad = parse_int(v, &threads);
        else bad = 1;
    }
    if (bad || steps < 2) {
        fprintf(stderr, "usage: bench_train [--steps 20 (>= 2)] [--batch 32] [--len 48 (>= 4)] [--threads N]\n");
        return 2;
    }
    if (threads) up_blas_set_threads(threads);
    up_model_config c = {0};
    c.family = UP_FAMILY_GEMMA2;
    c.d_model = 96, c.d_mlp = 384, c.n_layers = 6, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 24;
    c.vocab_size = 1024, c.sliding_window = 16, c.rms_norm_eps = 1e-6f, c.rope_theta = 10000.0f;
    c.query_pre_attn_scalar = 24.0f, c.attn_softcap = 50.0f, c.final_softcap = 30.0f;
    c.activation = UP_ACT_GELU_TANH, c.tie_word_embeddings = 1, c.bos_id = 2, c.eos_id = 1, c.pad_id = 0;
    c.max_position_embeddings = 256;
    up_model *m = NULL;
    up_error e = {0};
    if (up_model_init_random(&m, &c, UP_DTYPE_F32, 7, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 1;
    }
    enum { N_SEQ = 256 };
    int32_t *store = malloc((size_t)N_SEQ * len * sizeof *store);
    const int32_t **ids = malloc(N_SEQ * sizeof *ids);
    int *lens = malloc(N_SEQ * sizeof *lens), *from = malloc(N_SEQ * sizeof *from);
    uint64_t seed = 11;
    for (int i = 0; i < N_SEQ; i++) {
        int32_t *s = store + (size_t)i * len;
        s[0] = c.bos_id;
        for (int t = 1; t < len; t++) s[t] = 3 + (int32_t)((seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33) % (c.vocab_size - 3);
        ids[i] = s, lens[i] = len, from[i] = len / 2;
    }
    up_train_data data = {ids, lens, from, N_SEQ};
    up_train_opts o = up_train_opts_default();
    o.steps = steps, o.batch = batch, o.eval_every = 0, o.checkpoint = NULL;
    timing t = {0, 1e30, 0, 0};
    o.progress = on_step, o.user = &t;
    up_train_report rep;
    const double t0 = now();
    if (up_train(m, &data, &o, &rep, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 1;
    }
    printf("organism-shaped model (d_model %d, d_mlp %d, %d layers, vocab %d), %d threads\n", c.d_model, c.d_mlp,
           c.n_layers, c.vocab_size, up_blas_threads());
    printf("train: batch %d x %d tokens, %d steps in %.2f s: %.3f s/step mean, %.3f best (step 1 excluded); loss %.3f -> %.3f\n",
           batch, len, steps, now() - t0, t.total / t.counted, t.best, rep.first_loss, rep.last_loss);
    up_model_free(m);
    free(store), free(ids), free(lens), free(from);
    return 0;
}
