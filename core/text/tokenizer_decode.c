/* tokenizer_decode — the decoder chain (Replace, ByteFallback, Fuse, Strip, Sequence):
 * reading its JSON config, and decoding ids by running it over the pieces. */
#include "text/tokenizer_impl.h"

#include <stdio.h>

up_status tok_add_decoder(up_tokenizer *t, const json_t *cfg, const char *where, int depth,
                          up_error *err) {
    const char *type = type_of(cfg);
    if (!json_is_object(cfg) || !type) return up_error_set(err, UP_ERR_FORMAT, "%s: no type", where);
    if (depth > 8) return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: nested too deep", where);
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(cfg, "decoders");
        if (!json_is_array(list)) return up_error_set(err, UP_ERR_FORMAT, "%s: no decoders array", where);
        size_t i;
        const json_t *x;
        json_array_foreach(list, i, x) {
            char sub[256];
            snprintf(sub, sizeof sub, "%.200s.decoders[%zu]", where, i);
            up_status st = tok_add_decoder(t, x, sub, depth + 1, err);
            if (st) return st;
        }
        return UP_OK;
    }
    dec_op op = {0};
    up_status st;
    if (!strcmp(type, "Replace")) {
        op.kind = DEC_REPLACE;
        if ((st = tok_read_pattern(cfg, where, &op.a, &op.na, err))) return st;
        if ((st = tok_read_string(cfg, "content", where, &op.b, &op.nb, err))) {
            free(op.a);
            return st;
        }
    } else if (!strcmp(type, "ByteFallback")) {
        op.kind = DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        op.kind = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        op.kind = DEC_STRIP;
        if ((st = tok_read_string(cfg, "content", where, &op.strip, &op.nstrip, err))) return st;
        const json_t *s0 = json_object_get(cfg, "start"), *s1 = json_object_get(cfg, "stop");
        uint32_t cp;
        if (!json_is_integer(s0) || !json_is_integer(s1) || json_integer_value(s0) < 0 ||
            json_integer_value(s1) < 0 || json_integer_value(s0) > 1 << 20 ||
            json_integer_value(s1) > 1 << 20 || op.nstrip == 0 ||
            up_utf8_next((const unsigned char *)op.strip, op.nstrip, 0, &cp) != (int)op.nstrip) {
            free(op.strip);
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: Strip needs one content character and start/stop counts", where);
        }
        op.start = (int)json_integer_value(s0);
        op.stop = (int)json_integer_value(s1);
    } else {
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: decoder \"%s\" is not supported (Replace, ByteFallback, Fuse, Strip, "
                            "Sequence are)",
                            where, type);
    }
    dec_op *g = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *g);
    if (!g) {
        free(op.a);
        free(op.b);
        free(op.strip);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    }
    t->dec = g;
    t->dec[t->n_dec++] = op;
    return UP_OK;
}

/* ---------------------------------------------------------------- decode */

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* "<0xHH>" -> byte value, else -1. */
static int byte_piece(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Tokens live in `buf` as spans; each decoder step rewrites (buf, toks) into (nbuf, ntoks). */
static int dec_step(const dec_op *op, const sbuf *buf, const svec *toks, sbuf *nbuf, svec *ntoks,
                    sbuf *tmp) {
    nbuf->n = 0;
    ntoks->n = 0;
    if (sbuf_reserve(nbuf, buf->n)) return -1;
    switch (op->kind) {
    case DEC_REPLACE:
        for (size_t i = 0; i < toks->n; i++) {
            size_t o = nbuf->n;
            if (tok_replace_all(buf->p + toks->p[i].off, toks->p[i].len, op->a, op->na, op->b, op->nb, tmp) ||
                sbuf_put(nbuf, tmp->p, tmp->n) || svec_push(ntoks, o, tmp->n, -1))
                return -1;
        }
        return 0;
    case DEC_FUSE: {
        for (size_t i = 0; i < toks->n; i++)
            if (sbuf_put(nbuf, buf->p + toks->p[i].off, toks->p[i].len)) return -1;
        return svec_push(ntoks, 0, nbuf->n, -1);
    }
    case DEC_BYTE_FALLBACK: {
        size_t i = 0;
        while (i < toks->n) {
            if (byte_piece(buf->p + toks->p[i].off, toks->p[i].len) < 0) {
                size_t o = nbuf->n;
                if (sbuf_put(nbuf, buf->p + toks->p[i].off, toks->p[i].len) ||
                    svec_push(ntoks, o, toks->p[i].len, -1))
                    return -1;
                i++;
                continue;
            }
            tmp->n = 0;
            size_t j = i;
            for (; j < toks->n; j++) {
                int b = byte_piece(buf->p + toks->p[j].off, toks->p[j].len);
                if (b < 0) break;
                char ch = (char)b;
                if (sbuf_put(tmp, &ch, 1)) return -1;
            }
            if (up_utf8_valid(tmp->p, tmp->n)) {
                size_t o = nbuf->n;
                if (sbuf_put(nbuf, tmp->p, tmp->n) || svec_push(ntoks, o, tmp->n, -1)) return -1;
            } else {
                /* One U+FFFD per byte token, as the Rust crate's ByteFallback decoder. */
                for (size_t k = i; k < j; k++) {
                    size_t o = nbuf->n;
                    if (sbuf_put(nbuf, "\xEF\xBF\xBD", 3) || svec_push(ntoks, o, 3, -1)) return -1;
                }
            }
            i = j;
        }
        return 0;
    }
    case DEC_STRIP:
        for (size_t i = 0; i < toks->n; i++) {
            const char *s = buf->p + toks->p[i].off;
            size_t n = toks->p[i].len, a = 0, b = n;
            for (int k = 0; k < op->start && b - a >= op->nstrip && !memcmp(s + a, op->strip, op->nstrip); k++)
                a += op->nstrip;
            for (int k = 0; k < op->stop && b - a >= op->nstrip && !memcmp(s + b - op->nstrip, op->strip, op->nstrip); k++)
                b -= op->nstrip;
            size_t o = nbuf->n;
            if (sbuf_put(nbuf, s + a, b - a) || svec_push(ntoks, o, b - a, -1)) return -1;
        }
        return 0;
    }
    return -1;
}

up_status up_tokenizer_decode_n(const up_tokenizer *t, const int32_t *ids, int n_ids, int skip_special,
                                char **text, size_t *len, up_error *err) {
    *text = NULL;
    if (len) *len = 0;
    if (n_ids < 0 || (n_ids > 0 && !ids)) return up_error_set(err, UP_ERR_INVALID, "decode: bad id array");
    sbuf a = {0}, b = {0}, tmp = {0};
    svec ta = {0}, tb = {0};
    up_status st = UP_OK;
    for (int i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->piece[id]) {
            st = up_error_set(err, UP_ERR_INVALID, "decode: token id %d (position %d) is not in the vocab (size %d)",
                              id, i, t->n_ids);
            goto out;
        }
        if (skip_special && (t->flags[id] & ID_SPECIAL)) continue;
        size_t o = a.n;
        if (sbuf_put(&a, t->piece[id], t->piece_len[id]) || svec_push(&ta, o, t->piece_len[id], -1)) goto oom;
    }
    if (!t->has_decoder) {
        /* No decoder: pieces joined by spaces, as the Rust crate does. */
        for (size_t i = 0; i < ta.n; i++)
            if ((i && sbuf_put(&b, " ", 1)) || sbuf_put(&b, a.p + ta.p[i].off, ta.p[i].len)) goto oom;
    } else {
        for (int k = 0; k < t->n_dec; k++) {
            if (dec_step(&t->dec[k], &a, &ta, &b, &tb, &tmp)) goto oom;
            sbuf x = a;
            a = b;
            b = x;
            svec y = ta;
            ta = tb;
            tb = y;
        }
        b.n = 0;
        for (size_t i = 0; i < ta.n; i++)
            if (sbuf_put(&b, a.p + ta.p[i].off, ta.p[i].len)) goto oom;
    }
    if (sbuf_put(&b, "", 0)) goto oom;
    *text = b.p;
    if (len) *len = b.n;
    b.p = NULL;
    goto out;
oom:
    st = up_error_set(err, UP_ERR_NOMEM, "decode: out of memory");
out:
    free(a.p);
    free(b.p);
    free(tmp.p);
    free(ta.p);
    free(tb.p);
    return st;
}

up_status up_tokenizer_decode(const up_tokenizer *t, const int32_t *ids, int n_ids, int skip_special,
                              char **text, up_error *err) {
    return up_tokenizer_decode_n(t, ids, n_ids, skip_special, text, NULL, err);
}
