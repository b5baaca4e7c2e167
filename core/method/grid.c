/* grid — the steering grid's axes and its runs; the contract is in grid.h. Keys and cache files
 * are grid_cache.c's, the predicted_dR column grid_predict.c's; the state they share is in
 * grid_impl.h. */
#include "method/grid.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "method/direction.h"
#include "dist/dist.h"
#include "method/grid_cache.h"
#include "method/grid_impl.h"
#include "method/grid_predict.h"
#include "method/metrics.h"

/* ---- a growing string, for canonical specs ------------------------------------------------ */

void grid_sb_printf(grid_strbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->failed = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *grown = realloc(b->s, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->s = grown, b->cap = cap;
    }
}

char *grid_sb_take(grid_strbuf *b) {
    if (b->failed) {
        free(b->s);
        return NULL;
    }
    if (!b->s) return calloc(1, 1);
    return b->s;
}

/* ---- the grid ------------------------------------------------------------------------------ */

static void free_cells(up_grid *g) {
    for (int i = 0; i < g->n_cells; i++) free(g->cells[i].tokens), free(g->cells[i].text);
    free(g->cells);
    g->cells = NULL;
    g->n_cells = 0;
    for (int i = 0; i < g->n_substrings; i++) free(g->substrings[i]);
    free(g->substrings);
    g->substrings = NULL;
    g->n_substrings = 0;
}

static void free_iv(grid_interv *iv) {
    free(iv->label), free(iv->items), free(iv->spec);
    for (int j = 0; j < iv->n_owned; j++) free(iv->owned[j]);
    free(iv->owned);
}

void up_grid_free(up_grid *g) {
    if (!g) return;
    free_cells(g);
    grid_drop_gradients(g);
    for (int i = 0; i < g->n_prompts; i++) free(g->prompts[i].label), free(g->prompts[i].ids), free(g->prompts[i].spec);
    for (int i = 0; i < g->n_ivs; i++) free_iv(&g->ivs[i]);
    for (int i = 0; i < g->n_idents; i++) free(g->idents[i].name), free(g->idents[i].value);
    free(g->prompts), free(g->ivs), free(g->decodings), free(g->idents);
    free(g->obj_dir), free(g->obj_positions);
    free(g);
}

/* Grows *arr (elements of size sz) to hold n + 1. */
static int grow(void **arr, int *cap, int n, size_t sz) {
    if (n < *cap) return 0;
    int c = *cap ? 2 * *cap : 8;
    void *p = realloc(*arr, (size_t)c * sz);
    if (!p) return -1;
    *arr = p, *cap = c;
    return 0;
}

up_status up_grid_init(up_grid **out, const up_model *m, up_error *err) {
    *out = NULL;
    up_grid *g = calloc(1, sizeof *g);
    if (!g) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    g->m = m;
    up_grid_intervention none = {"none", NULL, 0, -1, NAN};
    if (up_grid_add_intervention(g, &none, err) != 0) {
        up_grid_free(g);
        return err ? err->status : UP_ERR_NOMEM;
    }
    *out = g;
    return UP_OK;
}

up_status up_grid_identity(up_grid *g, const char *name, const char *value, up_error *err) {
    if (!name || !*name || !value) return up_error_set(err, UP_ERR_INVALID, "grid identity: empty name or value");
    if (strchr(name, '\n') || strchr(value, '\n'))
        return up_error_set(err, UP_ERR_INVALID, "grid identity %s: no newlines allowed", name);
    for (int i = 0; i < g->n_idents; i++) {
        if (strcmp(g->idents[i].name, name)) continue;
        char *v = strdup(value);
        if (!v) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
        free(g->idents[i].value);
        g->idents[i].value = v;
        return UP_OK;
    }
    grid_ident *p = realloc(g->idents, (size_t)(g->n_idents + 1) * sizeof *p);
    if (!p) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    g->idents = p;
    p[g->n_idents].name = strdup(name);
    p[g->n_idents].value = strdup(value);
    if (!p[g->n_idents].name || !p[g->n_idents].value) {
        free(p[g->n_idents].name), free(p[g->n_idents].value);
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    }
    g->n_idents++;
    return UP_OK;
}

int up_grid_add_prompt(up_grid *g, const char *label, const int32_t *ids, int n_ids, up_error *err) {
    const int V = g->m->cfg.vocab_size, i = g->n_prompts;
    if (n_ids <= 0) return up_error_set(err, UP_ERR_INVALID, "grid prompt %d: no tokens", i), -1;
    for (int t = 0; t < n_ids; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return up_error_set(err, UP_ERR_INVALID, "grid prompt %d: token %d is id %d, outside [0, %d)", i, t, ids[t], V),
                   -1;
    if (grow((void **)&g->prompts, &g->cap_prompts, i, sizeof *g->prompts))
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory"), -1;
    grid_prompt *p = &g->prompts[i];
    memset(p, 0, sizeof *p);
    char def[32];
    snprintf(def, sizeof def, "prompt %d", i);
    p->label = strdup(label ? label : def);
    p->ids = malloc((size_t)n_ids * sizeof *p->ids);
    p->spec = grid_prompt_spec(ids, n_ids);
    if (!p->label || !p->ids || !p->spec) {
        free(p->label), free(p->ids), free(p->spec);
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory"), -1;
    }
    memcpy(p->ids, ids, (size_t)n_ids * sizeof *ids);
    p->n = n_ids;
    g->n_prompts++;
    return i;
}

static void *own_copy(grid_interv *iv, const void *src, size_t bytes) {
    void **o = realloc(iv->owned, (size_t)(iv->n_owned + 1) * sizeof *o);
    if (!o) return NULL;
    iv->owned = o;
    void *p = malloc(bytes ? bytes : 1);
    if (!p) return NULL;
    memcpy(p, src, bytes);
    return iv->owned[iv->n_owned++] = p;
}


static char *default_label(const up_model *m, const up_steer *items, int n) {
    if (n == 0) return strdup("none");
    grid_strbuf b = {0};
    for (int j = 0; j < n; j++) {
        const up_steer *s = &items[j];
        if (j) grid_sb_printf(&b, " + ");
        switch (s->kind) {
        case UP_STEER_ADD: grid_sb_printf(&b, "add %g", (double)s->alpha); break;
        case UP_STEER_ABLATE: grid_sb_printf(&b, "ablate"); break;
        case UP_STEER_CLAMP: grid_sb_printf(&b, "clamp %d=%g", s->latent, (double)s->value); break;
        }
    }
    return grid_sb_take(&b);
}

int up_grid_add_intervention(up_grid *g, const up_grid_intervention *in, up_error *err) {
    const int i = g->n_ivs, d = g->m->cfg.d_model;
    if (in->n_items < 0 || (in->n_items > 0 && !in->items))
        return up_error_set(err, UP_ERR_INVALID, "grid intervention %d: bad item list", i), -1;
    /* Validate through the steering module itself, so the grid accepts exactly what runs. */
    if (in->n_items > 0) {
        up_steer_row row = {in->items, in->n_items};
        up_steer_plan plan = {&row, 1};
        up_steer_set *set = NULL;
        if (up_steer_hooks(&set, g->m, &plan, NULL, err)) {
            up_error_prefix(err, "grid intervention %d (%s)", i, in->label ? in->label : "unlabelled");
            return -1;
        }
        up_steer_set_free(set);
    }
    if (grow((void **)&g->ivs, &g->cap_ivs, i, sizeof *g->ivs))
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory"), -1;
    grid_interv *iv = &g->ivs[i];
    memset(iv, 0, sizeof *iv);
    iv->latent = in->latent;
    iv->alpha = in->alpha;
    iv->n_items = in->n_items;
    int ok = (iv->items = malloc((size_t)(in->n_items ? in->n_items : 1) * sizeof *iv->items)) != NULL;
    for (int j = 0; ok && j < in->n_items; j++) {
        up_steer s = in->items[j];
        if (s.vec) ok = (s.vec = own_copy(iv, s.vec, (size_t)d * sizeof(float))) != NULL;
        if (ok && s.where == UP_STEER_POS_LIST && s.n_positions > 0)
            ok = (s.positions = own_copy(iv, s.positions, (size_t)s.n_positions * sizeof(int))) != NULL;
        iv->items[j] = s;
    }
    if (ok) ok = (iv->label = in->label ? strdup(in->label) : default_label(g->m, iv->items, iv->n_items)) != NULL;
    if (ok) ok = (iv->spec = grid_items_spec(g->m, iv->items, iv->n_items)) != NULL;
    if (!ok) {
        free_iv(iv);
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory"), -1;
    }
    g->n_ivs++;
    return i;
}

up_status up_grid_add_sweep(up_grid *g, up_hook_point point, up_steer_where where, const float *vectors,
                            const char *const *names, const int *latents, int n_vectors, const float *alphas,
                            int n_alphas, up_error *err) {
    if (where == UP_STEER_POS_LIST)
        return up_error_set(err, UP_ERR_INVALID, "grid sweep: position lists need up_grid_add_intervention");
    if (n_vectors <= 0 || n_alphas <= 0 || !vectors || !alphas)
        return up_error_set(err, UP_ERR_INVALID, "grid sweep: no vectors or no alphas");
    const int d = g->m->cfg.d_model;
    for (int v = 0; v < n_vectors; v++) {
        for (int a = 0; a < n_alphas; a++) {
            up_steer item = up_steer_add(point, vectors + (size_t)v * d, alphas[a]);
            item.where = where;
            char label[256], vname[160];
            if (names && names[v]) snprintf(vname, sizeof vname, "%s", names[v]);
            else if (latents) snprintf(vname, sizeof vname, "latent %d", latents[v]);
            else snprintf(vname, sizeof vname, "vector %d", v);
            snprintf(label, sizeof label, "%s x %g", vname, (double)alphas[a]);
            up_grid_intervention iv = {label, &item, 1, latents ? latents[v] : -1, alphas[a]};
            if (up_grid_add_intervention(g, &iv, err) < 0) return err ? err->status : UP_ERR_INVALID;
        }
    }
    return UP_OK;
}

up_status up_grid_add_latent_sweep(up_grid *g, const up_sae *sae, const int *latents, int n_latents,
                                   const float *alphas, int n_alphas, up_steer_where where, up_error *err) {
    if (!sae || !sae->W_dec) return up_error_set(err, UP_ERR_INVALID, "grid latent sweep: the SAE's decoder is not loaded");
    up_hook_point point;
    if (up_hook_point_parse(sae->hook, g->m->cfg.n_layers, &point))
        return up_error_set(err, UP_ERR_INVALID, "grid latent sweep: %s: hook '%s' is not a hook point of this model",
                            sae->path ? sae->path : "SAE", sae->hook);
    if (sae->d_in != g->m->cfg.d_model)
        return up_error_set(err, UP_ERR_INVALID, "grid latent sweep: the SAE's d_in %d differs from d_model %d",
                            sae->d_in, g->m->cfg.d_model);
    const int d = sae->d_in;
    float *rows = malloc((size_t)(n_latents > 0 ? n_latents : 1) * d * sizeof *rows);
    if (!rows) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    for (int i = 0; i < n_latents; i++) {
        if (latents[i] < 0 || latents[i] >= sae->d_sae) {
            free(rows);
            return up_error_set(err, UP_ERR_INVALID, "grid latent sweep: latent %d outside [0, %d)", latents[i],
                                sae->d_sae);
        }
        memcpy(rows + (size_t)i * d, sae->W_dec + (size_t)latents[i] * d, (size_t)d * sizeof *rows);
    }
    up_status st = up_grid_add_sweep(g, point, where, rows, NULL, latents, n_latents, alphas, n_alphas, err);
    free(rows);
    return st;
}

int up_grid_add_decoding(up_grid *g, int max_new_tokens, up_error *err) {
    if (max_new_tokens < 0) return up_error_set(err, UP_ERR_INVALID, "grid decoding: max_new_tokens %d < 0", max_new_tokens), -1;
    if (grow((void **)&g->decodings, &g->cap_decodings, g->n_decodings, sizeof *g->decodings))
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory"), -1;
    g->decodings[g->n_decodings] = max_new_tokens;
    return g->n_decodings++;
}

up_status up_grid_set_objective(up_grid *g, int layer, const float *direction, const int *positions,
                                int n_positions, up_error *err) {
    const int d = g->m->cfg.d_model;
    if (layer < 0 || layer >= g->m->cfg.n_layers)
        return up_error_set(err, UP_ERR_INVALID, "grid objective: layer %d outside [0, %d)", layer, g->m->cfg.n_layers);
    if (positions && n_positions <= 0) return up_error_set(err, UP_ERR_INVALID, "grid objective: empty position list");
    float *dir = malloc((size_t)d * sizeof *dir);
    int *pos = positions ? malloc((size_t)n_positions * sizeof *pos) : NULL;
    if (!dir || (positions && !pos)) {
        free(dir), free(pos);
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    }
    memcpy(dir, direction, (size_t)d * sizeof *dir);
    const double norm = up_direction_normalize(dir, d);
    if (!(norm > 0) || !isfinite(norm)) {
        free(dir), free(pos);
        return up_error_set(err, UP_ERR_INVALID, "grid objective: the direction has norm %g", norm);
    }
    if (pos) memcpy(pos, positions, (size_t)n_positions * sizeof *pos);
    free(g->obj_dir), free(g->obj_positions);
    grid_drop_gradients(g); /* they are of the objective being replaced */
    g->obj_dir = dir, g->obj_positions = pos;
    g->n_obj_positions = positions ? n_positions : 0;
    g->obj_layer = layer;
    g->has_objective = 1;
    return UP_OK;
}

/* ---- accessors ------------------------------------------------------------------------------ */

up_grid_opts up_grid_opts_default(void) {
    up_grid_opts o;
    memset(&o, 0, sizeof o);
    o.batch = 16;
    o.coherence = 1;
    o.rep_n = 3;
    o.predict = 1;
    o.share_prompts = 1;
    return o;
}

int up_grid_n_prompts(const up_grid *g) { return g->n_prompts; }
int up_grid_n_interventions(const up_grid *g) { return g->n_ivs; }
int up_grid_n_decodings(const up_grid *g) { return g->n_decodings ? g->n_decodings : 1; }
int up_grid_n_cells(const up_grid *g) { return g->n_prompts * g->n_ivs * up_grid_n_decodings(g); }

const up_grid_cell *up_grid_cell_at(const up_grid *g, int i) {
    return i >= 0 && i < g->n_cells ? &g->cells[i] : NULL;
}

int up_grid_index(const up_grid *g, int prompt, int intervention, int decoding) {
    return (prompt * g->n_ivs + intervention) * up_grid_n_decodings(g) + decoding;
}

const char *up_grid_match_text(const up_grid *g, const up_grid_cell *c) {
    if (!c || c->refusal_match < 0) return NULL;
    if (g->substrings) return c->refusal_match < g->n_substrings ? g->substrings[c->refusal_match] : NULL;
    return c->refusal_match < UP_METRICS_N_REFUSAL_SUBSTRINGS ? up_metrics_refusal_substrings[c->refusal_match] : NULL;
}


up_grid_totals up_grid_get_totals(const up_grid *g) { return g->totals; }

const char *up_grid_progress_format(const up_grid_progress *p, int width, char *buf, size_t size) {
    size_t n = 0;
    int k;
#define PUT(...) (k = snprintf(buf + n, n < size ? size - n : 0, __VA_ARGS__), n += k > 0 ? (size_t)k : 0)
    if (size) buf[0] = '\0';
    if (width > 0) {
        /* Finished cells, plus the running batch's share, so long generations still move the bar. */
        double frac = p->total ? (double)p->done / p->total : 1;
        int filled = (int)(frac * width + 0.5);
        PUT("[");
        for (int i = 0; i < width; i++) PUT("%c", i < filled ? '#' : '.');
        PUT("] ");
    }
    PUT("%d/%d cells", p->done, p->total);
    if (p->cached) PUT("  %d cached", p->cached);
    if (p->batch > 0 && p->steps > 0) PUT("  batch %d/%d step %d/%d", p->batch, p->n_batches, p->step, p->steps);
    if (isfinite(p->rate)) PUT("  %.3g cells/s", p->rate);
    if (isfinite(p->eta)) {
        long s = (long)(p->eta + 0.5);
        if (s >= 3600) PUT("  ETA %ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else PUT("  ETA %ld:%02ld", s / 60, s % 60);
    }
#undef PUT
    if (size && n >= size) buf[size - 1] = '\0';
    return buf;
}

/* ---- running ------------------------------------------------------------------------------- */


typedef struct run_ctx {
    up_grid *g;
    const up_grid_opts *o;
    up_grid_progress p;
    double t0, batch_t0;
    double compute_s;   /* time spent in finished batches */
    int batch_rows;     /* cells (with duplicates) the running batch will finish */
    int stopped;
} run_ctx;

static int report(run_ctx *c) {
    const double t = up_clock_seconds();
    up_grid_progress *p = &c->p;
    p->elapsed = t - c->t0;
    p->rate = c->compute_s > 0 && p->computed > 0 ? p->computed / c->compute_s : NAN;
    const double in_batch = p->batch > 0 ? t - c->batch_t0 : 0;
    double rate = p->rate;
    /* Before the first batch ends, judge the pace by the running batch's steps. */
    if (!isfinite(rate) && p->batch > 0 && p->step > 0 && in_batch > 0)
        rate = c->batch_rows * ((double)p->step / p->steps) / in_batch;
    p->eta = isfinite(rate) && rate > 0 ? fmax(0, (p->total - p->done) / rate - in_batch) : NAN;
    if (p->done == p->total) p->eta = 0;
    return c->o->progress ? c->o->progress(p, c->o->user) : 0;
}

static int step_hook(const up_hook_call *call, void *user) {
    run_ctx *c = user;
    up_dist_service(); /* rank 0: other ranks' batches that finished meanwhile (dist.h) */
    c->p.step++;
    if (report(c)) {
        c->stopped = 1;
        return -1;
    }
    return UP_HOOK_CONTINUE;
}

/* Buffers of one run, sized for its largest batch. */
typedef struct run_bufs {
    const int32_t **prompts; /* (rows) */
    int *lens;               /* (rows) */
    up_steer_row *rows;      /* (rows) */
    float *logits;           /* (rows, V) */
    int32_t *tokens;         /* (rows, max_new) */
    int *n_tokens;           /* (rows) */
    const int32_t **comps;   /* (rows) */
    double *R;               /* (rows) */
    double *lp;              /* (rows) */
    int *first;              /* (rows) the first row with the same prompt and completion */
    const int32_t **u_prompts, **u_comps; /* (rows) the distinct (prompt, completion) pairs */
    int *u_lens, *u_n;       /* (rows) */
    double *u_lp;            /* (rows) */
} run_bufs;

static up_status run_batch(run_ctx *c, up_state *s, run_bufs *bu, const int *idx, int B, int max_new,
                           up_error *err) {
    up_grid *g = c->g;
    const up_grid_opts *o = c->o;
    const int V = g->m->cfg.vocab_size;
    for (int b = 0; b < B; b++) {
        const up_grid_cell *cell = &g->cells[idx[b]];
        const grid_prompt *p = &g->prompts[cell->prompt];
        const grid_interv *iv = &g->ivs[cell->intervention];
        bu->prompts[b] = p->ids, bu->lens[b] = p->n;
        bu->rows[b] = (up_steer_row){iv->items, iv->n_items};
        bu->R[b] = 0;
    }
    up_hook extra[2];
    int n_extra = 0;
    up_projection proj = {g->obj_dir, g->obj_positions, g->n_obj_positions, bu->R};
    if (g->has_objective) extra[n_extra++] = up_metrics_projection(&proj, g->obj_layer);
    extra[n_extra++] = (up_hook){{UP_HOOK_LN_FINAL, -1}, step_hook, c};
    up_hooks hooks = {extra, n_extra};
    up_steer_plan plan = {bu->rows, B};
    up_steer_batch bt = {bu->prompts, bu->lens, B, &plan, &hooks, o->refusal_ids, o->n_refusal, max_new, o->stop_ids,
                         o->n_stop, !o->share_prompts};
    up_steer_out out = {NULL, bu->logits, max_new > 0 ? bu->tokens : NULL, bu->n_tokens, &g->totals.prompt_tokens};
    up_status st = up_steer_run(s, &bt, &out, err);
    if (c->stopped) return UP_ERR_ABORTED;
    if (st) return st;
    if (max_new > 0 && o->coherence) {
        /* The log-prob is the unsteered model's, so rows whose steering left the completion as
         * another row's (small alphas often do) share one teacher-forced row. Which rows pair
         * up depends only on the batch's contents, so a resumed run pairs them the same way. */
        int nu = 0;
        for (int b = 0; b < B; b++) {
            bu->comps[b] = bu->tokens + (size_t)b * max_new;
            bu->first[b] = -1;
            for (int u = 0; u < nu && bu->first[b] < 0; u++)
                if (bu->u_prompts[u] == bu->prompts[b] && bu->u_n[u] == bu->n_tokens[b] &&
                    !memcmp(bu->u_comps[u], bu->comps[b], (size_t)bu->n_tokens[b] * sizeof(int32_t)))
                    bu->first[b] = u;
            if (bu->first[b] >= 0) continue;
            bu->u_prompts[nu] = bu->prompts[b], bu->u_lens[nu] = bu->lens[b];
            bu->u_comps[nu] = bu->comps[b], bu->u_n[nu] = bu->n_tokens[b];
            bu->first[b] = nu++;
        }
        st = up_metrics_logprob(s, bu->u_prompts, bu->u_lens, bu->u_comps, bu->u_n, nu, 0, NULL, bu->u_lp, err);
        if (st) return st;
        for (int b = 0; b < B; b++) bu->lp[b] = bu->u_lp[bu->first[b]];
    }
    const char *const *list = (const char *const *)g->substrings;
    for (int b = 0; b < B; b++) {
        up_grid_cell *cell = &g->cells[idx[b]];
        cell->score = up_metrics_refusal_score(bu->logits + (size_t)b * V, V, o->refusal_ids, o->n_refusal, &cell->p_refusal);
        cell->R = g->has_objective ? bu->R[b] : NAN;
        if (max_new > 0) {
            const int n = bu->n_tokens[b];
            if (!(cell->tokens = malloc((size_t)(n ? n : 1) * sizeof *cell->tokens)))
                return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
            memcpy(cell->tokens, bu->tokens + (size_t)b * max_new, (size_t)n * sizeof *cell->tokens);
            cell->n_tokens = n;
            cell->logprob = o->coherence ? bu->lp[b] : NAN;
            cell->repetition = up_metrics_repetition(cell->tokens, n, o->rep_n);
            if (o->tok) {
                if (n == 0) cell->text = strdup("");
                else if ((st = up_tokenizer_decode(o->tok, cell->tokens, n, 1, &cell->text, err))) return st;
                if (!cell->text) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
                cell->refusal_match = up_metrics_refusal_match(cell->text, strlen(cell->text), list, g->n_substrings);
            }
        }
        cell->state = UP_GRID_COMPUTED;
    }
    return UP_OK;
}

/* ---- the batches as work units (dist.h) ---- */

/* Cells travel between ranks as their cache files' bytes (bit-exact doubles, a SHA-256 check),
 * each after its state and length: [u8 state][u64 n][n bytes]. */
static up_status pack_cells(const up_grid *g, const int *idx, int n, up_dist_bytes *out, up_error *err) {
    size_t used = 0;
    char *buf = NULL;
    for (int i = 0; i < n; i++) {
        const up_grid_cell *c = &g->cells[idx[i]];
        size_t len = 0;
        char *text = grid_cell_encode(c, NULL, &len, err);
        char *grown = text ? realloc(buf, used + 9 + len) : NULL;
        if (!grown) {
            free(text), free(buf);
            return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory packing cells");
        }
        buf = grown;
        const uint64_t n64 = len;
        buf[used] = (char)c->state;
        memcpy(buf + used + 1, &n64, 8);
        memcpy(buf + used + 9, text, len);
        used += 9 + len;
        free(text);
    }
    out->data = buf, out->size = used;
    return UP_OK;
}

/* The inverse of pack_cells into the cells idx (their old outputs freed). */
static up_status unpack_cells(up_grid *g, const int *idx, int n, const char *data, size_t size, up_error *err) {
    const int V = g->m->cfg.vocab_size;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        up_grid_cell *c = &g->cells[idx[i]];
        uint64_t len = 0;
        if (off + 9 > size || (memcpy(&len, data + off + 1, 8), len > size - off - 9))
            return up_error_set(err, UP_ERR_FORMAT, "grid: a batch from another rank is cut short (cell %d of %d)", i + 1, n);
        const int state = (unsigned char)data[off];
        free(c->tokens), free(c->text);
        c->tokens = NULL, c->text = NULL, c->n_tokens = 0;
        if (grid_cell_decode(data + off + 9, (size_t)len, V, NULL, c))
            return up_error_set(err, UP_ERR_FORMAT, "grid: cell %d of a batch from another rank does not read back", i + 1);
        c->state = state;
        off += 9 + (size_t)len;
    }
    return UP_OK;
}

typedef struct grid_job {
    run_ctx *ctx;
    up_state *s;
    run_bufs *bu;
    const int *pending;
    const int *starts;  /* (n_batches + 1) batch b is pending[starts[b] .. starts[b+1]) */
    char *const *specs;
    const int *n_dups;
    int arrived;        /* batches finished on every rank */
} grid_job;

static up_status batch_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    grid_job *J = user;
    run_ctx *c = J->ctx;
    up_grid *g = c->g;
    const int j = J->starts[unit], B = J->starts[unit + 1] - j;
    const int k = g->cells[J->pending[j]].decoding;
    c->p.batch = unit + 1;
    c->p.step = 0;
    c->p.steps = g->decodings[k] > 0 ? g->decodings[k] : 1;
    c->batch_rows = 0;
    for (int b = 0; b < B; b++) c->batch_rows += J->n_dups[J->pending[j + b]];
    c->batch_t0 = up_clock_seconds();
    up_status st = run_batch(c, J->s, J->bu, J->pending + j, B, g->decodings[k], err);
    if (st == UP_ERR_ABORTED && c->stopped)
        return up_error_set(err, UP_ERR_ABORTED, "grid stopped by the progress callback after %d of %d cells", c->p.done,
                            c->p.total);
    if (st) return st;
    c->compute_s += up_clock_seconds() - c->batch_t0;
    return up_dist_size() > 1 ? pack_cells(g, J->pending + j, B, out, err) : UP_OK;
}

/* Rank 0: a finished batch (its own, or another rank's bytes) goes to the cache at once. */
static up_status batch_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    grid_job *J = user;
    run_ctx *c = J->ctx;
    up_grid *g = c->g;
    const up_grid_opts *o = c->o;
    const int j = J->starts[unit], B = J->starts[unit + 1] - j;
    const int *idx = J->pending + j;
    up_status st;
    if (g->cells[idx[0]].state == UP_GRID_PENDING) {
        if ((st = unpack_cells(g, idx, B, data, size, err))) return st;
        for (int b = 0; b < B; b++) g->cells[idx[b]].state = UP_GRID_COMPUTED;
    }
    /* Every finished cell goes to disk before anything else can stop the run. */
    for (int b = 0; o->cache_dir && b < B; b++)
        if ((st = grid_cache_write(o->cache_dir, &g->cells[idx[b]], J->specs[idx[b]], err))) return st;
    for (int b = 0; b < B; b++) c->p.done += J->n_dups[idx[b]], c->p.computed += J->n_dups[idx[b]];
    g->totals.computed += B;
    g->totals.batches++;
    J->arrived++;
    /* The report after a batch; a batch of rank 0's own may be running (arrived from
     * up_dist_service), so its step counts are put back. */
    const int batch = c->p.batch, step = c->p.step, steps = c->p.steps;
    c->p.step = c->p.steps = 0;
    if (J->arrived == c->p.n_batches) c->p.batch = 0;
    const int stop = report(c) && J->arrived < c->p.n_batches;
    c->p.batch = batch, c->p.step = step, c->p.steps = steps;
    if (stop)
        return up_error_set(err, UP_ERR_ABORTED, "grid stopped by the progress callback after %d of %d cells", c->p.done,
                            c->p.total);
    return UP_OK;
}

typedef struct key_ref {
    const char *key;
    int index;
} key_ref;

static int cmp_key(const void *a, const void *b) {
    const key_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

up_status up_grid_run(up_grid *g, const up_grid_opts *opts, up_error *err) {
    up_grid_opts o = opts ? *opts : up_grid_opts_default();
    if (up_dist_rank() != 0) o.cache_dir = NULL; /* one cache, rank 0's: it writes every cell */
    const up_model *m = g->m;
    const int V = m->cfg.vocab_size;
    if (o.batch <= 0) return up_error_set(err, UP_ERR_INVALID, "grid: batch must be positive, got %d", o.batch);
    if (o.rep_n <= 0) return up_error_set(err, UP_ERR_INVALID, "grid: rep_n must be positive, got %d", o.rep_n);
    if (o.n_refusal <= 0 || !o.refusal_ids) return up_error_set(err, UP_ERR_INVALID, "grid: no refusal token ids");
    for (int i = 0; i < o.n_refusal; i++)
        if (o.refusal_ids[i] < 0 || o.refusal_ids[i] >= V)
            return up_error_set(err, UP_ERR_INVALID, "grid: refusal id %d outside [0, %d)", o.refusal_ids[i], V);
    if (g->n_prompts == 0) return up_error_set(err, UP_ERR_INVALID, "grid: no prompts");
    if (g->n_decodings == 0 && up_grid_add_decoding(g, 0, err) < 0) return err ? err->status : UP_ERR_NOMEM;
    const double t0 = up_clock_seconds();
    free_cells(g);
    memset(&g->totals, 0, sizeof g->totals);
    if (o.substrings) {
        if (o.n_substrings <= 0) return up_error_set(err, UP_ERR_INVALID, "grid: empty substring list");
        if (!(g->substrings = calloc((size_t)o.n_substrings, sizeof *g->substrings)))
            return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
        g->n_substrings = o.n_substrings;
        for (int i = 0; i < o.n_substrings; i++)
            if (!(g->substrings[i] = strdup(o.substrings[i] ? o.substrings[i] : "")))
                return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    }
    const int P = g->n_prompts, I = g->n_ivs, D = g->n_decodings, N = P * I * D;
    char *gspec = grid_run_spec(g, &o, err);
    if (!gspec) return err ? err->status : UP_ERR_NOMEM;
    up_status st = UP_OK;
    char **specs = calloc((size_t)N, sizeof *specs);
    key_ref *refs = calloc((size_t)N, sizeof *refs);
    int *owner = malloc((size_t)N * sizeof *owner), *n_dups = calloc((size_t)N, sizeof *n_dups);
    int *pending = malloc((size_t)N * sizeof *pending);
    g->cells = calloc((size_t)N, sizeof *g->cells);
    if (!specs || !refs || !owner || !n_dups || !pending || !g->cells) {
        st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory for %d cells", N);
        goto done;
    }
    g->n_cells = N;
    for (int p = 0; p < P; p++) {
        for (int i = 0; i < I; i++) {
            for (int k = 0; k < D; k++) {
                const int x = up_grid_index(g, p, i, k);
                up_grid_cell *c = &g->cells[x];
                c->prompt = p, c->intervention = i, c->decoding = k;
                c->prompt_label = g->prompts[p].label, c->label = g->ivs[i].label;
                c->latent = g->ivs[i].latent, c->alpha = g->ivs[i].alpha;
                c->max_new_tokens = g->decodings[k];
                c->state = UP_GRID_PENDING;
                c->score = c->p_refusal = c->R = c->dR = c->dscore = c->predicted_dR = NAN;
                c->logprob = c->repetition = NAN;
                c->refusal_match = -2;
                if (!(specs[x] = grid_cell_spec(gspec, g->prompts[p].spec, g->ivs[i].spec, g->decodings[k], c->key))) {
                    st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
                    goto done;
                }
                refs[x] = (key_ref){c->key, x};
            }
        }
    }
    /* Cells with equal keys are one computation; the first in index order owns it. */
    qsort(refs, (size_t)N, sizeof *refs, cmp_key);
    int unique = 0;
    for (int j = 0; j < N; j++) {
        const int first = j && !strcmp(refs[j].key, refs[j - 1].key) ? owner[refs[j - 1].index] : refs[j].index;
        owner[refs[j].index] = first;
        n_dups[first]++;
        unique += first == refs[j].index;
    }
    run_ctx ctx = {g, &o, {0}, t0, 0, 0, 0, 0};
    ctx.p.total = N;
    ctx.p.rate = ctx.p.eta = NAN;
    int n_pending = 0, max_len = 0, max_new = 0;
    for (int k = 0; k < D; k++) {
        for (int p = 0; p < P; p++) {
            for (int i = 0; i < I; i++) {
                const int x = up_grid_index(g, p, i, k);
                if (owner[x] != x) continue;
                if (o.cache_dir && !grid_cache_read(o.cache_dir, V, &g->cells[x])) {
                    ctx.p.done += n_dups[x], ctx.p.cached += n_dups[x];
                    g->totals.cached++;
                    continue;
                }
                pending[n_pending++] = x;
            }
        }
    }
    /* Rank 0 holds the cache: every rank computes what it found missing. */
    if (up_dist_size() > 1) {
        void *data = pending;
        size_t size = (size_t)n_pending * sizeof *pending;
        if ((st = up_dist_share(&data, &size, err))) goto done;
        if (up_dist_rank() != 0) {
            n_pending = (int)(size / sizeof *pending);
            if (n_pending) memcpy(pending, data, size);
            free(data);
        }
    }
    /* Batches: runs of at most o.batch pending cells that share a decoding. The state is sized
     * for the whole grid, not for what is pending, so a resumed run computes in a state of the
     * same shape as an uninterrupted one. */
    int n_batches = 0, max_rows = o.batch < P * I ? o.batch : P * I;
    for (int j = 0, len = 0; j < n_pending; j++) {
        const int starts = len == o.batch || (j && g->cells[pending[j]].decoding != g->cells[pending[j - 1]].decoding);
        if (j == 0 || starts) n_batches++, len = 0;
        len++;
    }
    for (int p = 0; p < P; p++) max_len = g->prompts[p].n > max_len ? g->prompts[p].n : max_len;
    for (int k = 0; k < D; k++) max_new = g->decodings[k] > max_new ? g->decodings[k] : max_new;
    ctx.p.n_batches = n_batches;
    if (report(&ctx)) {
        st = up_error_set(err, UP_ERR_ABORTED, "grid stopped by the progress callback after %d of %d cells", ctx.p.done, N);
        goto done;
    }
    if (n_pending) {
        up_state *s = NULL;
        run_bufs bu = {0};
        bu.prompts = malloc((size_t)max_rows * sizeof *bu.prompts);
        bu.lens = malloc((size_t)max_rows * sizeof *bu.lens);
        bu.rows = malloc((size_t)max_rows * sizeof *bu.rows);
        bu.logits = malloc((size_t)max_rows * V * sizeof *bu.logits);
        bu.tokens = malloc((size_t)max_rows * (max_new ? max_new : 1) * sizeof *bu.tokens);
        bu.n_tokens = malloc((size_t)max_rows * sizeof *bu.n_tokens);
        bu.comps = malloc((size_t)max_rows * sizeof *bu.comps);
        bu.R = malloc((size_t)max_rows * sizeof *bu.R);
        bu.lp = malloc((size_t)max_rows * sizeof *bu.lp);
        bu.first = malloc((size_t)max_rows * sizeof *bu.first);
        bu.u_prompts = malloc((size_t)max_rows * sizeof *bu.u_prompts);
        bu.u_comps = malloc((size_t)max_rows * sizeof *bu.u_comps);
        bu.u_lens = malloc((size_t)max_rows * sizeof *bu.u_lens);
        bu.u_n = malloc((size_t)max_rows * sizeof *bu.u_n);
        bu.u_lp = malloc((size_t)max_rows * sizeof *bu.u_lp);
        if (!bu.prompts || !bu.lens || !bu.rows || !bu.logits || !bu.tokens || !bu.n_tokens || !bu.comps || !bu.R || !bu.lp ||
            !bu.first || !bu.u_prompts || !bu.u_comps || !bu.u_lens || !bu.u_n || !bu.u_lp)
            st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory for batches of %d rows", max_rows);
        if (!st) st = up_state_init(&s, m, max_rows, max_len + max_new, err);
        int *starts = malloc((size_t)(n_batches + 1) * sizeof *starts);
        if (!st && !starts) st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
        for (int j = 0, b = 0; !st && j < n_pending; b++) {
            const int k = g->cells[pending[j]].decoding;
            int B = 0;
            while (j + B < n_pending && B < o.batch && g->cells[pending[j + B]].decoding == k) B++;
            starts[b] = j;
            j += B;
            starts[b + 1] = j;
        }
        grid_job job = {&ctx, s, &bu, pending, starts, specs, n_dups, 0};
        const up_dist_job dj = {n_batches, batch_compute, batch_arrived, &job};
        if (!st) st = up_dist_map(&dj, err);
        free(starts);
        up_state_free(s);
        free(bu.prompts), free(bu.lens), free(bu.rows), free(bu.logits), free(bu.tokens), free(bu.n_tokens);
        free(bu.comps), free(bu.R), free(bu.lp);
        free(bu.first), free(bu.u_prompts), free(bu.u_comps), free(bu.u_lens), free(bu.u_n), free(bu.u_lp);
        if (st) goto done;
    }
    /* Every rank gets every distinct cell rank 0 has (computed anywhere, or from its cache). */
    if (up_dist_size() > 1) {
        int n_own = 0;
        for (int x = 0; x < N; x++)
            if (owner[x] == x) pending[n_own++] = x;
        up_dist_bytes all = {0};
        if (up_dist_rank() == 0 && pack_cells(g, pending, n_own, &all, err))
            up_dist_out_of_memory("the grid's cells"); /* the other ranks wait for them */
        if ((st = up_dist_share(&all.data, &all.size, err))) goto done;
        if (up_dist_rank() != 0) st = unpack_cells(g, pending, n_own, all.data, all.size, err);
        free(all.data);
        if (st) goto done;
    }
    /* Duplicates take their owner's outputs (deep copies: each cell owns its buffers). */
    for (int x = 0; x < N; x++) {
        const up_grid_cell *src = &g->cells[owner[x]];
        up_grid_cell *c = &g->cells[x];
        if (owner[x] == x) continue;
        c->state = src->state;
        c->score = src->score, c->p_refusal = src->p_refusal, c->R = src->R;
        c->logprob = src->logprob, c->repetition = src->repetition, c->refusal_match = src->refusal_match;
        c->n_tokens = src->n_tokens;
        c->tokens = malloc((size_t)(src->n_tokens ? src->n_tokens : 1) * sizeof *c->tokens);
        c->text = src->text ? strdup(src->text) : NULL;
        if (!c->tokens || (src->text && !c->text)) {
            st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
            goto done;
        }
        if (src->tokens) memcpy(c->tokens, src->tokens, (size_t)src->n_tokens * sizeof *c->tokens);
    }
    for (int x = 0; x < N; x++) {
        up_grid_cell *c = &g->cells[x];
        const up_grid_cell *base = &g->cells[up_grid_index(g, c->prompt, 0, c->decoding)];
        c->dscore = c->score - base->score;
        c->dR = c->R - base->R;
    }
    if (o.predict && g->has_objective) st = grid_predict(g, err);
    g->totals.cells = N;
    g->totals.unique = unique;
done:
    g->totals.seconds = up_clock_seconds() - t0;
    for (int x = 0; specs && x < N; x++) free(specs[x]);
    free(specs), free(refs), free(owner), free(n_dups), free(pending), free(gspec);
    return st;
}
