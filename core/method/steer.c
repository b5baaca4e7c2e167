#include "method/steer.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/generate.h"
#include "engine/hooks.h"
#include "engine/position.h"
#include "method/metrics.h"
#include "engine/model.h"

typedef struct item {
    up_steer s;       /* a copy; s.positions points into the set's pool */
    const float *dir; /* ABLATE: the unit direction, owned by the set */
} item;

typedef struct point_ctx {
    const up_steer_set *set;
    up_hook_point point;
} point_ctx;

struct up_steer_set {
    int n_rows;        /* plan rows; 1 broadcasts */
    int *row_first;    /* (n_rows + 1) offsets into items */
    item *items;       /* (n_items) */
    float *scratch;    /* (max d_sae over TopK clamps) pre-activations for ranking */
    point_ctx *ctx;    /* (n_hooks) */
    up_hook *hook_buf; /* (n_hooks + n_extra) */
    up_hooks hooks;
    void *block;       /* the one allocation everything above lives in */
};

/* ---- names --------------------------------------------------------------------------- */

static const char *const kind_names[] = {"add", "ablate", "clamp"};
static const char *const where_names[] = {"all", "prompt", "generated", "list"};

const char *up_steer_kind_name(up_steer_kind kind) {
    return (unsigned)kind <= UP_STEER_CLAMP ? kind_names[kind] : "?";
}

int up_steer_kind_parse(const char *name, up_steer_kind *out) {
    for (int i = 0; i <= UP_STEER_CLAMP; i++)
        if (!strcmp(name, kind_names[i])) return *out = (up_steer_kind)i, 0;
    return -1;
}

const char *up_steer_where_name(up_steer_where where) {
    return (unsigned)where <= UP_STEER_POS_LIST ? where_names[where] : "?";
}

int up_steer_where_parse(const char *name, up_steer_where *out) {
    for (int i = 0; i <= UP_STEER_POS_LIST; i++)
        if (!strcmp(name, where_names[i])) return *out = (up_steer_where)i, 0;
    return -1;
}

/* ---- initialisers -------------------------------------------------------------------- */

up_steer up_steer_add(up_hook_point point, const float *v, float alpha) {
    return (up_steer){.kind = UP_STEER_ADD, .point = point, .vec = v, .alpha = alpha};
}

up_steer up_steer_ablate(const float *r) {
    return (up_steer){.kind = UP_STEER_ABLATE, .point = {UP_HOOK_RESID_PRE, UP_HOOK_ANY_LAYER}, .vec = r};
}

up_steer up_steer_clamp(const up_sae *sae, int latent, float value) {
    /* layer -1 on a block kind is invalid, so an SAE with no known hook is caught later. */
    up_hook_point p = {UP_HOOK_RESID_POST, -1};
    if (sae && sae->layer >= 0) {
        p.layer = sae->layer;
        if (sae->hook[0] && up_hook_point_parse(sae->hook, sae->layer + 1, &p)) p = (up_hook_point){UP_HOOK_RESID_POST, -1};
    }
    return (up_steer){.kind = UP_STEER_CLAMP, .point = p, .sae = sae, .latent = latent, .value = value};
}

/* ---- the hook ------------------------------------------------------------------------ */

static int is_ablation_point(up_hook_kind k) {
    return k == UP_HOOK_RESID_PRE || k == UP_HOOK_ATTN_OUT || k == UP_HOOK_MLP_OUT;
}

static int item_at(const up_steer *s, up_hook_point p) {
    if (s->kind == UP_STEER_ABLATE) return is_ablation_point(p.kind);
    return s->point.kind == p.kind && s->point.layer == p.layer;
}

static int chosen(const up_steer *s, const up_hook_call *call, int pos, int n_prompt) {
    switch (s->where) {
    case UP_STEER_POS_ALL: return 1;
    case UP_STEER_POS_PROMPT: return !call->n_prompt || pos < n_prompt;
    case UP_STEER_POS_GENERATED: return call->n_prompt && pos >= n_prompt;
    case UP_STEER_POS_LIST:
        for (int i = 0; i < s->n_positions; i++)
            if (up_position_resolve(s->positions[i], n_prompt) == pos) return 1;
        return 0;
    }
    return 0;
}

/* a_k(h) per sae.h, from the closed form (steer.h); scratch (d_sae) is used for TopK only. */
static float latent_activation(const up_sae *sae, const float *h, int k, float *scratch) {
    const int din = sae->d_in, dsae = sae->d_sae;
    const float *bd = sae->apply_b_dec_to_input ? sae->b_dec : NULL;
    if (sae->arch != UP_SAE_TOPK) {
        double acc = sae->b_enc[k];
        for (int i = 0; i < din; i++) acc += (double)(bd ? h[i] - bd[i] : h[i]) * sae->W_enc[(size_t)i * dsae + k];
        const float pre = (float)acc;
        if (sae->arch == UP_SAE_JUMPRELU) return pre > sae->threshold[k] && pre > 0.0f ? pre : 0.0f;
        return pre > 0.0f ? pre : 0.0f;
    }
    /* TopK: the whole row, row-major over W_enc so the reads are contiguous. */
    memcpy(scratch, sae->b_enc, (size_t)dsae * sizeof *scratch);
    for (int i = 0; i < din; i++) {
        const float xi = bd ? h[i] - bd[i] : h[i];
        const float *w = sae->W_enc + (size_t)i * dsae;
        for (int j = 0; j < dsae; j++) scratch[j] += xi * w[j];
    }
    const float pre = scratch[k];
    int above = 0; /* latents ranked before k: larger, or equal with a lower index */
    for (int j = 0; j < dsae && above < sae->k; j++) above += scratch[j] > pre || (scratch[j] == pre && j < k);
    return above < sae->k && pre > 0.0f ? pre : 0.0f;
}

static void apply(const item *it, const up_hook_call *call, int b, float *scratch) {
    const up_steer *s = &it->s;
    if (s->kind == UP_STEER_ADD && s->alpha == 0.0f) return; /* exactly no steering, even for -0 */
    const int T = call->n_tok, d = call->d, n_prompt = up_hook_prompt_len(call, b);
    for (int t = 0; t < T; t++) {
        const int pos = call->pos[(size_t)b * T + t];
        if (pos < 0 || !chosen(s, call, pos, n_prompt)) continue;
        float *h = call->act + ((size_t)b * T + t) * d;
        switch (s->kind) {
        case UP_STEER_ADD:
            for (int j = 0; j < d; j++) h[j] += s->alpha * s->vec[j];
            break;
        case UP_STEER_ABLATE: {
            double proj = 0;
            for (int j = 0; j < d; j++) proj += (double)h[j] * it->dir[j];
            for (int j = 0; j < d; j++) h[j] = (float)(h[j] - proj * it->dir[j]);
            break;
        }
        case UP_STEER_CLAMP: {
            const float delta = s->value - latent_activation(s->sae, h, s->latent, scratch);
            if (delta == 0.0f) break;
            const float *w = s->sae->W_dec + (size_t)s->latent * d;
            for (int j = 0; j < d; j++) h[j] += delta * w[j];
            break;
        }
        }
    }
}

static int steer_hook(const up_hook_call *call, void *user) {
    const point_ctx *c = user;
    const up_steer_set *set = c->set;
    if (set->n_rows != 1 && call->n_rows > set->n_rows) return -1; /* rows without a setting */
    for (int b = 0; b < call->n_rows; b++) {
        const int r = set->n_rows == 1 ? 0 : b;
        for (int i = set->row_first[r]; i < set->row_first[r + 1]; i++)
            if (item_at(&set->items[i].s, call->point)) apply(&set->items[i], call, b, set->scratch);
    }
    return UP_HOOK_CONTINUE;
}

/* ---- building a set ------------------------------------------------------------------ */

static int point_ok(up_hook_point p, int n_layers) {
    if ((unsigned)p.kind >= UP_HOOK_KIND_COUNT) return 0;
    if (p.kind == UP_HOOK_EMBED || p.kind == UP_HOOK_LN_FINAL) return p.layer == -1;
    return p.layer >= 0 && p.layer < n_layers;
}

static up_status check_item(const up_steer *s, const up_model *m, int r, int i, up_error *err) {
    const int d = m->cfg.d_model;
#define BAD(...) up_error_set(err, UP_ERR_INVALID, "steering row %d item %d (%s): " __VA_ARGS__)
    const char *kn = up_steer_kind_name(s->kind);
    if ((unsigned)s->kind > UP_STEER_CLAMP) return BAD("unknown kind %d", r, i, kn, (int)s->kind);
    if ((unsigned)s->where > UP_STEER_POS_LIST) return BAD("unknown position mode %d", r, i, kn, (int)s->where);
    if (s->where == UP_STEER_POS_LIST && (s->n_positions < 0 || (s->n_positions > 0 && !s->positions)))
        return BAD("position list of %d entries is missing", r, i, kn, s->n_positions);
    if (s->kind != UP_STEER_ABLATE && !point_ok(s->point, m->cfg.n_layers)) {
        char name[64];
        up_hook_point_name(s->point, name, sizeof name);
        return BAD("hook point %s (layer %d) is not a point of this %d-layer model", r, i, kn, name, s->point.layer,
                   m->cfg.n_layers);
    }
    if (s->kind == UP_STEER_ADD) {
        if (!s->vec) return BAD("no vector", r, i, kn);
        if (!isfinite(s->alpha)) return BAD("alpha is not finite", r, i, kn);
    } else if (s->kind == UP_STEER_ABLATE) {
        if (!s->vec) return BAD("no direction", r, i, kn);
        double n = 0;
        for (int j = 0; j < d; j++) n += (double)s->vec[j] * s->vec[j];
        if (!(n > 0) || !isfinite(n)) return BAD("the direction has norm %g", r, i, kn, sqrt(n));
    } else {
        const up_sae *sae = s->sae;
        if (!sae) return BAD("no SAE", r, i, kn);
        if ((sae->parts & UP_SAE_ALL) != UP_SAE_ALL)
            return BAD("the SAE %s needs its encoder and decoder loaded", r, i, kn, sae->path ? sae->path : "");
        if (sae->d_in != d) return BAD("the SAE's d_in %d is not d_model %d", r, i, kn, sae->d_in, d);
        if (s->latent < 0 || s->latent >= sae->d_sae)
            return BAD("latent %d outside [0, %d)", r, i, kn, s->latent, sae->d_sae);
        if (!isfinite(s->value)) return BAD("value is not finite", r, i, kn);
    }
#undef BAD
    return UP_OK;
}

/* Carves n bytes, 16-aligned, from *at. */
static void *carve(char **at, size_t n) {
    void *p = *at;
    *at += (n + 15) & ~(size_t)15;
    return p;
}

up_status up_steer_hooks(up_steer_set **out, const up_model *m, const up_steer_plan *plan, const up_hooks *extra,
                         up_error *err) {
    *out = NULL;
    if (!plan || plan->n_rows < 1 || !plan->rows)
        return up_error_set(err, UP_ERR_INVALID, "a steering plan needs at least one row");
    const int d = m->cfg.d_model, L = m->cfg.n_layers, n_points = up_hook_point_count(L);
    const int n_extra = extra ? extra->n : 0;
    size_t n_items = 0, n_pos = 0, n_ablate = 0, max_dsae = 0;
    for (int r = 0; r < plan->n_rows; r++) {
        const up_steer_row *row = &plan->rows[r];
        if (row->n < 0 || (row->n > 0 && !row->items))
            return up_error_set(err, UP_ERR_INVALID, "steering row %d: %d items missing", r, row->n);
        for (int i = 0; i < row->n; i++) {
            const up_steer *s = &row->items[i];
            up_status st = check_item(s, m, r, i, err);
            if (st) return st;
            n_items++;
            if (s->where == UP_STEER_POS_LIST) n_pos += (size_t)s->n_positions;
            if (s->kind == UP_STEER_ABLATE) n_ablate++;
            if (s->kind == UP_STEER_CLAMP && s->sae->arch == UP_SAE_TOPK && (size_t)s->sae->d_sae > max_dsae)
                max_dsae = (size_t)s->sae->d_sae;
        }
    }
    const size_t bytes = 16 * 8 + sizeof(up_steer_set) + (plan->n_rows + 1) * sizeof(int) + n_items * sizeof(item) +
                         n_pos * sizeof(int) + n_ablate * d * sizeof(float) + max_dsae * sizeof(float) +
                         n_points * sizeof(point_ctx) + (size_t)(n_points + n_extra) * sizeof(up_hook);
    char *at = calloc(1, bytes);
    if (!at) return up_error_set(err, UP_ERR_NOMEM, "out of memory for a steering plan of %zu items", n_items);
    void *block = at;
    up_steer_set *set = carve(&at, sizeof *set);
    set->block = block;
    set->n_rows = plan->n_rows;
    set->row_first = carve(&at, (plan->n_rows + 1) * sizeof(int));
    set->items = carve(&at, n_items * sizeof(item));
    int *pos_pool = carve(&at, n_pos * sizeof(int));
    float *dirs = carve(&at, n_ablate * d * sizeof(float));
    set->scratch = max_dsae ? carve(&at, max_dsae * sizeof(float)) : NULL;
    set->ctx = carve(&at, n_points * sizeof(point_ctx));
    set->hook_buf = carve(&at, (size_t)(n_points + n_extra) * sizeof(up_hook));

    int k = 0;
    for (int r = 0; r < plan->n_rows; r++) {
        set->row_first[r] = k;
        for (int i = 0; i < plan->rows[r].n; i++, k++) {
            item *it = &set->items[k];
            it->s = plan->rows[r].items[i];
            if (it->s.where == UP_STEER_POS_LIST) {
                if (it->s.n_positions) memcpy(pos_pool, it->s.positions, (size_t)it->s.n_positions * sizeof(int));
                it->s.positions = pos_pool;
                pos_pool += it->s.n_positions;
            }
            if (it->s.kind == UP_STEER_ABLATE) {
                double n = 0;
                for (int j = 0; j < d; j++) n += (double)it->s.vec[j] * it->s.vec[j];
                n = sqrt(n);
                for (int j = 0; j < d; j++) dirs[j] = (float)(it->s.vec[j] / n);
                it->dir = dirs;
                dirs += d;
            }
        }
    }
    set->row_first[plan->n_rows] = k;

    /* One hook per concrete point that some item touches, in forward order. */
    int n_hooks = 0;
    for (int p = 0; p < n_points; p++) {
        const up_hook_point pt = up_hook_point_at(L, p);
        int used = 0;
        for (int i = 0; i < k && !used; i++) used = item_at(&set->items[i].s, pt);
        if (!used) continue;
        set->ctx[n_hooks] = (point_ctx){set, pt};
        set->hook_buf[n_hooks] = (up_hook){pt, steer_hook, &set->ctx[n_hooks]};
        n_hooks++;
    }
    for (int i = 0; i < n_extra; i++) set->hook_buf[n_hooks + i] = extra->items[i];
    set->hooks = (up_hooks){set->hook_buf, n_hooks + n_extra};
    *out = set;
    return UP_OK;
}

const up_hooks *up_steer_set_hooks(const up_steer_set *set) { return &set->hooks; }

void up_steer_set_free(up_steer_set *set) {
    if (set) free(set->block);
}

/* ---- running a batch ----------------------------------------------------------------- */

static int is_stop(const up_steer_batch *bt, int32_t id) {
    for (int i = 0; i < bt->n_stop; i++)
        if (bt->stop_ids[i] == id) return 1;
    return 0;
}

/* The earliest hook point at which item `it` can change a prompt slot of a row whose prompt
 * has n tokens (steer.h's position rules), or INT_MAX if it never does. */
static int first_prompt_point(const up_steer *it, int n, int L) {
    if (it->kind == UP_STEER_ADD && it->alpha == 0.0f) return INT_MAX; /* skipped by apply() */
    int acts = 0;
    switch (it->where) {
    case UP_STEER_POS_ALL:
    case UP_STEER_POS_PROMPT: acts = 1; break;
    case UP_STEER_POS_GENERATED: acts = 0; break;
    case UP_STEER_POS_LIST:
        for (int i = 0; i < it->n_positions && !acts; i++) {
            const int p = up_position_resolve(it->positions[i], n);
            acts = p >= 0 && p < n;
        }
        break;
    }
    if (!acts) return INT_MAX;
    if (it->kind == UP_STEER_ABLATE) return up_hook_point_index((up_hook_point){UP_HOOK_RESID_PRE, 0}, L);
    return up_hook_point_index(it->point, L);
}

/* How the batch's prefill may share prompts (generate.h's up_prefill): up to the residual point
 * at or before the first point where any row's steering, or any extra hook, may act on a prompt
 * slot. Extra hooks are opaque, so they count as acting on every slot at their point. */
static up_prefill_share share_rule(const up_model *m, const up_steer_batch *bt, up_hook_point *until) {
    const int L = m->cfg.n_layers;
    int first = INT_MAX;
    for (int b = 0; bt->plan && b < bt->n_rows; b++) {
        const up_steer_row *row = &bt->plan->rows[bt->plan->n_rows == 1 ? 0 : b];
        for (int i = 0; i < row->n; i++) {
            const int p = first_prompt_point(&row->items[i], bt->lens[b], L);
            first = p < first ? p : first;
        }
    }
    for (int i = 0; bt->extra && i < bt->extra->n; i++) {
        up_hook_point p = bt->extra->items[i].point;
        if (p.layer == UP_HOOK_ANY_LAYER) p.layer = 0;
        const int k = up_hook_point_index(p, L);
        first = k < first ? k : first;
    }
    if (first == INT_MAX) return UP_PREFILL_WHOLE;
    const up_hook_point p = up_hook_point_at(L, first);
    switch (p.kind) {
    case UP_HOOK_EMBED: return UP_PREFILL_ALONE;
    case UP_HOOK_RESID_PRE:
    case UP_HOOK_ATTN_OUT: *until = (up_hook_point){UP_HOOK_RESID_PRE, p.layer}; break;
    case UP_HOOK_RESID_MID:
    case UP_HOOK_MLP_OUT: *until = (up_hook_point){UP_HOOK_RESID_MID, p.layer}; break;
    case UP_HOOK_RESID_POST: *until = p; break;
    default: *until = (up_hook_point){UP_HOOK_RESID_POST, L - 1}; break; /* ln_final */
    }
    /* Pausing before layer 0 would share only the embedding. */
    if (until->kind == UP_HOOK_RESID_PRE && until->layer == 0) return UP_PREFILL_ALONE;
    return UP_PREFILL_UNTIL;
}

/* Whether every row is steered alike and never at prompt-relative positions (a POS_LIST item
 * resolves against each row's own length), with no opaque extra hooks: then the rows' common
 * prompt prefix may run once for all (up_prefill's PREFIX). Rows count as alike when they hold
 * the same item array. */
static int rows_alike(const up_steer_batch *bt) {
    if (bt->extra && bt->extra->n > 0) return 0;
    if (!bt->plan) return 1;
    const up_steer_row *r0 = &bt->plan->rows[0];
    for (int b = 0; b < bt->plan->n_rows; b++) {
        const up_steer_row *r = &bt->plan->rows[b];
        if (r->n != r0->n || (r->n && r->items != r0->items)) return 0;
    }
    for (int i = 0; i < r0->n; i++)
        if (r0->items[i].where == UP_STEER_POS_LIST) return 0;
    return 1;
}

static int any_equal_prompts(const up_steer_batch *bt) {
    for (int a = 0; a < bt->n_rows; a++)
        for (int b = a + 1; b < bt->n_rows; b++)
            if (bt->lens[a] == bt->lens[b] &&
                !memcmp(bt->prompts[a], bt->prompts[b], (size_t)bt->lens[a] * sizeof *bt->prompts[a]))
                return 1;
    return 0;
}

up_status up_steer_run(up_state *s, const up_steer_batch *bt, up_steer_out *out, up_error *err) {
    const up_model *m = up_state_model(s);
    const int V = m->cfg.vocab_size, B = bt->n_rows;
    const int want_tokens = out->tokens && bt->max_new_tokens > 0;
    if (B <= 0) return up_error_set(err, UP_ERR_INVALID, "steer run: no rows");
    if (bt->plan && bt->plan->n_rows != 1 && bt->plan->n_rows != B)
        return up_error_set(err, UP_ERR_INVALID, "steer run: the plan has %d rows for a batch of %d", bt->plan->n_rows, B);
    if (out->tokens && !out->n_tokens) return up_error_set(err, UP_ERR_INVALID, "steer run: tokens need n_tokens");
    for (int b = 0; b < B; b++)
        if (bt->lens[b] <= 0) return up_error_set(err, UP_ERR_INVALID, "steer run: row %d has an empty prompt", b);
    up_steer_set *set = NULL;
    up_status st = UP_OK;
    if (bt->plan && (st = up_steer_hooks(&set, m, bt->plan, bt->extra, err))) return st;
    const up_hooks *hooks = set ? up_steer_set_hooks(set) : bt->extra;
    int32_t *tok = malloc((size_t)B * sizeof *tok);
    int *done = calloc((size_t)B, sizeof *done);
    float *logits = malloc((size_t)B * V * sizeof *logits);
    if (!tok || !done || !logits) {
        st = up_error_set(err, UP_ERR_NOMEM, "steer run: out of memory for %d rows", B);
        goto out;
    }
    up_hook_point until = {UP_HOOK_EMBED, -1};
    up_prefill_share share = bt->no_sharing ? UP_PREFILL_ALONE : share_rule(m, bt, &until);
    /* Distinct prompts steered alike share their common prefix (a chat template's opening);
     * equal prompts keep the sharing the rule chose. */
    if (!bt->no_sharing && B > 1 && rows_alike(bt) && !any_equal_prompts(bt)) share = UP_PREFILL_PREFIX;
    /* n_prompt = lens in every pass, as up_generate passes it, so hooks see the same calls. */
    st = up_prefill(s, bt->prompts, bt->lens, B, share, until, hooks, logits, out->prompt_tokens, err);
    if (!st && up_state_stopped(s)) st = up_error_set(err, UP_ERR_INVALID, "steer run: a hook stopped the pass");
    if (st) goto out;
    for (int b = 0; b < B; b++) {
        const float *row = logits + (size_t)b * V;
        if (out->score) out->score[b] = up_metrics_refusal_score(row, V, bt->refusal_ids, bt->n_refusal, NULL);
        if (out->logits) memcpy(out->logits + (size_t)b * V, row, (size_t)V * sizeof *row);
    }
    if (out->n_tokens)
        for (int b = 0; b < B; b++) out->n_tokens[b] = 0;
    if (!want_tokens) goto out;
    /* Greedy decoding from the prefill's cache: the rule of generate.h (stop id kept, finished
     * rows ride along, ties to the lowest id). */
    for (int remaining = B;;) {
        for (int b = 0; b < B; b++) {
            const int32_t id = up_argmax(logits + (size_t)b * V, V);
            tok[b] = id;
            if (done[b]) continue;
            out->tokens[(size_t)b * bt->max_new_tokens + out->n_tokens[b]++] = id;
            if (is_stop(bt, id) || out->n_tokens[b] == bt->max_new_tokens) done[b] = 1, remaining--;
        }
        if (!remaining) break;
        st = up_forward(s, tok, NULL, bt->lens, B, 1, hooks, logits, UP_LOGITS_LAST, err);
        if (!st && up_state_stopped(s)) st = up_error_set(err, UP_ERR_INVALID, "steer run: a hook stopped the pass");
        if (st) break;
    }
out:
    up_steer_set_free(set);
    free(tok);
    free(done);
    free(logits);
    return st;
}
