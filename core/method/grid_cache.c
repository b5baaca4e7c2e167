/* grid_cache — the grid's cell keys and cache files; the contract is in grid_cache.h. */
#include "method/grid_cache.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/hash.h"
#include "method/metrics.h"

/* ---- keys ---------------------------------------------------------------------------------- */

char *grid_prompt_spec(const int32_t *ids, int n) {
    grid_strbuf b = {0};
    grid_sb_printf(&b, "prompt n=%d", n);
    for (int t = 0; t < n; t++) grid_sb_printf(&b, "%c%d", t ? ',' : ' ', ids[t]);
    grid_sb_printf(&b, "\n");
    return grid_sb_take(&b);
}

static void where_spec(grid_strbuf *b, const up_steer *s) {
    grid_sb_printf(b, " where=%s", up_steer_where_name(s->where));
    if (s->where != UP_STEER_POS_LIST) return;
    for (int j = 0; j < s->n_positions; j++) grid_sb_printf(b, "%c%d", j ? ',' : ':', s->positions[j]);
}

/* ADD with alpha 0 is left out: steer.h skips it, so the computation is the unsteered one and
 * the key must say so. */
char *grid_items_spec(const up_model *m, const up_steer *items, int n) {
    const int d = m->cfg.d_model;
    grid_strbuf b = {0};
    int kept = 0;
    for (int j = 0; j < n; j++) kept += !(items[j].kind == UP_STEER_ADD && items[j].alpha == 0);
    grid_sb_printf(&b, "steer n=%d\n", kept);
    for (int j = 0; j < n; j++) {
        const up_steer *s = &items[j];
        char point[96], vh[UP_HASH_HEX] = "";
        if (s->kind == UP_STEER_ADD && s->alpha == 0) continue;
        up_hook_point_name(s->point, point, sizeof point);
        if (s->vec && up_hash_bytes(s->vec, (size_t)d * sizeof(float), vh)) b.failed = 1;
        switch (s->kind) {
        case UP_STEER_ADD: grid_sb_printf(&b, " add %s alpha=%a vec=%s", point, (double)s->alpha, vh); break;
        case UP_STEER_ABLATE: grid_sb_printf(&b, " ablate vec=%s", vh); break;
        case UP_STEER_CLAMP:
            grid_sb_printf(&b, " clamp %s sae=%s latent=%d value=%a", point, s->sae && s->sae->path ? s->sae->path : "(memory)",
                      s->latent, (double)s->value);
            break;
        }
        if (s->kind != UP_STEER_ABLATE) where_spec(&b, s);
        grid_sb_printf(&b, "\n");
    }
    return grid_sb_take(&b);
}

static int cmp_ident(const void *a, const void *b) {
    return strcmp(((const grid_ident *)a)->name, ((const grid_ident *)b)->name);
}

char *grid_run_spec(const up_grid *g, const up_grid_opts *o, up_error *err) {
    char memo[PATH_MAX];
    if (o->cache_dir) snprintf(memo, sizeof memo, "%s/filehash", o->cache_dir);
    /* Identities: the caller's, then the files a cached run depends on. */
    int n = g->n_idents, cap = g->n_idents + 1;
    for (int i = 0; i < g->n_ivs; i++) cap += g->ivs[i].n_items;
    grid_ident *ids = calloc((size_t)cap, sizeof *ids);
    grid_strbuf b = {0};
    char hex[UP_HASH_HEX];
    up_status st = ids ? UP_OK : up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    for (int i = 0; !st && i < n; i++) ids[i] = g->idents[i];
    int have_model = 0;
    for (int i = 0; i < n; i++) have_model |= !strcmp(ids[i].name, "model");
    char **owned = calloc((size_t)2 * cap, sizeof *owned); /* strings made here, freed below */
    int n_owned = 0;
    if (!owned && !st) st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    if (!st && o->cache_dir && !have_model) {
        if (!g->m->dir)
            st = up_error_set(err, UP_ERR_INVALID,
                              "grid cache: the model was built in memory; give it a 'model' identity");
        else if (!(st = up_hash_path(g->m->dir, memo, hex, err))) {
            owned[n_owned++] = strdup("model");
            owned[n_owned++] = strdup(hex);
            ids[n++] = (grid_ident){owned[n_owned - 2], owned[n_owned - 1]};
        }
    }
    for (int i = 0; !st && o->cache_dir && i < g->n_ivs; i++) {
        for (int j = 0; !st && j < g->ivs[i].n_items; j++) {
            const up_steer *s = &g->ivs[i].items[j];
            if (s->kind != UP_STEER_CLAMP) continue;
            if (!s->sae->path) {
                st = up_error_set(err, UP_ERR_INVALID, "grid cache: a CLAMP uses an SAE built in memory (no file to hash)");
                break;
            }
            char name[PATH_MAX + 8];
            snprintf(name, sizeof name, "sae %s", s->sae->path);
            int seen = 0;
            for (int k = 0; k < n && !seen; k++) seen = !strcmp(ids[k].name, name);
            if (seen) continue;
            if ((st = up_hash_path(s->sae->path, memo, hex, err))) break;
            owned[n_owned++] = strdup(name);
            owned[n_owned++] = strdup(hex);
            ids[n++] = (grid_ident){owned[n_owned - 2], owned[n_owned - 1]};
        }
    }
    for (int i = 0; !st && i < n; i++)
        if (!ids[i].name || !ids[i].value) st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    if (!st) {
        qsort(ids, (size_t)n, sizeof *ids, cmp_ident);
        grid_sb_printf(&b, "upstream grid cell %d\n", UP_GRID_FORMAT);
        for (int i = 0; i < n; i++) grid_sb_printf(&b, "identity %s %s\n", ids[i].name, ids[i].value);
        grid_sb_printf(&b, "stop");
        for (int i = 0; i < o->n_stop; i++) grid_sb_printf(&b, "%c%d", i ? ',' : ' ', o->stop_ids[i]);
        grid_sb_printf(&b, "\nrefusal");
        for (int i = 0; i < o->n_refusal; i++) grid_sb_printf(&b, "%c%d", i ? ',' : ' ', o->refusal_ids[i]);
        grid_sb_printf(&b, "\n");
        if (g->has_objective) {
            if (up_hash_bytes(g->obj_dir, (size_t)g->m->cfg.d_model * sizeof(float), hex)) b.failed = 1;
            grid_sb_printf(&b, "objective layer=%d dir=%s positions=", g->obj_layer, hex);
            if (!g->obj_positions) grid_sb_printf(&b, "last");
            for (int i = 0; i < g->n_obj_positions; i++) grid_sb_printf(&b, "%s%d", i ? "," : "", g->obj_positions[i]);
            grid_sb_printf(&b, "\n");
        } else {
            grid_sb_printf(&b, "objective none\n");
        }
        grid_strbuf lb = {0};
        for (int i = 0; i < (g->substrings ? g->n_substrings : UP_METRICS_N_REFUSAL_SUBSTRINGS); i++) {
            const char *s = g->substrings ? g->substrings[i] : up_metrics_refusal_substrings[i];
            grid_sb_printf(&lb, "%zu:%s;", strlen(s), s);
        }
        char *l = grid_sb_take(&lb);
        if (!l || up_hash_bytes(l, strlen(l), hex)) b.failed = 1;
        free(l);
        grid_sb_printf(&b, "text %s substrings=%s\n", o->tok ? "yes" : "no", hex);
        grid_sb_printf(&b, "coherence %d rep_n=%d\n", o->coherence ? 1 : 0, o->rep_n);
    }
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned), free(ids);
    if (st) {
        free(b.s);
        return NULL;
    }
    char *out = grid_sb_take(&b);
    if (!out) up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    return out;
}

char *grid_cell_spec(const char *run_spec, const char *prompt_spec, const char *items_spec, int max_new_tokens,
                     char key[65]) {
    grid_strbuf b = {0};
    grid_sb_printf(&b, "%s%s%sdecode max_new=%d\n", run_spec, prompt_spec, items_spec, max_new_tokens);
    char *spec = grid_sb_take(&b);
    if (spec && up_hash_bytes(spec, strlen(spec), key)) {
        free(spec);
        return NULL;
    }
    return spec;
}

/* ---- cell files ---------------------------------------------------------------------------- */

static json_t *jnum(double v) {
    if (isnan(v)) return json_null();
    if (isinf(v)) return json_string(v > 0 ? "inf" : "-inf");
    return json_real(v);
}

static int jget(const json_t *o, const char *key, double *out) {
    const json_t *v = json_object_get(o, key);
    if (!v) return -1;
    if (json_is_null(v)) *out = NAN;
    else if (json_is_number(v)) *out = json_number_value(v);
    else if (json_is_string(v) && !strcmp(json_string_value(v), "inf")) *out = INFINITY;
    else if (json_is_string(v) && !strcmp(json_string_value(v), "-inf")) *out = -INFINITY;
    else return -1;
    return 0;
}

static void cell_file(const char *dir, const char *key, char *out, size_t size) {
    snprintf(out, size, "%s/%.2s/%s.json", dir, key, key);
}

/* A cell file ends with its own digest: the writer dumps the cell, then puts
 * ",\n \"check\": \"<SHA-256 of that dump>\"\n}" in place of the dump's closing "\n}". The reader
 * recomputes it over the same bytes, so a file changed or cut anywhere is a miss (jansson alone
 * takes a digit changed inside a number, found by tests/fuzz/fuzz_grid_cell.c). */
#define CHECK_HEAD ",\n \"check\": \""
#define CHECK_TAIL "\"\n}"
#define CHECK_BYTES (sizeof CHECK_HEAD - 1 + 64 + sizeof CHECK_TAIL - 1)

/* The cell's JSON, when text (n bytes, modified in place) is whole (its check matches), else NULL. */
static json_t *parse_checked(char *text, size_t n) {
    if (n < CHECK_BYTES + 2) return NULL;
    const size_t body = n - CHECK_BYTES; /* the dump without its "\n}" */
    if (memcmp(text + body, CHECK_HEAD, sizeof CHECK_HEAD - 1) ||
        memcmp(text + n - (sizeof CHECK_TAIL - 1), CHECK_TAIL, sizeof CHECK_TAIL - 1))
        return NULL;
    char want[UP_HASH_HEX], got[UP_HASH_HEX];
    memcpy(want, text + body + sizeof CHECK_HEAD - 1, 64);
    want[64] = '\0';
    memcpy(text + body, "\n}", 2); /* the dump as it was hashed */
    if (up_hash_bytes(text, body + 2, got) || strcmp(got, want)) return NULL;
    return json_loadb(text, body + 2, 0, NULL);
}

int grid_cell_decode(const char *bytes, size_t size, int V, const char *want_key, up_grid_cell *c) {
    char *text = malloc(size ? size : 1);
    if (!text) return -1;
    memcpy(text, bytes, size);
    json_t *o = parse_checked(text, size);
    free(text);
    if (!o) return -1;
    int ok = json_is_object(o);
    const json_t *fmt = json_object_get(o, "format"), *key = json_object_get(o, "key");
    const json_t *toks = json_object_get(o, "tokens"), *txt_j = json_object_get(o, "text");
    const json_t *match = json_object_get(o, "refusal_match");
    ok = ok && json_is_integer(fmt) && json_integer_value(fmt) == UP_GRID_FORMAT && json_is_string(key) &&
         (!want_key || !strcmp(json_string_value(key), want_key)) && json_is_array(toks) && json_is_integer(match) &&
         (json_is_null(txt_j) || json_is_string(txt_j));
    double score, p, R, lp, rep;
    ok = ok && !jget(o, "score", &score) && !jget(o, "p_refusal", &p) && !jget(o, "R", &R) && !jget(o, "logprob", &lp) &&
         !jget(o, "repetition", &rep);
    const int n = ok ? (int)json_array_size(toks) : 0;
    int32_t *ids = ok ? malloc((size_t)(n ? n : 1) * sizeof *ids) : NULL;
    ok = ok && ids;
    for (int i = 0; ok && i < n; i++) {
        const json_t *t = json_array_get(toks, (size_t)i);
        ok = json_is_integer(t) && json_integer_value(t) >= 0 && json_integer_value(t) < V;
        if (ok) ids[i] = (int32_t)json_integer_value(t);
    }
    char *txt = NULL;
    if (ok && json_is_string(txt_j)) ok = (txt = strdup(json_string_value(txt_j))) != NULL;
    if (ok) {
        c->score = score, c->p_refusal = p, c->R = R, c->logprob = lp, c->repetition = rep;
        c->tokens = ids, c->n_tokens = n, c->text = txt;
        c->refusal_match = (int)json_integer_value(match);
        c->state = UP_GRID_CACHED;
    } else {
        free(ids), free(txt);
    }
    json_decref(o);
    return ok ? 0 : -1;
}

int grid_cache_read(const char *dir, int V, up_grid_cell *c) {
    char path[PATH_MAX];
    cell_file(dir, c->key, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char *text = NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    int ok = size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1)) &&
             fread(text, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    ok = ok && !grid_cell_decode(text, (size_t)size, V, c->key, c);
    free(text);
    return ok ? 0 : -1;
}

char *grid_cell_encode(const up_grid_cell *c, const char *spec, size_t *size, up_error *err) {
    json_t *o = json_object(), *toks = json_array();
    if (!o || !toks) {
        json_decref(o), json_decref(toks);
        up_error_set(err, UP_ERR_NOMEM, "grid cache: out of memory");
        return NULL;
    }
    for (int i = 0; i < c->n_tokens; i++) json_array_append_new(toks, json_integer(c->tokens[i]));
    json_object_set_new(o, "format", json_integer(UP_GRID_FORMAT));
    json_object_set_new(o, "key", json_string(c->key));
    json_object_set_new(o, "score", jnum(c->score));
    json_object_set_new(o, "p_refusal", jnum(c->p_refusal));
    json_object_set_new(o, "R", jnum(c->R));
    json_object_set_new(o, "tokens", toks);
    json_object_set_new(o, "text", c->text ? json_string(c->text) : json_null());
    json_object_set_new(o, "refusal_match", json_integer(c->refusal_match));
    json_object_set_new(o, "logprob", jnum(c->logprob));
    json_object_set_new(o, "repetition", jnum(c->repetition));
    json_object_set_new(o, "spec", spec ? json_string(spec) : json_null());
    /* 17 significant digits: every double reads back to the same bits. */
    char *text = json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(o);
    const size_t n = text ? strlen(text) : 0; /* ends with "\n}" */
    char digest[UP_HASH_HEX], *sealed = text ? malloc(n - 2 + CHECK_BYTES + 1) : NULL;
    if (!sealed || up_hash_bytes(text, n, digest)) {
        free(text), free(sealed);
        up_error_set(err, UP_ERR_NOMEM, "grid cache: out of memory");
        return NULL;
    }
    snprintf(sealed, n - 2 + CHECK_BYTES + 1, "%.*s" CHECK_HEAD "%s" CHECK_TAIL, (int)(n - 2), text, digest);
    free(text);
    *size = n - 2 + CHECK_BYTES;
    return sealed;
}

up_status grid_cache_write(const char *dir, const up_grid_cell *c, const char *spec, up_error *err) {
    char path[PATH_MAX], sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%.2s", dir, c->key);
    cell_file(dir, c->key, path, sizeof path);
    if (up_mkdirs(sub)) return up_error_set(err, UP_ERR_IO, "grid cache: cannot create %s: %s", sub, strerror(errno));
    size_t n = 0;
    char *sealed = grid_cell_encode(c, spec, &n, err);
    if (!sealed) return err ? err->status : UP_ERR_NOMEM;
    up_status s = up_fs_write_atomic(path, sealed, n, err);
    free(sealed);
    return s;
}
