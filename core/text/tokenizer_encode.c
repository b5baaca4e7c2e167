/* tokenizer_encode — text -> ids: invalid UTF-8 repaired as WHATWG's TextDecoder does, then
 * added tokens split off the raw text, each remaining section normalized, pre-tokenized and
 * BPE-merged with a priority queue (lowest rank first, leftmost among equals). */
#include "text/tokenizer_impl.h"

/* Each maximal invalid subpart becomes one U+FFFD, as WHATWG's TextDecoder does. */
static int utf8_repair(const char *s, size_t n, sbuf *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    out->n = 0;
    if (sbuf_reserve(out, n + 16)) return -1;
    while (i < n) {
        uint32_t cp;
        int k = up_utf8_next(u, n, i, &cp);
        if (k > 0) {
            if (sbuf_put(out, s + i, (size_t)k)) return -1;
            i += (size_t)k;
        } else {
            if (sbuf_put(out, "\xEF\xBF\xBD", 3)) return -1;
            i += (size_t)(-k);
        }
    }
    return 0;
}

typedef struct {
    int32_t rank, pos, l, r, res;
} heap_ent;

typedef struct {
    const up_tokenizer *t;
    sbuf fixed, norm, tmp;
    svec seg_raw, seg_norm, pre_a, pre_b, parts;
    ivec ids;
    int32_t *sid, *prev, *next; /* (scap) BPE symbols: id, neighbours */
    uint32_t *slen;             /* (scap) bytes; 0 = merged away */
    size_t scap;
    heap_ent *heap; /* (hcap) */
    size_t hcap, hn;
    up_error *err;
} enc_ctx;

static void enc_free(enc_ctx *c) {
    free(c->fixed.p);
    free(c->norm.p);
    free(c->tmp.p);
    free(c->seg_raw.p);
    free(c->seg_norm.p);
    free(c->pre_a.p);
    free(c->pre_b.p);
    free(c->parts.p);
    free(c->sid);
    free(c->prev);
    free(c->next);
    free(c->slen);
    free(c->heap);
}

static int heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_down(heap_ent *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && heap_less(&h[l], &h[m])) m = l;
        if (l + 1 < n && heap_less(&h[l + 1], &h[m])) m = l + 1;
        if (m == i) return;
        heap_ent x = h[i];
        h[i] = h[m];
        h[m] = x;
        i = m;
    }
}

static void heap_push(enc_ctx *c, heap_ent e) {
    /* Capacity is reserved for the worst case (3 entries per symbol) before merging. */
    size_t i = c->hn++;
    c->heap[i] = e;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&c->heap[i], &c->heap[p])) break;
        heap_ent x = c->heap[i];
        c->heap[i] = c->heap[p];
        c->heap[p] = x;
        i = p;
    }
}

static int bpe_reserve(enc_ctx *c, size_t n) {
    if (n <= c->scap) return 0;
    size_t cap = c->scap ? c->scap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(c->sid, cap * sizeof *a);
    if (a) c->sid = a;
    int32_t *b = realloc(c->prev, cap * sizeof *b);
    if (b) c->prev = b;
    int32_t *d = realloc(c->next, cap * sizeof *d);
    if (d) c->next = d;
    uint32_t *e = realloc(c->slen, cap * sizeof *e);
    if (e) c->slen = e;
    heap_ent *h = realloc(c->heap, 3 * cap * sizeof *h);
    if (h) c->heap = h;
    if (!a || !b || !d || !e || !h) return -1;
    c->scap = cap;
    c->hcap = 3 * cap;
    return 0;
}

static up_status nomem(enc_ctx *c) { return up_error_set(c->err, UP_ERR_NOMEM, "encode: out of memory"); }

/* BPE over one pre-token (valid UTF-8): one symbol per character (or per byte via
 * byte_fallback, or <unk>), then merges lowest rank first, leftmost among equals. */
static up_status bpe_word(enc_ctx *c, const char *w, size_t n) {
    const up_tokenizer *t = c->t;
    if (t->ignore_merges) {
        int32_t id = model_id(t, w, n);
        if (id >= 0) return ivec_push(&c->ids, id) ? nomem(c) : UP_OK;
    }
    if (bpe_reserve(c, n)) return nomem(c);
    int ns = 0, last_unk = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char *u = (const unsigned char *)w + i;
        uint32_t cp;
        int l = utf8_char(w, n, i, &cp);
        int32_t id = cp < 0x10000 ? t->cp_id[cp] : model_id(t, w + i, (size_t)l);
        if (id >= 0) {
            c->sid[ns] = id;
            c->slen[ns++] = (uint32_t)l;
            last_unk = 0;
        } else {
            int bytes_ok = t->byte_fallback;
            for (int k = 0; k < l && bytes_ok; k++) bytes_ok = t->byte_id[u[k]] >= 0;
            if (bytes_ok) {
                for (int k = 0; k < l; k++) {
                    c->sid[ns] = t->byte_id[u[k]];
                    c->slen[ns++] = 1;
                }
                last_unk = 0;
            } else if (t->unk_id < 0) {
                return up_error_set(c->err, UP_ERR_INVALID,
                                    "encode: character U+%04X is not in the vocab and the tokenizer has "
                                    "no unk_token%s",
                                    (unsigned)cp, t->byte_fallback ? " nor its <0xXX> byte pieces" : "");
            } else if (t->fuse_unk && last_unk) {
                c->slen[ns - 1] += (uint32_t)l;
            } else {
                c->sid[ns] = t->unk_id;
                c->slen[ns++] = (uint32_t)l;
                last_unk = 1;
            }
        }
        i += (size_t)l;
    }
    for (int k = 0; k < ns; k++) {
        c->prev[k] = k - 1;
        c->next[k] = k + 1 < ns ? k + 1 : -1;
    }
    c->hn = 0;
    for (int k = 0; k + 1 < ns; k++) {
        heap_ent e = {0, k, c->sid[k], c->sid[k + 1], 0};
        if (merge_find(t, e.l, e.r, &e.rank, &e.res)) c->heap[c->hn++] = e;
    }
    for (size_t k = c->hn / 2; k-- > 0;) heap_down(c->heap, c->hn, k);
    while (c->hn) {
        heap_ent e = c->heap[0];
        c->heap[0] = c->heap[--c->hn];
        heap_down(c->heap, c->hn, 0);
        int32_t p = e.pos, q = c->next[p];
        /* Entries go stale when a neighbour merged; a merged piece is always longer, so an
         * id mismatch is exactly staleness. */
        if (!c->slen[p] || q < 0 || c->sid[p] != e.l || c->sid[q] != e.r) continue;
        c->sid[p] = e.res;
        c->slen[p] += c->slen[q];
        c->slen[q] = 0;
        c->next[p] = c->next[q];
        if (c->next[q] >= 0) c->prev[c->next[q]] = p;
        heap_ent f;
        int32_t a = c->prev[p];
        if (a >= 0 && merge_find(t, c->sid[a], c->sid[p], &f.rank, &f.res)) {
            f.pos = a, f.l = c->sid[a], f.r = c->sid[p];
            heap_push(c, f);
        }
        int32_t b = c->next[p];
        if (b >= 0 && merge_find(t, c->sid[p], c->sid[b], &f.rank, &f.res)) {
            f.pos = p, f.l = c->sid[p], f.r = c->sid[b];
            heap_push(c, f);
        }
    }
    for (int32_t k = ns ? 0 : -1; k >= 0; k = c->next[k])
        if (ivec_push(&c->ids, c->sid[k])) return nomem(c);
    return UP_OK;
}

static up_status pretok_and_bpe(enc_ctx *c, const char *s, size_t n) {
    const up_tokenizer *t = c->t;
    if (t->n_pretok == 0) return bpe_word(c, s, n);
    svec *a = &c->pre_a, *b = &c->pre_b;
    a->n = 0;
    if (svec_push(a, 0, n, -1)) return nomem(c);
    for (int i = 0; i < t->n_pretok; i++) {
        b->n = 0;
        for (size_t k = 0; k < a->n; k++)
            if (tok_pretokenize_split(&t->pretok[i], s, a->p[k], b, &c->parts)) return nomem(c);
        svec x = *a;
        *a = *b;
        *b = x;
    }
    for (size_t k = 0; k < a->n; k++) {
        up_status st = bpe_word(c, s + a->p[k].off, a->p[k].len);
        if (st) return st;
    }
    return UP_OK;
}

static up_status encode_plain(enc_ctx *c, const char *s, size_t n) {
    const up_tokenizer *t = c->t;
    if (n == 0) return UP_OK;
    const char *ns = s;
    size_t nn = n;
    if (t->n_norm) {
        if (tok_normalize(t, s, n, &c->norm, &c->tmp)) return nomem(c);
        ns = c->norm.p;
        nn = c->norm.n;
    }
    if (nn == 0) return UP_OK;
    if (!t->norm_trie.any) return pretok_and_bpe(c, ns, nn);
    if (tok_split_added(t, &t->norm_trie, ns, nn, &c->seg_norm)) return nomem(c);
    for (size_t k = 0; k < c->seg_norm.n; k++) {
        span sp = c->seg_norm.p[k];
        up_status st = UP_OK;
        if (sp.tok >= 0) {
            if (ivec_push(&c->ids, t->added[sp.tok].id)) return nomem(c);
        } else if (sp.len) {
            st = pretok_and_bpe(c, ns + sp.off, sp.len);
        }
        if (st) return st;
    }
    return UP_OK;
}

up_status up_tokenizer_encode(const up_tokenizer *t, const char *text, size_t len, int32_t **ids,
                              int *n_ids, up_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return up_error_set(err, UP_ERR_INVALID, "encode: NULL text");
    if (len > (size_t)INT32_MAX / 4) return up_error_set(err, UP_ERR_INVALID, "encode: text of %zu bytes is too long", len);
    enc_ctx c = {0};
    c.t = t;
    c.err = err;
    up_status st = UP_OK;
    if (len && !up_utf8_valid(text, len)) {
        if (utf8_repair(text, len, &c.fixed)) {
            st = nomem(&c);
            goto out;
        }
        text = c.fixed.p;
        len = c.fixed.n;
    }
    if (!t->raw_trie.any) {
        st = encode_plain(&c, text, len);
    } else {
        if (tok_split_added(t, &t->raw_trie, text, len, &c.seg_raw)) {
            st = nomem(&c);
            goto out;
        }
        for (size_t k = 0; k < c.seg_raw.n && !st; k++) {
            span sp = c.seg_raw.p[k];
            if (sp.tok >= 0) {
                if (ivec_push(&c.ids, t->added[sp.tok].id)) st = nomem(&c);
            } else {
                st = encode_plain(&c, text + sp.off, sp.len);
            }
        }
    }
    if (st == UP_OK) {
        if (!c.ids.p && ivec_push(&c.ids, 0) == 0) c.ids.n = 0; /* non-NULL even when empty */
        if (!c.ids.p) {
            st = nomem(&c);
        } else if (c.ids.n > (size_t)INT32_MAX) {
            st = up_error_set(err, UP_ERR_INVALID, "encode: too many tokens");
        } else {
            *ids = c.ids.p;
            *n_ids = (int)c.ids.n;
            c.ids.p = NULL;
        }
    }
out:
    free(c.ids.p);
    enc_free(&c);
    return st;
}
