/* tokenizer_normalize — the normalizer (Replace with a String pattern, Prepend, Sequence) and
 * the pre-tokenizer (Split with a String pattern, every behaviour, invert; Sequence):
 * reading their JSON config and applying them, with Rust `tokenizers` semantics. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem; CMake sets it for the core, other builds (fuzzers) may not */
#endif
#include "text/tokenizer_impl.h"

#include <stdio.h>

/* ---------------------------------------------------------------- config */

/* Reads {"String": s} patterns; Regex ones are refused (no regex engine here on purpose:
 * Gemma and Llama-2 need none, and a half-compatible one would encode silently wrong). */
up_status tok_read_pattern(const json_t *obj, const char *where, char **out, size_t *n,
                           up_error *err) {
    const json_t *pat = json_object_get(obj, "pattern");
    if (!json_is_object(pat)) return up_error_set(err, UP_ERR_FORMAT, "%s: no pattern object", where);
    const json_t *s = json_object_get(pat, "String");
    if (!s) {
        if (json_object_get(pat, "Regex"))
            return up_error_set(err, UP_ERR_UNSUPPORTED,
                                "%s: Regex patterns are not supported (only String)", where);
        return up_error_set(err, UP_ERR_FORMAT, "%s: pattern has neither String nor Regex", where);
    }
    if (!json_is_string(s)) return up_error_set(err, UP_ERR_FORMAT, "%s: pattern.String is not a string", where);
    *n = json_string_length(s);
    if (*n == 0) return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: empty String pattern", where);
    *out = strdup(json_string_value(s));
    return *out ? UP_OK : up_error_set(err, UP_ERR_NOMEM, "out of memory");
}

up_status tok_read_string(const json_t *obj, const char *key, const char *where, char **out,
                          size_t *n, up_error *err) {
    const json_t *s = json_object_get(obj, key);
    if (!json_is_string(s)) return up_error_set(err, UP_ERR_FORMAT, "%s: \"%s\" is not a string", where, key);
    *n = json_string_length(s);
    *out = strdup(json_string_value(s));
    return *out ? UP_OK : up_error_set(err, UP_ERR_NOMEM, "out of memory");
}

up_status tok_add_normalizer(up_tokenizer *t, const json_t *cfg, const char *where, int depth,
                             up_error *err) {
    const char *type = type_of(cfg);
    if (!json_is_object(cfg) || !type) return up_error_set(err, UP_ERR_FORMAT, "%s: no type", where);
    if (depth > 8) return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: nested too deep", where);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(cfg, "normalizers");
        if (!json_is_array(list)) return up_error_set(err, UP_ERR_FORMAT, "%s: no normalizers array", where);
        size_t i;
        const json_t *x;
        json_array_foreach(list, i, x) {
            char sub[256];
            snprintf(sub, sizeof sub, "%.200s.normalizers[%zu]", where, i);
            up_status st = tok_add_normalizer(t, x, sub, depth + 1, err);
            if (st) return st;
        }
        return UP_OK;
    }
    norm_op op = {0};
    up_status st;
    if (!strcmp(type, "Replace")) {
        op.kind = NORM_REPLACE;
        if ((st = tok_read_pattern(cfg, where, &op.a, &op.na, err))) return st;
        if ((st = tok_read_string(cfg, "content", where, &op.b, &op.nb, err))) {
            free(op.a);
            return st;
        }
    } else if (!strcmp(type, "Prepend")) {
        op.kind = NORM_PREPEND;
        if ((st = tok_read_string(cfg, "prepend", where, &op.a, &op.na, err))) return st;
    } else {
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: normalizer \"%s\" is not supported (Replace, Prepend, Sequence are)",
                            where, type);
    }
    norm_op *g = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *g);
    if (!g) {
        free(op.a);
        free(op.b);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    }
    t->norm = g;
    t->norm[t->n_norm++] = op;
    return UP_OK;
}

up_status tok_add_pretokenizer(up_tokenizer *t, const json_t *cfg, const char *where, int depth,
                               up_error *err) {
    const char *type = type_of(cfg);
    if (!json_is_object(cfg) || !type) return up_error_set(err, UP_ERR_FORMAT, "%s: no type", where);
    if (depth > 8) return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: nested too deep", where);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(cfg, "pretokenizers");
        if (!json_is_array(list)) return up_error_set(err, UP_ERR_FORMAT, "%s: no pretokenizers array", where);
        size_t i;
        const json_t *x;
        json_array_foreach(list, i, x) {
            char sub[256];
            snprintf(sub, sizeof sub, "%.200s.pretokenizers[%zu]", where, i);
            up_status st = tok_add_pretokenizer(t, x, sub, depth + 1, err);
            if (st) return st;
        }
        return UP_OK;
    }
    if (strcmp(type, "Split") != 0)
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: pre-tokenizer \"%s\" is not supported (Split, Sequence are)", where, type);
    pretok_op op = {0};
    const json_t *beh = json_object_get(cfg, "behavior");
    const char *b = json_is_string(beh) ? json_string_value(beh) : "";
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    op.behavior = -1;
    for (int i = 0; i < 5; i++)
        if (!strcmp(b, names[i])) op.behavior = i;
    if (op.behavior < 0) return up_error_set(err, UP_ERR_FORMAT, "%s: unknown Split behavior \"%s\"", where, b);
    const json_t *inv = json_object_get(cfg, "invert");
    if (inv && !json_is_boolean(inv)) return up_error_set(err, UP_ERR_FORMAT, "%s: invert is not a boolean", where);
    op.invert = json_is_true(inv);
    up_status st = tok_read_pattern(cfg, where, &op.pat, &op.npat, err);
    if (st) return st;
    pretok_op *g = realloc(t->pretok, (size_t)(t->n_pretok + 1) * sizeof *g);
    if (!g) {
        free(op.pat);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    }
    t->pretok = g;
    t->pretok[t->n_pretok++] = op;
    return UP_OK;
}

/* ---------------------------------------------------------------- apply */

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 1) return memchr(h, nd[0], hn);
    return memmem(h, hn, nd, nn);
}

/* Replaces every non-overlapping occurrence of a (left to right) with b. */
int tok_replace_all(const char *s, size_t n, const char *a, size_t na, const char *b, size_t nb,
                    sbuf *out) {
    out->n = 0;
    if (sbuf_reserve(out, n)) return -1;
    const char *p = s, *end = s + n;
    for (;;) {
        const char *m = find_bytes(p, (size_t)(end - p), a, na);
        if (!m) break;
        if (sbuf_put(out, p, (size_t)(m - p)) || sbuf_put(out, b, nb)) return -1;
        p = m + na;
    }
    return sbuf_put(out, p, (size_t)(end - p));
}

int tok_normalize(const up_tokenizer *t, const char *s, size_t n, sbuf *out, sbuf *tmp) {
    out->n = 0;
    if (sbuf_put(out, s, n)) return -1;
    for (int i = 0; i < t->n_norm; i++) {
        const norm_op *op = &t->norm[i];
        if (op->kind == NORM_REPLACE) {
            if (!find_bytes(out->p, out->n, op->a, op->na)) continue;
            if (tok_replace_all(out->p, out->n, op->a, op->na, op->b, op->nb, tmp)) return -1;
        } else {
            /* The Rust crate prepends only to non-empty text. */
            if (out->n == 0) continue;
            tmp->n = 0;
            if (sbuf_put(tmp, op->a, op->na) || sbuf_put(tmp, out->p, out->n)) return -1;
        }
        sbuf x = *out;
        *out = *tmp;
        *tmp = x;
    }
    return 0;
}

/* One Split over span sp of buf, appending the pieces to out (Rust crate semantics). */
int tok_pretokenize_split(const pretok_op *op, const char *buf, span sp, svec *out, svec *parts) {
    parts->n = 0;
    size_t pos = sp.off, end = sp.off + sp.len;
    for (;;) {
        const char *m = find_bytes(buf + pos, end - pos, op->pat, op->npat);
        if (!m) break;
        size_t mo = (size_t)(m - buf);
        if (mo > pos && svec_push(parts, pos, mo - pos, 0)) return -1;
        if (svec_push(parts, mo, op->npat, 1)) return -1;
        pos = mo + op->npat;
    }
    if (pos < end && svec_push(parts, pos, end - pos, 0)) return -1;
    if (op->invert)
        for (size_t i = 0; i < parts->n; i++) parts->p[i].tok = !parts->p[i].tok;
    size_t first = out->n;
    int prev_match = 0;
    switch (op->behavior) {
    case SPLIT_REMOVED:
        for (size_t i = 0; i < parts->n; i++)
            if (!parts->p[i].tok && svec_push(out, parts->p[i].off, parts->p[i].len, -1)) return -1;
        break;
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < parts->n; i++)
            if (svec_push(out, parts->p[i].off, parts->p[i].len, -1)) return -1;
        break;
    case SPLIT_MERGED_PREV:
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < parts->n; i++) {
            int m = parts->p[i].tok;
            int extend = op->behavior == SPLIT_MERGED_PREV ? (m && !prev_match) : (m == prev_match);
            if (extend && out->n > first) out->p[out->n - 1].len += parts->p[i].len;
            else if (svec_push(out, parts->p[i].off, parts->p[i].len, -1)) return -1;
            prev_match = m;
        }
        break;
    case SPLIT_MERGED_NEXT:
        for (size_t i = parts->n; i-- > 0;) {
            int m = parts->p[i].tok;
            if (m && !prev_match && out->n > first) {
                span *q = &out->p[out->n - 1];
                q->len += parts->p[i].len;
                q->off = parts->p[i].off;
            } else if (svec_push(out, parts->p[i].off, parts->p[i].len, -1)) {
                return -1;
            }
            prev_match = m;
        }
        for (size_t a = first, b = out->n - 1; a < b && b != (size_t)-1; a++, b--) {
            span x = out->p[a];
            out->p[a] = out->p[b];
            out->p[b] = x;
        }
        break;
    }
    /* Empty pieces are dropped. */
    size_t w = first;
    for (size_t i = first; i < out->n; i++)
        if (out->p[i].len) out->p[w++] = out->p[i];
    out->n = w;
    return 0;
}
