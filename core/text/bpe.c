#include "text/bpe.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/utf8.h"

/* The added tokens, in id order; "\n" is the only non-special one (as in Gemma). */
static const char *const k_added[] = {"<pad>", "<eos>", "<bos>", "<unk>",
                                      "<start_of_turn>", "<end_of_turn>", "\n"};
#define N_ADDED 7
#define SPACE_MARK "\xe2\x96\x81" /* U+2581 "▁" */

/* ---- string -> int map (open addressing, keys copied and NUL-terminated) ---- */

typedef struct {
    char **keys;     /* (cap) NULL = empty slot */
    uint32_t *lens;  /* (cap) */
    int32_t *vals;   /* (cap) */
    size_t cap, n;
} strmap;

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a: order-free of the map's state */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void strmap_free(strmap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot(const strmap *m, const char *s, size_t len) {
    size_t i = hash_bytes(s, len) & (m->cap - 1);
    while (m->keys[i] && !(m->lens[i] == len && !memcmp(m->keys[i], s, len))) i = (i + 1) & (m->cap - 1);
    return i;
}

static int32_t strmap_get(const strmap *m, const char *s, size_t len) {
    if (!m->cap) return -1;
    size_t i = strmap_slot(m, s, len);
    return m->keys[i] ? m->vals[i] : -1;
}

static int strmap_grow(strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 256;
    strmap g = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint32_t)), calloc(cap, sizeof(int32_t)), cap, m->n};
    if (!g.keys || !g.lens || !g.vals) {
        free(g.keys), free(g.lens), free(g.vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = strmap_slot(&g, m->keys[i], m->lens[i]);
        g.keys[j] = m->keys[i], g.lens[j] = m->lens[i], g.vals[j] = m->vals[i];
    }
    free(m->keys), free(m->lens), free(m->vals);
    *m = g;
    return 0;
}

/* Inserts (s, val) if s is absent; returns the key's stored copy, or NULL when out of memory.
 * *val_out gets the value now held (the old one if s was present). */
static const char *strmap_put(strmap *m, const char *s, size_t len, int32_t val, int32_t *val_out) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return NULL;
    size_t i = strmap_slot(m, s, len);
    if (!m->keys[i]) {
        char *k = malloc(len + 1);
        if (!k) return NULL;
        memcpy(k, s, len);
        k[len] = '\0';
        m->keys[i] = k, m->lens[i] = (uint32_t)len, m->vals[i] = val;
        m->n++;
    }
    if (val_out) *val_out = m->vals[i];
    return m->keys[i];
}

/* ---- pair -> (count, words holding it) map ---- */

typedef struct {
    uint64_t key;   /* left << 32 | right; PAIR_EMPTY = unused */
    int64_t count;  /* weighted occurrences now */
    int32_t *where; /* (nwhere) words that held it when counted; may repeat or be stale */
    int nwhere, capwhere;
    int touch;      /* last merge that raised its count (pushes each pair once per merge) */
    int banned;     /* longer than max_piece_chars: never merged */
} pair_slot;

#define PAIR_EMPTY UINT64_MAX

typedef struct {
    pair_slot *s; /* (cap) */
    size_t cap, n;
} pairmap;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t pair_find(const pairmap *m, uint64_t key) {
    size_t i = mix64(key) & (m->cap - 1);
    while (m->s[i].key != PAIR_EMPTY && m->s[i].key != key) i = (i + 1) & (m->cap - 1);
    return i;
}

static int pair_grow(pairmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    pair_slot *s = malloc(cap * sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < cap; i++) s[i] = (pair_slot){.key = PAIR_EMPTY, .touch = -1};
    pairmap g = {s, cap, m->n};
    for (size_t i = 0; i < m->cap; i++)
        if (m->s[i].key != PAIR_EMPTY) g.s[pair_find(&g, m->s[i].key)] = m->s[i];
    free(m->s);
    *m = g;
    return 0;
}

/* Slot index of the pair, inserted with count 0 if absent; (size_t)-1 when out of memory.
 * Indices change when the map grows, so callers re-find after inserting. */
static size_t pair_get(pairmap *m, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    if ((m->n + 1) * 2 > m->cap && pair_grow(m)) return (size_t)-1;
    size_t i = pair_find(m, key);
    if (m->s[i].key == PAIR_EMPTY) {
        m->s[i].key = key;
        m->n++;
    }
    return i;
}

static void pairmap_free(pairmap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->s[i].where);
    free(m->s);
    memset(m, 0, sizeof *m);
}

/* ---- max-heap of candidate merges, refreshed lazily ---- */

typedef struct {
    int64_t count;
    int32_t a, b;
} heap_item;

typedef struct {
    heap_item *v;
    size_t n, cap;
} heap;

/* The total order that makes training deterministic: more frequent first, then the smaller
 * (left id, right id). */
static int heap_before(const heap_item *x, const heap_item *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(heap *h, heap_item it) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        heap_item *v = realloc(h->v, cap * sizeof *v);
        if (!v) return -1;
        h->v = v, h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&it, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = it;
    return 0;
}

static heap_item heap_pop(heap *h) {
    heap_item top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && heap_before(&h->v[c + 1], &h->v[c])) c++;
        if (!heap_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

/* ---- the trainer ---- */

typedef struct {
    const char *s;   /* key in bpe->words (owned there) */
    uint32_t len;
    int64_t count;
    int32_t *sym;    /* (nsym) piece ids, after up_bpe_train */
    int nsym;
} word;

struct up_bpe {
    strmap words;     /* word text -> index into w */
    word *w;          /* (nw) in order of first appearance */
    int nw, capw;
    int64_t n_tokens;
    char *buf;        /* scratch for normalising a section */
    size_t capbuf;

    int trained;
    char **pieces;    /* (nvocab) id -> piece, NUL-terminated */
    int *nchars;      /* (nvocab) characters per piece */
    int nvocab, capvocab;
    strmap piece_ids; /* piece -> id */
    int32_t (*merges)[2]; /* (nmerges) left and right ids, in rank order */
    int nmerges, n_chars;
};

up_status up_bpe_init(up_bpe **out, up_error *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory");
    return UP_OK;
}

void up_bpe_free(up_bpe *b) {
    if (!b) return;
    for (int i = 0; i < b->nw; i++) free(b->w[i].sym);
    free(b->w);
    strmap_free(&b->words);
    free(b->buf);
    for (int i = 0; i < b->nvocab; i++) free(b->pieces[i]);
    free(b->pieces);
    free(b->nchars);
    strmap_free(&b->piece_ids);
    free(b->merges);
    free(b);
}

static up_status count_word_n(up_bpe *b, const char *s, size_t len, int64_t count, int32_t *index,
                              up_error *err) {
    if (!len) return UP_OK;
    if (len > UINT32_MAX) return up_error_set(err, UP_ERR_INVALID, "bpe: a word of %zu bytes", len);
    int32_t idx;
    const char *key = strmap_put(&b->words, s, len, b->nw, &idx);
    if (!key) return up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory counting words");
    if (idx == b->nw) {
        if (b->nw == b->capw) {
            int cap = b->capw ? b->capw * 2 : 1024;
            word *w = realloc(b->w, (size_t)cap * sizeof *w);
            if (!w) return up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory counting words");
            b->w = w, b->capw = cap;
        }
        b->w[b->nw++] = (word){.s = key, .len = (uint32_t)len};
    }
    b->w[idx].count += count;
    if (index) *index = idx;
    return UP_OK;
}

static up_status count_word(up_bpe *b, const char *s, size_t len, up_error *err) {
    b->n_tokens += len > 0;
    return count_word_n(b, s, len, 1, NULL, err);
}

/* One stretch of text between separators: spaces become "▁", and a word starts at each "▁". */
static up_status count_section(up_bpe *b, const char *text, size_t len, up_error *err) {
    if (!len) return UP_OK;
    if (len > (SIZE_MAX - 16) / 3) return up_error_set(err, UP_ERR_NOMEM, "bpe: text too long");
    size_t need = len * 3; /* a byte grows to at most 3 ("▁" or U+FFFD) */
    if (need > b->capbuf) {
        char *nb = realloc(b->buf, need);
        if (!nb) return up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory");
        b->buf = nb, b->capbuf = need;
    }
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        int k = s[i] == ' ' ? 0 : up_utf8_seq_len(s + i, len - i);
        if (s[i] == ' ') {
            memcpy(b->buf + n, SPACE_MARK, 3), n += 3, i++;
        } else if (k) {
            memcpy(b->buf + n, s + i, (size_t)k), n += (size_t)k, i += (size_t)k;
        } else {
            memcpy(b->buf + n, "\xef\xbf\xbd", 3), n += 3, i++;
        }
    }
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) { /* from 1: a leading "▁" belongs to the first word */
        if (!memcmp(b->buf + i, SPACE_MARK, 3)) {
            up_status st = count_word(b, b->buf + start, i - start, err);
            if (st) return st;
            start = i;
            i += 2;
        }
    }
    return count_word(b, b->buf + start, n - start, err);
}

up_status up_bpe_add_text(up_bpe *b, const char *text, size_t len, up_error *err) {
    if (b->trained) return up_error_set(err, UP_ERR_INVALID, "bpe: add_text after train");
    /* Cut at the added tokens (encode splits them out before BPE, so they are never part of
     * a word) and at NUL, which a JSON vocabulary key cannot hold: it stays byte fallback. */
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        size_t skip = 0;
        if (text[i] == '\0' || text[i] == '\n') {
            skip = 1;
        } else if (text[i] == '<') {
            for (int k = 0; k < N_ADDED - 1; k++) {
                size_t kl = strlen(k_added[k]);
                if (kl <= len - i && !memcmp(text + i, k_added[k], kl)) {
                    skip = kl;
                    break;
                }
            }
        }
        if (!skip) {
            i++;
            continue;
        }
        up_status st = count_section(b, text + start, i - start, err);
        if (st) return st;
        i += skip;
        start = i;
    }
    return count_section(b, text + start, len - start, err);
}

up_status up_bpe_add_file(up_bpe *b, const char *path, up_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return up_error_set(err, UP_ERR_IO, "bpe: cannot open %s: %s", path, strerror(errno));
    char *data = NULL;
    size_t n = 0, cap = 0;
    up_status st = UP_OK;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            char *d = realloc(data, cap);
            if (!d) {
                st = up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory reading %s", path);
                break;
            }
            data = d;
        }
        size_t r = fread(data + n, 1, cap - n, fp);
        n += r;
        if (r == 0) {
            if (ferror(fp)) st = up_error_set(err, UP_ERR_IO, "bpe: cannot read %s", path);
            break;
        }
    }
    fclose(fp);
    if (!st) {
        st = up_bpe_add_text(b, data, n, err);
        if (st) up_error_prefix(err, "%s", path);
    }
    free(data);
    return st;
}

/* Appends a piece (the string must not be in the vocab yet); returns its id or -1. */
static int32_t add_piece(up_bpe *b, const char *s, size_t len, int nchars) {
    if (b->nvocab == b->capvocab) {
        int cap = b->capvocab ? b->capvocab * 2 : 512;
        char **p = realloc(b->pieces, (size_t)cap * sizeof *p);
        if (!p) return -1;
        b->pieces = p;
        int *c = realloc(b->nchars, (size_t)cap * sizeof *c);
        if (!c) return -1;
        b->nchars = c, b->capvocab = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    int32_t id = b->nvocab;
    if (!strmap_put(&b->piece_ids, s, len, id, NULL)) {
        free(copy);
        return -1;
    }
    b->pieces[id] = copy, b->nchars[id] = nchars;
    b->nvocab++;
    return id;
}

typedef struct {
    const char *s;
    int len;
    int64_t count;
} char_count;

static int char_order(const void *x, const void *y) {
    const char_count *a = x, *b = y;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    int c = memcmp(a->s, b->s, (size_t)(a->len < b->len ? a->len : b->len));
    return c ? c : a->len - b->len;
}

/* Adds the pairs of word wi (weight count * sign) to the pair map; with sign > 0 also records
 * where they occur and, for pairs holding `fresh`, marks them for a heap push. */
static int count_pairs(pairmap *pm, word *w, int32_t wi, int sign, int32_t fresh, int merge_no,
                       int32_t **touched, int *ntouched, int *captouched) {
    for (int i = 0; i + 1 < w->nsym; i++) {
        size_t si = pair_get(pm, w->sym[i], w->sym[i + 1]);
        if (si == (size_t)-1) return -1;
        pair_slot *p = &pm->s[si];
        p->count += sign * w->count;
        if (sign < 0) continue;
        if (p->nwhere == 0 || p->where[p->nwhere - 1] != wi) {
            if (p->nwhere == p->capwhere) {
                int cap = p->capwhere ? p->capwhere * 2 : 4;
                int32_t *nw = realloc(p->where, (size_t)cap * sizeof *nw);
                if (!nw) return -1;
                p->where = nw, p->capwhere = cap;
            }
            p->where[p->nwhere++] = wi;
        }
        if ((w->sym[i] == fresh || w->sym[i + 1] == fresh) && p->touch != merge_no) {
            p->touch = merge_no;
            if (*ntouched == *captouched) {
                int cap = *captouched ? *captouched * 2 : 64;
                int32_t *t = realloc(*touched, (size_t)cap * 2 * sizeof *t);
                if (!t) return -1;
                *touched = t, *captouched = cap;
            }
            (*touched)[2 * *ntouched] = w->sym[i], (*touched)[2 * *ntouched + 1] = w->sym[i + 1];
            (*ntouched)++;
        }
    }
    return 0;
}

up_status up_bpe_train(up_bpe *b, const up_bpe_options *opt, up_error *err) {
    if (b->trained) return up_error_set(err, UP_ERR_INVALID, "bpe: train called twice");
    int min_freq = opt && opt->min_frequency > 0 ? opt->min_frequency : 2;
    int max_chars = !opt || opt->max_piece_chars == 0 ? 16 : opt->max_piece_chars;
    int target = opt ? opt->vocab_size : 0;
    static const char *const default_required[] = {"user", "model", NULL};
    const char *const *required = opt && opt->required ? opt->required : default_required;
    b->trained = 1;

    up_status st = UP_OK;
    strmap chars = {0};
    char_count *cc = NULL;
    int ncc = 0, capcc = 0;
    pairmap pm = {0};
    heap h = {0};
    int32_t *touched = NULL, *stamp = NULL, *where = NULL;
    int ntouched = 0, captouched = 0;
    int32_t *req_idx = NULL;
    int nreq = 0;
#define OOM() do { st = up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory training"); goto done; } while (0)

    /* Required words outnumber every other word, so their pairs are merged first. */
    while (required[nreq]) nreq++;
    req_idx = malloc((size_t)(nreq ? nreq : 1) * sizeof *req_idx);
    if (!req_idx) OOM();
    for (int i = 0; i < nreq; i++) {
        size_t rl = strlen(required[i]);
        if (!rl || strstr(required[i], " ") || strstr(required[i], "\n")) {
            st = up_error_set(err, UP_ERR_INVALID, "bpe: required word \"%s\" is empty or holds a space or newline",
                              required[i]);
            goto done;
        }
        for (size_t j = 0; j < rl;) {
            int k = up_utf8_seq_len((const unsigned char *)required[i] + j, rl - j);
            if (!k) {
                st = up_error_set(err, UP_ERR_INVALID, "bpe: required word \"%s\" is not valid UTF-8", required[i]);
                goto done;
            }
            j += (size_t)k;
        }
        if ((st = count_word_n(b, required[i], rl, b->n_tokens + 1, &req_idx[i], err))) goto done;
    }

    /* Base characters, counted over word occurrences. */
    for (int i = 0; i < b->nw; i++) {
        const word *w = &b->w[i];
        for (uint32_t j = 0; j < w->len;) {
            int k = up_utf8_seq_len((const unsigned char *)w->s + j, w->len - j);
            int32_t ci;
            if (!strmap_put(&chars, w->s + j, (size_t)k, ncc, &ci)) OOM();
            if (ci == ncc) {
                if (ncc == capcc) {
                    capcc = capcc ? capcc * 2 : 256;
                    char_count *ncp = realloc(cc, (size_t)capcc * sizeof *ncp);
                    if (!ncp) OOM();
                    cc = ncp;
                }
                cc[ncc++] = (char_count){w->s + j, k, 0};
            }
            cc[ci].count += w->count;
            j += (uint32_t)k;
        }
    }
    if (ncc) qsort(cc, (size_t)ncc, sizeof *cc, char_order);
    int base = UP_BPE_FIRST_CHAR_ID + ncc;
    if (target < base) {
        st = up_error_set(err, UP_ERR_INVALID,
                          "bpe: vocab_size %d cannot hold the %d specials, 256 byte pieces and %d corpus "
                          "characters (at least %d)", target, N_ADDED, ncc, base);
        goto done;
    }
    for (int i = 0; i < N_ADDED; i++)
        if (add_piece(b, k_added[i], strlen(k_added[i]), 1) < 0) OOM();
    for (int i = 0; i < 256; i++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", i);
        if (add_piece(b, p, 6, 1) < 0) OOM();
    }
    for (int i = 0; i < ncc; i++) {
        /* A character spelled like an added token cannot happen (those are longer than one
         * character, "\n" never reaches a word), so every id here is new. */
        if (add_piece(b, cc[i].s, (size_t)cc[i].len, 1) < 0) OOM();
    }
    b->n_chars = ncc;

    /* Words as piece ids, and the first pair counts. */
    for (int i = 0; i < b->nw; i++) {
        word *w = &b->w[i];
        w->sym = malloc((w->len ? w->len : 1) * sizeof *w->sym);
        if (!w->sym) OOM();
        w->nsym = 0;
        for (uint32_t j = 0; j < w->len;) {
            int k = up_utf8_seq_len((const unsigned char *)w->s + j, w->len - j);
            w->sym[w->nsym++] = strmap_get(&b->piece_ids, w->s + j, (size_t)k);
            j += (uint32_t)k;
        }
        if (count_pairs(&pm, w, i, +1, -1, -1, &touched, &ntouched, &captouched)) OOM();
    }
    for (size_t i = 0; i < pm.cap; i++) {
        if (pm.s[i].key == PAIR_EMPTY || pm.s[i].count <= 0) continue;
        heap_item it = {pm.s[i].count, (int32_t)(pm.s[i].key >> 32), (int32_t)(uint32_t)pm.s[i].key};
        if (heap_push(&h, it)) OOM();
    }
    stamp = malloc((size_t)(b->nw ? b->nw : 1) * sizeof *stamp);
    if (!stamp) OOM();
    for (int i = 0; i < b->nw; i++) stamp[i] = -1;

    int capmerges = 0;
    while (b->nvocab < target && h.n) {
        heap_item top = heap_pop(&h);
        size_t si = pair_find(&pm, (uint64_t)(uint32_t)top.a << 32 | (uint32_t)top.b);
        pair_slot *p = &pm.s[si];
        if (p->banned) continue;
        if (p->count != top.count) {
            /* Stale. A raised count was pushed when it rose, so only a lowered one needs a
             * fresh entry. */
            if (p->count > 0 && p->count < top.count) {
                top.count = p->count;
                if (heap_push(&h, top)) OOM();
            }
            continue;
        }
        if (top.count < min_freq) break;
        if (max_chars > 0 && b->nchars[top.a] + b->nchars[top.b] > max_chars) {
            p->banned = 1;
            continue;
        }

        /* The new piece (two merges may spell the same string: then it keeps its first id). */
        size_t la = strlen(b->pieces[top.a]), lb = strlen(b->pieces[top.b]);
        char *joined = malloc(la + lb + 1);
        if (!joined) OOM();
        memcpy(joined, b->pieces[top.a], la);
        memcpy(joined + la, b->pieces[top.b], lb + 1);
        int32_t c = strmap_get(&b->piece_ids, joined, la + lb);
        if (c < 0) c = add_piece(b, joined, la + lb, b->nchars[top.a] + b->nchars[top.b]);
        free(joined);
        if (c < 0) OOM();
        if (b->nmerges == capmerges) {
            capmerges = capmerges ? capmerges * 2 : 256;
            int32_t(*m)[2] = realloc(b->merges, (size_t)capmerges * sizeof *m);
            if (!m) OOM();
            b->merges = m;
        }
        int merge_no = b->nmerges;
        b->merges[b->nmerges][0] = top.a, b->merges[b->nmerges][1] = top.b;
        b->nmerges++;

        /* Take the pair's word list out of its slot: the map may grow (moving slots) while
         * the words are recounted. */
        where = p->where;
        int nwhere = p->nwhere;
        p->where = NULL, p->nwhere = p->capwhere = 0;
        ntouched = 0;
        for (int k = 0; k < nwhere; k++) {
            int32_t wi = where[k];
            if (stamp[wi] == merge_no) continue;
            stamp[wi] = merge_no;
            word *w = &b->w[wi];
            int has = 0;
            for (int i = 0; i + 1 < w->nsym && !has; i++) has = w->sym[i] == top.a && w->sym[i + 1] == top.b;
            if (!has) continue; /* stale entry: an earlier merge took the pair away */
            if (count_pairs(&pm, w, wi, -1, -1, merge_no, &touched, &ntouched, &captouched)) OOM();
            int n = 0;
            for (int i = 0; i < w->nsym; i++) {
                if (i + 1 < w->nsym && w->sym[i] == top.a && w->sym[i + 1] == top.b) {
                    w->sym[n++] = c;
                    i++;
                } else {
                    w->sym[n++] = w->sym[i];
                }
            }
            w->nsym = n;
            if (count_pairs(&pm, w, wi, +1, c, merge_no, &touched, &ntouched, &captouched)) OOM();
        }
        free(where);
        where = NULL;
        for (int k = 0; k < ntouched; k++) {
            size_t ti = pair_find(&pm, (uint64_t)(uint32_t)touched[2 * k] << 32 | (uint32_t)touched[2 * k + 1]);
            if (pm.s[ti].count > 0 && heap_push(&h, (heap_item){pm.s[ti].count, touched[2 * k], touched[2 * k + 1]}))
                OOM();
        }
    }
    for (int i = 0; i < nreq; i++) {
        if (b->w[req_idx[i]].nsym != 1) {
            st = up_error_set(err, UP_ERR_INVALID, "bpe: vocab_size %d leaves no room to make the required word "
                              "\"%s\" one piece", target, required[i]);
            goto done;
        }
    }
#undef OOM
done:
    free(req_idx);
    free(where);
    free(stamp);
    free(touched);
    free(h.v);
    pairmap_free(&pm);
    free(cc);
    strmap_free(&chars);
    return st;
}

void up_bpe_stats_get(const up_bpe *b, up_bpe_stats *out) {
    *out = (up_bpe_stats){b->nvocab, b->n_chars, b->nmerges, b->nw, b->n_tokens};
}

/* ---- tokenizer.json ---- */

static json_t *string_pattern(const char *s) {
    return json_pack("{s:s}", "String", s);
}

static json_t *build_json(const up_bpe *b) {
    json_t *added = json_array();
    for (int i = 0; i < N_ADDED; i++) {
        int special = i != UP_BPE_NEWLINE_ID;
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content", k_added[i],
                                               "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                               "special", special));
    }
    json_t *vocab = json_object();
    for (int i = 0; i < b->nvocab; i++) json_object_set_new(vocab, b->pieces[i], json_integer(i));
    json_t *merges = json_array();
    for (int i = 0; i < b->nmerges; i++)
        json_array_append_new(merges, json_pack("[s,s]", b->pieces[b->merges[i][0]], b->pieces[b->merges[i][1]]));
    json_t *bos_special = json_pack("{s:{s:s,s:[i],s:[s]}}", "<bos>", "id", "<bos>", "ids", UP_BPE_BOS_ID,
                                    "tokens", "<bos>");
    return json_pack(
        "{s:s, s:n, s:n, s:o,"
        " s:{s:s, s:o, s:s},"
        " s:{s:s, s:o, s:s, s:b},"
        " s:{s:s, s:[{s:{s:s,s:i}},{s:{s:s,s:i}}], s:[], s:o},"
        " s:{s:s, s:[{s:s, s:o, s:s}, {s:s}, {s:s}]},"
        " s:{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added,
        "normalizer", "type", "Replace", "pattern", string_pattern(" "), "content", SPACE_MARK,
        "pre_tokenizer", "type", "Split", "pattern", string_pattern(" "), "behavior", "MergedWithPrevious",
        "invert", 0,
        "post_processor", "type", "TemplateProcessing", "single", "SpecialToken", "id", "<bos>", "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "pair", "special_tokens", bos_special,
        "decoder", "type", "Sequence", "decoders", "type", "Replace", "pattern", string_pattern(SPACE_MARK),
        "content", " ", "type", "ByteFallback", "type", "Fuse",
        "model", "type", "BPE", "dropout", "unk_token", "<unk>", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", 1, "byte_fallback", 1, "ignore_merges", 0, "vocab", vocab, "merges",
        merges);
}

up_status up_bpe_json(const up_bpe *b, char **json, size_t *len, up_error *err) {
    *json = NULL;
    if (!b->trained || !b->nvocab) return up_error_set(err, UP_ERR_INVALID, "bpe: not trained");
    json_t *root = build_json(b);
    if (!root) return up_error_set(err, UP_ERR_NOMEM, "bpe: cannot build the tokenizer JSON");
    *json = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!*json) return up_error_set(err, UP_ERR_NOMEM, "bpe: cannot write the tokenizer JSON");
    if (len) *len = strlen(*json);
    return UP_OK;
}

up_status up_bpe_save(const up_bpe *b, const char *path, up_error *err) {
    char *json;
    size_t len;
    up_status st = up_bpe_json(b, &json, &len, err);
    if (st) return st;
    char *text = realloc(json, len + 1); /* the file ends with a newline */
    if (!text) {
        free(json);
        return up_error_set(err, UP_ERR_NOMEM, "bpe: out of memory");
    }
    text[len] = '\n';
    st = up_fs_write_atomic(path, text, len + 1, err);
    free(text);
    return st;
}
