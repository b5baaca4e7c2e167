/* tokenizer_vocab — the model's tables (tokenizer_impl.h): the string -> id table (strtab,
 * also used for added tokens), the pieces by id with the one-character and <0xXX> shortcuts
 * the encoder uses, and the merge table. Built from what tokenizer_json.c parsed; the
 * merges are resolved against the vocab table in parallel chunks. */
#include "text/tokenizer_impl.h"

#include <stdio.h>

/* ---------------------------------------------------------------- string table */

int tok_strtab_init(strtab *t, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    t->slot = aligned_alloc(64, cap * sizeof *t->slot);
    if (!t->slot) return -1;
    for (size_t i = 0; i < cap; i++) t->slot[i].id = -1;
    t->mask = (uint32_t)(cap - 1);
    return 0;
}

/* Inserts (arena+off, len) -> id; returns the id already holding that string, or -1. */
int32_t tok_strtab_insert(strtab *t, const char *arena, uint32_t off, uint32_t len, int32_t id) {
    const char *s = arena + off;
    uint64_t h = hash_bytes(s, len);
    uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & t->mask;
    for (;;) {
        strslot *x = &t->slot[i];
        if (x->id < 0) {
            x->tag = tag;
            x->id = id;
            x->off = off;
            x->len = len;
            memcpy(x->prefix, s, len < SLOT_PREFIX ? len : SLOT_PREFIX);
            return -1;
        }
        if (x->tag == tag && x->len == len && slot_equal(x, arena, s, len)) return x->id;
        i = (i + 1) & t->mask;
    }
}

/* ---------------------------------------------------------------- vocab */

up_status tok_build_vocab(up_tokenizer *t, parsed *p, up_error *err) {
    size_t n = 0, bytes = 0;
    int32_t max_id = -1;
    for (int c = 0; c < p->n_vocab_chunks; c++) {
        n += p->vocab[c].n;
        bytes += p->vocab[c].strs.n;
        for (size_t i = 0; i < p->vocab[c].n; i++)
            if (p->vocab[c].b[i] > max_id) max_id = p->vocab[c].b[i];
    }
    /* Added tokens may extend the id space; their ids are checked when they are read. */
    const json_t *added = json_object_get(p->root, "added_tokens");
    if (json_is_array(added)) {
        size_t i;
        const json_t *a;
        json_array_foreach(added, i, a) {
            const json_t *id = json_object_get(a, "id");
            if (json_is_integer(id) && json_integer_value(id) >= 0 &&
                json_integer_value(id) < MAX_IDS && json_integer_value(id) > max_id)
                max_id = (int32_t)json_integer_value(id);
        }
    }
    t->n_ids = max_id + 1;
    t->n_model = (int32_t)n;
    size_t ni = (size_t)(t->n_ids ? t->n_ids : 1);
    t->arena = malloc(bytes ? bytes : 1);
    t->model_off = malloc(ni * sizeof *t->model_off);
    t->model_len = calloc(ni, sizeof *t->model_len);
    t->piece = calloc(ni, sizeof *t->piece);
    t->piece_len = calloc(ni, sizeof *t->piece_len);
    t->flags = calloc(ni, 1);
    t->cp_id = malloc(0x10000 * sizeof *t->cp_id);
    if (!t->arena || !t->model_off || !t->model_len || !t->piece || !t->piece_len || !t->flags ||
        !t->cp_id || tok_strtab_init(&t->vocab, n))
        return up_error_set(err, UP_ERR_NOMEM, "out of memory for a vocab of %zu pieces", n);
    memset(t->model_off, 0xff, ni * sizeof *t->model_off);
    memset(t->cp_id, 0xff, 0x10000 * sizeof *t->cp_id);
    size_t base = 0;
    for (int c = 0; c < p->n_vocab_chunks; c++) {
        chunk_out *co = &p->vocab[c];
        if (co->strs.n) memcpy(t->arena + base, co->strs.p, co->strs.n); /* an empty chunk has no buffer */
        for (size_t i = 0; i < co->n; i++) {
            int32_t id = co->b[i];
            uint32_t off = (uint32_t)(base + co->a[i]);
            if (t->model_off[id] != UINT32_MAX)
                return up_error_set(err, UP_ERR_FORMAT,
                                    "model.vocab: id %d is given to both \"%.64s\" and \"%.64s\"", id,
                                    t->arena + t->model_off[id], t->arena + off);
            t->model_off[id] = off;
            t->model_len[id] = (uint32_t)strlen(t->arena + off);
            if (!up_utf8_valid(t->arena + off, t->model_len[id]))
                return up_error_set(err, UP_ERR_FORMAT, "model.vocab: piece of id %d is not UTF-8", id);
            if (tok_strtab_insert(&t->vocab, t->arena, off, t->model_len[id], id) >= 0)
                return up_error_set(err, UP_ERR_FORMAT, "model.vocab: piece \"%.64s\" appears twice",
                                    t->arena + off);
            t->piece[id] = t->arena + off;
            t->piece_len[id] = t->model_len[id];
        }
        base += co->strs.n;
        tok_chunk_free(co);
        memset(co, 0, sizeof *co);
    }
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->model_off[id] == UINT32_MAX) continue;
        const unsigned char *s = (const unsigned char *)t->arena + t->model_off[id];
        uint32_t len = t->model_len[id];
        uint32_t cp;
        if (len && up_utf8_next(s, len, 0, &cp) == (int)len && cp < 0x10000) t->cp_id[cp] = id;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = model_id(t, name, 6);
    }
    return UP_OK;
}

/* ---------------------------------------------------------------- merges */

/* Later duplicates win, as in the Rust crate (its merge map is built in rank order). */
static void merge_insert(up_tokenizer *t, int32_t l, int32_t r, int32_t rank, int32_t res) {
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint32_t i = (uint32_t)hash_u64(k) & t->mmask;
    while (t->merge[i].key != UINT64_MAX && t->merge[i].key != k) i = (i + 1) & t->mmask;
    t->merge[i] = (struct mslot){k, rank, res};
}

typedef struct {
    up_status st;
    char msg[512];
} chunk_status;

/* One merge rule's strings: left, right and their concatenation (at cat + off). */
typedef struct {
    const char *l, *r;
    size_t nl, nr, off;
    uint64_t hl, hr, hc;
} merge_q;

/* Resolves the merges in arr (global ranks first, first + 1, ...) to (left, right, result)
 * ids in tri. Reads the vocab table only, so chunks can run in parallel. The three lookups
 * per rule are cache misses; batching them with prefetches lets the misses overlap. */
static void resolve_merges(const up_tokenizer *t, const json_t *arr, size_t first, int32_t *tri /* (n, 3) */,
                           chunk_status *cs) {
    enum { BATCH = 16 };
    merge_q q[BATCH];
    sbuf cat = {0};
    size_t n = json_array_size(arr);
    cs->st = UP_OK;
    for (size_t i0 = 0; i0 < n && cs->st == UP_OK; i0 += BATCH) {
        size_t nb = n - i0 < BATCH ? n - i0 : BATCH, got = 0;
        cat.n = 0;
        for (size_t j = 0; j < nb; j++, got++) {
            size_t i = i0 + j;
            const json_t *m = json_array_get(arr, i);
            merge_q *e = &q[j];
            if (json_is_string(m)) {
                /* Old format "a b": exactly one space, as the Rust crate requires; pieces
                 * with a space need the pair format. */
                const char *sv = json_string_value(m);
                const char *sp = strchr(sv, ' ');
                if (!sp || strchr(sp + 1, ' ')) {
                    cs->st = UP_ERR_FORMAT;
                    snprintf(cs->msg, sizeof cs->msg,
                             "model.merges[%zu] \"%.64s\" is not two pieces separated by one space", first + i, sv);
                    break;
                }
                e->l = sv;
                e->nl = (size_t)(sp - sv);
                e->r = sp + 1;
                e->nr = strlen(e->r);
            } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                       json_is_string(json_array_get(m, 1))) {
                e->l = json_string_value(json_array_get(m, 0));
                e->r = json_string_value(json_array_get(m, 1));
                e->nl = strlen(e->l);
                e->nr = strlen(e->r);
            } else {
                cs->st = UP_ERR_FORMAT;
                snprintf(cs->msg, sizeof cs->msg, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", first + i);
                break;
            }
            e->off = cat.n;
            if (sbuf_put(&cat, e->l, e->nl) || sbuf_put(&cat, e->r, e->nr)) {
                cs->st = UP_ERR_NOMEM;
                snprintf(cs->msg, sizeof cs->msg, "out of memory");
                break;
            }
            e->hl = hash_bytes(e->l, e->nl);
            e->hr = hash_bytes(e->r, e->nr);
            e->hc = hash_bytes(cat.p + e->off, e->nl + e->nr);
            strtab_prefetch(&t->vocab, e->hl);
            strtab_prefetch(&t->vocab, e->hr);
            strtab_prefetch(&t->vocab, e->hc);
        }
        /* Rules before a malformed one are still checked, so the first error is reported. */
        for (size_t j = 0; j < got; j++) {
            const merge_q *e = &q[j];
            int32_t *x = tri + 3 * (first + i0 + j);
            x[0] = strtab_find_h(&t->vocab, t->arena, e->l, e->nl, e->hl);
            x[1] = strtab_find_h(&t->vocab, t->arena, e->r, e->nr, e->hr);
            x[2] = strtab_find_h(&t->vocab, t->arena, cat.p + e->off, e->nl + e->nr, e->hc);
            if (x[0] < 0 || x[1] < 0 || x[2] < 0) {
                cs->st = UP_ERR_FORMAT;
                if (x[0] < 0 || x[1] < 0)
                    snprintf(cs->msg, sizeof cs->msg, "model.merges[%zu]: \"%.64s\" is not in the vocab", first + i0 + j,
                             x[0] < 0 ? e->l : e->r);
                else
                    snprintf(cs->msg, sizeof cs->msg, "model.merges[%zu]: \"%.*s\" is not in the vocab", first + i0 + j,
                             (int)(e->nl + e->nr < 64 ? e->nl + e->nr : 64), cat.p + e->off);
                break;
            }
        }
    }
    free(cat.p);
}

up_status tok_build_merges(up_tokenizer *t, parsed *p, up_error *err) {
    int split = p->merges == NULL;
    size_t n = split ? p->n_merges : json_array_size(p->merges);
    int nc = split ? p->n_merge_chunks : 1;
    if (n >= (size_t)INT32_MAX / 2) return up_error_set(err, UP_ERR_FORMAT, "too many merges");
    t->n_merges = (int32_t)n;
    size_t cap = 16;
    while (cap < n * 2 + 1) cap *= 2;
    t->merge = malloc(cap * sizeof *t->merge);
    int32_t *tri = malloc((n ? n : 1) * 3 * sizeof *tri); /* (n, 3) left, right, result */
    chunk_status *cs = calloc((size_t)(nc ? nc : 1), sizeof *cs);
    up_status st = UP_OK;
    if (!t->merge || !tri || !cs) {
        st = up_error_set(err, UP_ERR_NOMEM, "out of memory for %zu merges", n);
        goto out;
    }
    for (size_t i = 0; i < cap; i++) t->merge[i].key = UINT64_MAX;
    t->mmask = (uint32_t)(cap - 1);
    /* Parsing a chunk and resolving its pieces read nothing shared but the vocab table. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < nc; c++) {
        if (!split) {
            resolve_merges(t, p->merges, 0, tri, &cs[c]);
            continue;
        }
        json_t *arr = tok_parse_span(&p->mspan[c], '[', ']');
        size_t want = (c + 1 < nc ? p->mspan[c + 1].first : n) - p->mspan[c].first;
        if (arr && json_array_size(arr) != want) {
            /* Never index tri by a count the scanner and jansson disagree on. */
            json_decref(arr);
            arr = NULL;
        }
        if (!arr) {
            /* The caller redoes the load in one pass, which reports the error properly. */
            cs[c].st = UP_ERR_FORMAT;
            snprintf(cs[c].msg, sizeof cs[c].msg, "model.merges: invalid JSON");
            continue;
        }
        resolve_merges(t, arr, p->mspan[c].first, tri, &cs[c]);
        json_decref(arr);
    }
    for (int c = 0; c < nc; c++)
        if (cs[c].st != UP_OK) {
            st = up_error_set(err, cs[c].st, "%s", cs[c].msg);
            goto out;
        }
    for (size_t i = 0; i < n; i++) merge_insert(t, tri[3 * i], tri[3 * i + 1], (int32_t)i, tri[3 * i + 2]);
out:
    free(tri);
    free(cs);
    return st;
}
