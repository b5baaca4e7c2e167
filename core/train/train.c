#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backward.h"
#include "engine/batch.h"
#include "engine/forward.h"
#include "base/clock.h"
#include "base/rng.h"
#include "formats/safetensors.h"

up_train_opts up_train_opts_default(void) {
    return (up_train_opts){.steps = 1000, .batch = 16, .seed = 1, .lr = 3e-3f, .min_lr_frac = 0.1f,
                           .weight_decay = 0.05f, .beta1 = 0.9f, .beta2 = 0.98f, .eps = 1e-8f, .clip = 1.0f,
                           .warmup_steps = 50, .eval_every = 100, .checkpoint_every = 100};
}

/* Epoch e's order: a Fisher-Yates shuffle seeded by (seed, e), so resuming needs only the step. */
static void epoch_order(int *order, int n, uint64_t seed, int epoch) {
    uint64_t s = seed * 0x100000001b3ull + (uint64_t)epoch;
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(up_splitmix64(&s) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j], order[j] = t;
    }
}

/* Examples idx[0..B) as one left-padded batch (engine/batch.h) and their targets (B, T): the
 * next token at each slot from loss_from on, -1 elsewhere. Returns T. */
static int make_batch(const up_train_data *d, const int *idx, int B, int pad_id, int32_t *tokens, int32_t *targets,
                      int *n_pad) {
    const int T = up_batch_left_pad(d->ids, d->lens, idx, B, pad_id, tokens, n_pad);
    for (int b = 0; b < B; b++) {
        const int e = idx[b], len = d->lens[e];
        for (int t = 0; t < T; t++) {
            const int k = t - n_pad[b]; /* index into the example */
            targets[(size_t)b * T + t] = (k >= 0 && k + 1 < len && k + 1 >= d->loss_from[e]) ? d->ids[e][k + 1] : -1;
        }
    }
    return T;
}

static int max_len(const up_train_data *d) {
    int T = 0;
    for (int i = 0; i < d->n; i++) T = d->lens[i] > T ? d->lens[i] : T;
    return T;
}

static up_status check_data(const up_train_data *d, const up_model_config *c, const char *what, up_error *err) {
    if (!d || d->n <= 0) return up_error_set(err, UP_ERR_INVALID, "%s set is empty", what);
    for (int i = 0; i < d->n; i++) {
        if (d->lens[i] < 2 || d->loss_from[i] < 1 || d->loss_from[i] >= d->lens[i])
            return up_error_set(err, UP_ERR_INVALID, "%s example %d: length %d, loss from %d (need 1 <= from < length)",
                                what, i, d->lens[i], d->loss_from[i]);
        for (int t = 0; t < d->lens[i]; t++)
            if (d->ids[i][t] < 0 || d->ids[i][t] >= c->vocab_size)
                return up_error_set(err, UP_ERR_INVALID, "%s example %d: token %d outside the vocabulary", what, i,
                                    d->ids[i][t]);
    }
    return UP_OK;
}

up_status up_train_eval(const up_model *m, const up_train_data *d, int batch, double *loss_out, up_error *err) {
    const up_model_config *c = &m->cfg;
    up_status st = check_data(d, c, "evaluation", err);
    if (st) return st;
    if (batch <= 0) batch = 16;
    const int Tm = max_len(d), V = c->vocab_size;
    int32_t *tokens = malloc((size_t)batch * Tm * sizeof *tokens), *targets = malloc((size_t)batch * Tm * sizeof *targets);
    int *n_pad = malloc((size_t)batch * sizeof *n_pad), *idx = malloc((size_t)batch * sizeof *idx);
    float *logits = malloc((size_t)batch * Tm * V * sizeof *logits);
    up_state *s = NULL;
    double total = 0;
    long count = 0;
    if (!tokens || !targets || !n_pad || !idx || !logits) st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
    if (!st) st = up_state_init(&s, m, batch, Tm, err);
    for (int start = 0; !st && start < d->n; start += batch) {
        int B = d->n - start < batch ? d->n - start : batch;
        for (int b = 0; b < B; b++) idx[b] = start + b;
        int T = make_batch(d, idx, B, c->pad_id, tokens, targets, n_pad);
        up_state_reset(s);
        if ((st = up_forward(s, tokens, n_pad, NULL, B, T, NULL, logits, UP_LOGITS_ALL, err))) break;
        for (int i = 0; i < B * T; i++) {
            if (targets[i] < 0) continue;
            const float *z = logits + (size_t)i * V;
            double mx = z[0], sum = 0;
            for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
            total += -(z[targets[i]] - mx - log(sum));
            count++;
        }
    }
    if (!st) *loss_out = count ? total / count : NAN;
    up_state_free(s);
    free(tokens), free(targets), free(n_pad), free(idx), free(logits);
    return st;
}

/* ---- training state on disk ------------------------------------------------------------- */

static up_status save_state(const char *path, int step, const float *mats, const float *mmom, const float *vmom,
                            size_t n_mats, const float *norms, const float *mnorm, const float *vnorm, size_t n_norms,
                            up_error *err) {
    up_safetensors_writer *w = NULL;
    up_status st = up_safetensors_writer_open(&w, path, err);
    if (st) return st;
    int64_t nm = (int64_t)n_mats, nn = (int64_t)n_norms, one = 1;
    int32_t step32 = step;
    if ((st = up_safetensors_writer_add(w, "step", UP_DTYPE_I32, 1, &one, &step32, err)) ||
        (st = up_safetensors_writer_add(w, "mats", UP_DTYPE_F32, 1, &nm, mats, err)) ||
        (st = up_safetensors_writer_add(w, "mats.m", UP_DTYPE_F32, 1, &nm, mmom, err)) ||
        (st = up_safetensors_writer_add(w, "mats.v", UP_DTYPE_F32, 1, &nm, vmom, err)) ||
        (st = up_safetensors_writer_add(w, "norms", UP_DTYPE_F32, 1, &nn, norms, err)) ||
        (st = up_safetensors_writer_add(w, "norms.m", UP_DTYPE_F32, 1, &nn, mnorm, err)) ||
        (st = up_safetensors_writer_add(w, "norms.v", UP_DTYPE_F32, 1, &nn, vnorm, err))) {
        up_safetensors_writer_abort(w);
        return st;
    }
    return up_safetensors_writer_close(w, err);
}

static up_status load_vec(up_safetensors *st, const char *path, const char *name, float *dst, size_t n, up_error *err) {
    up_tensor t;
    up_status s = up_safetensors_find(st, name, &t, err);
    if (s) return s;
    if (t.dtype != UP_DTYPE_F32 || t.ndim != 1 || (size_t)t.shape[0] != n)
        return up_error_set(err, UP_ERR_FORMAT, "%s: %s does not match this model (%zu floats expected)", path, name, n);
    memcpy(dst, t.data, n * sizeof(float));
    return UP_OK;
}

/* Returns the step to resume from (0 when there is no state file). */
static up_status load_state(const char *path, int *step, float *mats, float *mmom, float *vmom, size_t n_mats,
                            float *norms, float *mnorm, float *vnorm, size_t n_norms, up_error *err) {
    *step = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return UP_OK;
    fclose(f);
    up_safetensors *st = NULL;
    up_status s = up_safetensors_open_file(&st, path, err);
    if (s) return s;
    up_tensor t;
    if (!(s = up_safetensors_find(st, "step", &t, err)) && (t.dtype != UP_DTYPE_I32 || t.shape[0] != 1))
        s = up_error_set(err, UP_ERR_FORMAT, "%s: bad step", path);
    if (!s) *step = ((const int32_t *)t.data)[0];
    if (!s) s = load_vec(st, path, "mats", mats, n_mats, err);
    if (!s) s = load_vec(st, path, "mats.m", mmom, n_mats, err);
    if (!s) s = load_vec(st, path, "mats.v", vmom, n_mats, err);
    if (!s) s = load_vec(st, path, "norms", norms, n_norms, err);
    if (!s) s = load_vec(st, path, "norms.m", mnorm, n_norms, err);
    if (!s) s = load_vec(st, path, "norms.v", vnorm, n_norms, err);
    up_safetensors_close(st);
    return s;
}

static double lr_at(const up_train_opts *o, int step) {
    if (step < o->warmup_steps) return o->lr * (step + 1) / (double)o->warmup_steps;
    double span = o->steps - o->warmup_steps;
    double frac = span > 0 ? (step - o->warmup_steps) / span : 1.0;
    double cosine = 0.5 * (1 + cos(M_PI * (frac > 1 ? 1 : frac)));
    return o->lr * (o->min_lr_frac + (1 - o->min_lr_frac) * cosine);
}

static void adamw(float *p, const float *g, float *mo, float *vo, size_t n, double lr, const up_train_opts *o,
                  double scale, int t, float decay) {
    const double bc1 = 1 - pow(o->beta1, t), bc2 = 1 - pow(o->beta2, t);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = (float)(g[i] * scale);
        mo[i] = o->beta1 * mo[i] + (1 - o->beta1) * gi;
        vo[i] = o->beta2 * vo[i] + (1 - o->beta2) * gi * gi;
        double update = (mo[i] / bc1) / (sqrt(vo[i] / bc2) + o->eps);
        p[i] -= (float)(lr * (update + decay * p[i]));
    }
}

up_status up_train(up_model *m, const up_train_data *d, const up_train_opts *o, up_train_report *rep, up_error *err) {
    const up_model_config *c = &m->cfg;
    float *mats, *norms;
    size_t n_mats, n_norms;
    up_status st = up_model_param_blocks(m, &mats, &n_mats, &norms, &n_norms, err);
    if (st) return st;
    if ((st = check_data(d, c, "training", err))) return st;
    if (o->heldout && (st = check_data(o->heldout, c, "held-out", err))) return st;
    if (o->steps <= 0 || o->batch <= 0 || o->lr <= 0)
        return up_error_set(err, UP_ERR_INVALID, "steps, batch and lr must be positive");
    memset(rep, 0, sizeof *rep);
    rep->heldout_loss = NAN;
    const int B = o->batch < d->n ? o->batch : d->n, Tm = max_len(d);
    float *block = calloc(5 * n_mats + 5 * n_norms, sizeof(float));
    int32_t *tokens = malloc((size_t)B * Tm * sizeof *tokens), *targets = malloc((size_t)B * Tm * sizeof *targets);
    int *n_pad = malloc((size_t)B * sizeof *n_pad), *order = malloc((size_t)d->n * sizeof *order);
    int *idx = malloc((size_t)B * sizeof *idx);
    if (!block || !tokens || !targets || !n_pad || !order || !idx) {
        st = up_error_set(err, UP_ERR_NOMEM, "out of memory for training");
        goto done;
    }
    float *gm = block, *mm = gm + n_mats, *vm = mm + n_mats, *gn = vm + n_mats, *mn = gn + n_norms, *vn = mn + n_norms;
    int step = 0;
    if (o->checkpoint && (st = load_state(o->checkpoint, &step, mats, mm, vm, n_mats, norms, mn, vn, n_norms, err)))
        goto done;
    rep->resumed_from = step;
    rep->steps_done = step;
    const double t0 = up_clock_seconds();
    int epoch = -1, stop = 0;
    for (; step < o->steps && !stop; step++) {
        /* Example k of the whole run is order_{k / n}[k % n]: resuming replays no example. */
        for (int b = 0; b < B; b++) {
            long k = (long)step * B + b;
            int e = (int)(k / d->n);
            if (e != epoch) epoch_order(order, d->n, o->seed, epoch = e);
            idx[b] = order[k % d->n];
        }
        int T = make_batch(d, idx, B, c->pad_id, tokens, targets, n_pad);
        memset(gm, 0, n_mats * sizeof(float));
        memset(gn, 0, n_norms * sizeof(float));
        up_param_grads g = {mats, gm, n_mats, norms, gn, n_norms};
        double loss;
        if ((st = up_loss_gradients(m, tokens, targets, n_pad, B, T, &g, &loss, NULL, err))) goto done;
        double norm2 = 0;
        for (size_t i = 0; i < n_mats; i++) norm2 += (double)gm[i] * gm[i];
        for (size_t i = 0; i < n_norms; i++) norm2 += (double)gn[i] * gn[i];
        double gnorm = sqrt(norm2), scale = o->clip > 0 && gnorm > o->clip ? o->clip / gnorm : 1.0;
        double lr = lr_at(o, step);
        adamw(mats, gm, mm, vm, n_mats, lr, o, scale, step + 1, o->weight_decay);
        adamw(norms, gn, mn, vn, n_norms, lr, o, scale, step + 1, 0.0f);
        if (step == rep->resumed_from) rep->first_loss = loss;
        rep->last_loss = loss;
        rep->steps_done = step + 1;
        up_train_progress p = {step + 1, o->steps, loss, NAN, lr, gnorm, 0, rep->resumed_from};
        int last = step + 1 == o->steps;
        if (o->heldout && ((o->eval_every > 0 && (step + 1) % o->eval_every == 0) || last)) {
            if ((st = up_train_eval(m, o->heldout, o->batch, &p.heldout_loss, err))) goto done;
            rep->heldout_loss = p.heldout_loss;
        }
        p.seconds = up_clock_seconds() - t0;
        if (o->progress && o->progress(&p, o->user)) stop = 1;
        if (o->checkpoint && (stop || last || (o->checkpoint_every > 0 && (step + 1) % o->checkpoint_every == 0)) &&
            (st = save_state(o->checkpoint, step + 1, mats, mm, vm, n_mats, norms, mn, vn, n_norms, err)))
            goto done;
    }
done:
    free(block), free(tokens), free(targets), free(n_pad), free(order), free(idx);
    return st;
}
