/* tokenizer — see tokenizer.h for the contract. Layout of this file:
 *   small containers, hashing, UTF-8
 *   the tokenizer struct and its lookup tables
 *   loading: JSON text -> (split/parallel or whole) jansson parse -> plain chunks -> tables
 *   component configs (normalizer, pre-tokenizer, decoder, added tokens)
 *   encode: added-token split -> normalize -> pre-tokenize -> BPE (priority queue)
 *   decode: decoder chain */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem; CMake sets it for the core, other builds (fuzzers) may not */
#endif
#include "text/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Ids beyond this are refused: a corrupt file must not make us allocate gigabytes. */
#define MAX_IDS (1 << 24)
/* Files larger than this take the split/parallel parse under UP_TOKENIZER_PARSE_AUTO. */
#define SPLIT_MIN_BYTES ((size_t)4 << 20)

/* ---------------------------------------------------------------- containers */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sbuf_put(sbuf *b, const void *s, size_t n) {
    if (sbuf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

typedef struct {
    int32_t *p;
    size_t n, cap;
} ivec;

static int ivec_push(ivec *v, int32_t x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p) return -1;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = x;
    return 0;
}

/* A span of some buffer; `tok` is an added-token index or -1 for plain text. */
typedef struct {
    size_t off, len;
    int32_t tok;
} span;

typedef struct {
    span *p;
    size_t n, cap;
} svec;

static int svec_push(svec *v, size_t off, size_t len, int32_t tok) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        span *p = realloc(v->p, cap * sizeof *p);
        if (!p) return -1;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = (span){off, len, tok};
    return 0;
}

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
}

/* String -> id table over strings kept in an arena, open addressing with linear probing.
 * Lookups are memory-bound, so a slot (half a cache line) carries the hash tag, the length
 * and the first 16 bytes: most pieces are compared without touching the arena at all. */
#define SLOT_PREFIX 16
typedef struct {
    uint32_t tag;
    int32_t id; /* -1 = empty */
    uint32_t off, len;
    char prefix[SLOT_PREFIX];
} strslot;

typedef struct {
    strslot *slot;
    uint32_t mask;
} strtab;

static int strtab_init(strtab *t, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    t->slot = aligned_alloc(64, cap * sizeof *t->slot);
    if (!t->slot) return -1;
    for (size_t i = 0; i < cap; i++) t->slot[i].id = -1;
    t->mask = (uint32_t)(cap - 1);
    return 0;
}

static int slot_equal(const strslot *x, const char *arena, const char *s, size_t n) {
    if (n <= SLOT_PREFIX) return memcmp(x->prefix, s, n) == 0;
    return memcmp(x->prefix, s, SLOT_PREFIX) == 0 &&
           memcmp(arena + x->off + SLOT_PREFIX, s + SLOT_PREFIX, n - SLOT_PREFIX) == 0;
}

static int32_t strtab_find_h(const strtab *t, const char *arena, const char *s, size_t n, uint64_t h) {
    uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & t->mask;
    for (;;) {
        const strslot *x = &t->slot[i];
        if (x->id < 0) return -1;
        if (x->tag == tag && x->len == n && slot_equal(x, arena, s, n)) return x->id;
        i = (i + 1) & t->mask;
    }
}

static int32_t strtab_find(const strtab *t, const char *arena, const char *s, size_t n) {
    return strtab_find_h(t, arena, s, n, hash_bytes(s, n));
}

static void strtab_prefetch(const strtab *t, uint64_t h) { __builtin_prefetch(&t->slot[(uint32_t)h & t->mask]); }

/* Inserts (arena+off, len) -> id; returns the id already holding that string, or -1. */
static int32_t strtab_insert(strtab *t, const char *arena, uint32_t off, uint32_t len, int32_t id) {
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

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at s[i] (1..4, *cp set), or -k where k >= 1 is the
 * length of the maximal invalid subpart (WHATWG: one U+FFFD replaces it). */
static int utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned b = s[i];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if (i + k >= n) return -k;
        unsigned x = s[i + k];
        if (x < lo || x > hi) return -k;
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (x & 0x3F);
    }
    *cp = c;
    return need + 1;
}

static int utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int k = utf8_next(u, n, i, &cp);
        if (k < 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

static int utf8_repair(const char *s, size_t n, sbuf *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    out->n = 0;
    if (sbuf_reserve(out, n + 16)) return -1;
    while (i < n) {
        uint32_t cp;
        int k = utf8_next(u, n, i, &cp);
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

/* Decodes one code point of already-valid UTF-8. */
static int utf8_len_valid(unsigned char b) {
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

static uint32_t utf8_cp_valid(const unsigned char *s, int len) {
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* Unicode White_Space, as Rust's char::is_whitespace (used for added tokens' lstrip/rstrip). */
static int is_unicode_ws(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Bytes of leading / trailing whitespace in valid UTF-8 text. */
static size_t ws_prefix(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int l = utf8_len_valid((unsigned char)s[i]);
        if (i + (size_t)l > n || !is_unicode_ws(utf8_cp_valid((const unsigned char *)s + i, l))) break;
        i += (size_t)l;
    }
    return i;
}

static size_t ws_suffix(const char *s, size_t n) {
    size_t i = 0, keep = 0; /* keep: end of the last non-whitespace character */
    while (i < n) {
        int l = utf8_len_valid((unsigned char)s[i]);
        if (i + (size_t)l > n) l = (int)(n - i);
        if (!is_unicode_ws(utf8_cp_valid((const unsigned char *)s + i, l))) keep = i + (size_t)l;
        i += (size_t)l;
    }
    return n - keep;
}

/* ---------------------------------------------------------------- the tokenizer */

enum { NORM_REPLACE, NORM_PREPEND };
typedef struct {
    int kind;
    char *a, *b; /* replace a -> b; prepend a */
    size_t na, nb;
} norm_op;

enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
typedef struct {
    char *pat;
    size_t npat;
    int behavior, invert;
} pretok_op;

enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP };
typedef struct {
    int kind;
    char *a, *b; /* replace a -> b */
    size_t na, nb;
    char *strip; /* the character Strip removes, as UTF-8 */
    size_t nstrip;
    int start, stop;
} dec_op;

typedef struct {
    char *content; /* NUL-terminated */
    uint32_t len;
    int32_t id;
    uint8_t special, lstrip, rstrip, normalized;
    char *norm; /* normalized content (for normalized=true tokens), matched on normalized text */
    uint32_t norm_len;
} added_tok;

/* Byte trie over added-token contents, for leftmost-longest matching. */
typedef struct {
    int32_t child, sibling, tok; /* tok: added index whose content ends here, or -1 */
    unsigned char byte;
} trie_node;

typedef struct {
    trie_node *node;
    int n, cap;
    int32_t root[256];
    int any;
} trie;

enum { ID_ADDED = 1, ID_SPECIAL = 2 };

struct up_tokenizer {
    int32_t n_ids;       /* one past the largest id */
    char *arena;         /* every model piece, NUL-terminated */
    uint32_t *model_off; /* (n_ids) model piece of each id in arena, UINT32_MAX = none */
    uint32_t *model_len; /* (n_ids) */
    const char **piece;  /* (n_ids) public piece: added content wins over the model's */
    uint32_t *piece_len; /* (n_ids) */
    uint8_t *flags;      /* (n_ids) ID_* */
    int32_t n_model;     /* pieces in model.vocab */

    strtab vocab;        /* model piece -> id */
    strtab added_t;      /* added content -> added index */
    char *added_arena;   /* added contents back to back, for added_t */

    struct mslot {
        uint64_t key; /* left << 32 | right; UINT64_MAX = empty */
        int32_t rank;
        int32_t res; /* id of the merged piece */
    } *merge;        /* (mmask + 1) */
    uint32_t mmask;
    int32_t n_merges;

    int32_t *cp_id;      /* (0x10000) model id of each BMP code point's one-char piece, or -1 */
    int32_t byte_id[256]; /* id of "<0xXX>", or -1 */

    added_tok *added;
    int n_added;
    trie raw_trie, norm_trie;

    norm_op *norm;
    int n_norm;
    pretok_op *pretok;
    int n_pretok;
    dec_op *dec;
    int n_dec, has_decoder;

    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id, bos_id, eos_id;
};

static int32_t model_id(const up_tokenizer *t, const char *s, size_t n) {
    return strtab_find(&t->vocab, t->arena, s, n);
}

static int merge_find(const up_tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *res) {
    if (!t->merge) return 0;
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint32_t i = (uint32_t)hash_u64(k) & t->mmask;
    for (;;) {
        const struct mslot *x = &t->merge[i];
        if (x->key == UINT64_MAX) return 0;
        if (x->key == k) {
            *rank = x->rank;
            *res = x->res;
            return 1;
        }
        i = (i + 1) & t->mmask;
    }
}

/* Later duplicates win, as in the Rust crate (its merge map is built in rank order). */
static void merge_insert(up_tokenizer *t, int32_t l, int32_t r, int32_t rank, int32_t res) {
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint32_t i = (uint32_t)hash_u64(k) & t->mmask;
    while (t->merge[i].key != UINT64_MAX && t->merge[i].key != k) i = (i + 1) & t->mmask;
    t->merge[i] = (struct mslot){k, rank, res};
}

static int trie_add(trie *tr, const char *s, size_t n, int32_t tok) {
    if (n == 0) return 0;
    if (!tr->any) {
        memset(tr->root, 0xff, sizeof tr->root);
        tr->any = 1;
    }
    int32_t *link = &tr->root[(unsigned char)s[0]];
    int32_t cur = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t x = *link;
        if (i > 0) {
            while (x >= 0 && tr->node[x].byte != c) x = tr->node[x].sibling;
        }
        if (x < 0) {
            if (tr->n == tr->cap) {
                int cap = tr->cap ? tr->cap * 2 : 256;
                trie_node *p = realloc(tr->node, (size_t)cap * sizeof *p);
                if (!p) return -1;
                tr->node = p;
                tr->cap = cap;
            }
            x = tr->n++;
            tr->node[x] = (trie_node){-1, -1, -1, c};
            if (i == 0) {
                *link = x;
            } else {
                tr->node[x].sibling = tr->node[cur].child;
                tr->node[cur].child = x;
            }
        }
        cur = x;
        link = &tr->node[cur].child;
    }
    /* Two added tokens with one content: the first listed wins (matches the content map). */
    if (tr->node[cur].tok < 0) tr->node[cur].tok = tok;
    return 0;
}

/* Longest added token starting at s[0]; returns its length (0: none) and *tok. */
static size_t trie_match(const trie *tr, const char *s, size_t n, int32_t *tok) {
    int32_t x = tr->root[(unsigned char)s[0]];
    size_t best = 0;
    for (size_t i = 0; x >= 0;) {
        if (tr->node[x].tok >= 0) {
            best = i + 1;
            *tok = tr->node[x].tok;
        }
        if (++i >= n) break;
        unsigned char c = (unsigned char)s[i];
        x = tr->node[x].child;
        while (x >= 0 && tr->node[x].byte != c) x = tr->node[x].sibling;
    }
    return best;
}

/* ---------------------------------------------------------------- loading: JSON text */

static int literal_char(char c) {
    return c != '"' && c != ',' && c != ':' && c != '[' && c != ']' && c != '{' && c != '}';
}

/* Copies JSON text dropping whitespace outside strings. One space is kept between two
 * literal characters so that "tr ue" or "1 2" stay invalid. Returns the new length, or
 * (size_t)-1 on an unterminated string (jansson then reports it on the original). */
static size_t json_minify(const char *in, size_t n, char *out) {
    size_t o = 0, i = 0;
    while (i < n) {
        char c = in[i];
        if (c == '"') {
            size_t j = i + 1;
            for (;;) {
                if (j >= n) return (size_t)-1;
                char d = in[j];
                if (d == '"') break;
                j += d == '\\' ? 2 : 1;
            }
            memcpy(out + o, in + i, j + 1 - i);
            o += j + 1 - i;
            i = j + 1;
        } else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
            while (i < n && (in[i] == ' ' || in[i] == '\n' || in[i] == '\r' || in[i] == '\t')) i++;
            if (o > 0 && i < n) {
                if (literal_char(out[o - 1]) && literal_char(in[i])) out[o++] = ' ';
            }
        } else {
            out[o++] = c;
            i++;
        }
    }
    return o;
}

/* json_minify over parts cut after raw newlines, in parallel. A raw newline is never inside
 * a valid JSON string, so every part starts outside one; on invalid JSON a part ends inside
 * a string and the whole minify fails (the caller falls back). Each part is minified in
 * place of its input span, then the parts are packed together (never moving data right,
 * since each part drops at least its final newline). */
static size_t json_minify_parallel(const char *in, size_t n, char *out) {
    enum { MAX_PARTS = 64 };
    size_t start[MAX_PARTS + 1], olen[MAX_PARTS] = {0};
#ifdef _OPENMP
    int parts = omp_get_max_threads() * 2;
#else
    int parts = 1;
#endif
    if (parts > MAX_PARTS) parts = MAX_PARTS;
    if (n < ((size_t)1 << 20)) parts = 1;
    int k = 0;
    start[k++] = 0;
    for (int i = 1; i < parts; i++) {
        const char *nl = memchr(in + n / (size_t)parts * (size_t)i, '\n', n - n / (size_t)parts * (size_t)i);
        size_t at = nl ? (size_t)(nl - in) + 1 : n;
        if (at > start[k - 1] && at < n) start[k++] = at;
    }
    start[k] = n;
    int failed = 0;
#pragma omp parallel for schedule(static, 1) reduction(| : failed)
    for (int i = 0; i < k; i++) {
        olen[i] = json_minify(in + start[i], start[i + 1] - start[i], out + start[i]);
        failed |= olen[i] == (size_t)-1;
    }
    if (failed) return (size_t)-1;
    size_t o = olen[0];
    for (int i = 1; i < k; i++) {
        if (olen[i] == 0) continue;
        /* Whitespace separated these parts: keep one space between two literals. */
        if (o > 0 && literal_char(out[o - 1]) && literal_char(out[start[i]])) out[o++] = ' ';
        memmove(out + o, out + start[i], olen[i]);
        o += olen[i];
    }
    return o;
}

/* Structural skipping over minified JSON; NULL on anything unexpected (the caller then
 * falls back to one jansson pass, which reports real errors). */
static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end) {
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = skip_string(p, end);
                if (!p) return NULL;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']') p++;
    return p;
}

/* In the object at p ('{'), the value of member `key` (spelled without escapes), or NULL. */
static const char *find_member(const char *p, const char *end, const char *key) {
    size_t klen = strlen(key);
    if (p >= end || *p != '{') return NULL;
    p++;
    while (p < end && *p != '}') {
        if (*p != '"') return NULL;
        const char *k = p + 1, *ke = skip_string(p, end);
        if (!ke || ke >= end || *ke != ':') return NULL;
        const char *v = ke + 1;
        if ((size_t)(ke - 1 - k) == klen && memcmp(k, key, klen) == 0) return v;
        p = skip_value(v, end);
        if (!p || p >= end) return NULL;
        if (*p == ',') p++;
    }
    return NULL;
}

typedef struct {
    const char *start, *end; /* elements, without the enclosing brackets */
    size_t first;            /* index of the first element in the container */
} chunk_span;

/* Cuts the container at p into element-aligned chunks of about `target` bytes. Returns the
 * number of chunks (0 for an empty container), -1 on anything unexpected; *after = one
 * past the container, *count = its number of elements. */
static int cut_chunks(const char *p, const char *end, size_t target, chunk_span **out,
                      const char **after, size_t *count) {
    int is_obj = *p == '{';
    char close = is_obj ? '}' : ']';
    int n = 0, cap = 16;
    chunk_span *c = malloc((size_t)cap * sizeof *c);
    if (!c) return -1;
    p++;
    size_t idx = 0;
    const char *cs = p;
    size_t cfirst = 0;
    while (p < end && *p != close) {
        if (is_obj) {
            if (*p != '"') goto bad;
            p = skip_string(p, end);
            if (!p || p >= end || *p != ':') goto bad;
            p++;
        }
        p = skip_value(p, end);
        if (!p || p >= end) goto bad;
        idx++;
        if ((size_t)(p - cs) >= target || *p == close) {
            if (n == cap) {
                chunk_span *g = realloc(c, (size_t)(cap *= 2) * sizeof *c);
                if (!g) goto bad;
                c = g;
            }
            c[n++] = (chunk_span){cs, p, cfirst};
            cfirst = idx;
            if (*p == ',') cs = p + 1;
        }
        if (*p == ',') {
            if (++p < end && *p == close) goto bad; /* a trailing comma: let jansson say so */
        } else if (*p != close) {
            goto bad;
        }
    }
    if (p >= end) goto bad;
    *after = p + 1;
    *out = c;
    *count = idx;
    return n;
bad:
    free(c);
    return -1;
}

/* Plain data pulled out of one chunk of model.vocab or model.merges (or all of it). */
typedef struct {
    sbuf strs;     /* NUL-separated strings */
    uint32_t *a;   /* vocab: key offset in strs; merges: left offset */
    int32_t *b;    /* vocab: id; merges: right offset */
    size_t n;
    size_t first;  /* index of the first element (merges: its rank) */
    up_status st;
    char msg[512];
} chunk_out;

static void chunk_free(chunk_out *c) {
    free(c->strs.p);
    free(c->a);
    free(c->b);
}

static int chunk_alloc(chunk_out *c, size_t n) {
    c->a = malloc((n ? n : 1) * sizeof *c->a);
    c->b = malloc((n ? n : 1) * sizeof *c->b);
    return c->a && c->b ? 0 : -1;
}

static up_status chunk_fail(chunk_out *c, up_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static up_status chunk_fail(chunk_out *c, up_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    return c->st = st;
}

static up_status collect_vocab(const json_t *obj, chunk_out *c) {
    if (!json_is_object(obj)) return chunk_fail(c, UP_ERR_FORMAT, "model.vocab is not an object");
    c->n = 0;
    if (chunk_alloc(c, json_object_size(obj))) return chunk_fail(c, UP_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= MAX_IDS)
            return chunk_fail(c, UP_ERR_FORMAT,
                              "model.vocab[\"%.64s\"] is not a token id in [0, %d)", key, MAX_IDS);
        c->a[c->n] = (uint32_t)c->strs.n;
        c->b[c->n] = (int32_t)json_integer_value(val);
        if (sbuf_put(&c->strs, key, strlen(key) + 1)) return chunk_fail(c, UP_ERR_NOMEM, "out of memory");
        c->n++;
    }
    return c->st = UP_OK;
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

/* What a parse leaves for building the tables. The merges stay unparsed text in the split
 * path: they are parsed and resolved in parallel once the vocab table exists. */
typedef struct {
    json_t *root;     /* everything, or the skeleton without vocab/merges contents */
    chunk_out *vocab; /* (n_vocab_chunks) */
    int n_vocab_chunks;
    const json_t *merges;   /* whole path: model.merges inside root */
    char *min;              /* split path: the minified text the spans point into */
    chunk_span *mspan;      /* split path: (n_merge_chunks) element-aligned spans of model.merges */
    int n_merge_chunks;
    size_t n_merges;        /* split path: elements in model.merges */
} parsed;

static void parsed_free(parsed *p) {
    for (int i = 0; i < p->n_vocab_chunks; i++) chunk_free(&p->vocab[i]);
    free(p->vocab);
    free(p->min);
    free(p->mspan);
    if (p->root) json_decref(p->root);
    memset(p, 0, sizeof *p);
}

/* "[" + span + "]" (or braces) parsed by jansson. */
static json_t *parse_span(const chunk_span *cs, char open, char close) {
    size_t n = (size_t)(cs->end - cs->start);
    char *buf = malloc(n + 2);
    if (!buf) return NULL;
    buf[0] = open;
    memcpy(buf + 1, cs->start, n);
    buf[n + 1] = close;
    json_error_t je;
    json_t *v = json_loadb(buf, n + 2, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    return v;
}

static up_status jansson_error(up_error *err, const json_error_t *je) {
    return up_error_set(err, UP_ERR_FORMAT, "invalid JSON at line %d column %d: %s", je->line,
                        je->column, je->text);
}

/* model.type is optional (older files) but must say BPE when present. */
static up_status check_model_type(const json_t *model, up_error *err) {
    const json_t *type = json_object_get(model, "type");
    if (!type) return UP_OK;
    if (!json_is_string(type)) return up_error_set(err, UP_ERR_FORMAT, "model.type is not a string");
    if (strcmp(json_string_value(type), "BPE") != 0)
        return up_error_set(err, UP_ERR_UNSUPPORTED, "model type \"%s\" is not supported (only BPE)",
                            json_string_value(type));
    return UP_OK;
}

static up_status parse_whole(const char *json, size_t len, parsed *p, up_error *err) {
    json_error_t je;
    p->root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!p->root) return jansson_error(err, &je);
    if (!json_is_object(p->root)) return up_error_set(err, UP_ERR_FORMAT, "top level is not an object");
    const json_t *model = json_object_get(p->root, "model");
    if (!json_is_object(model)) return up_error_set(err, UP_ERR_FORMAT, "no \"model\" object");
    p->vocab = calloc(1, sizeof *p->vocab);
    if (!p->vocab) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    p->n_vocab_chunks = 1;
    /* Type checks of the model come first so that an unsupported model type is reported as
     * such rather than as a missing merges array. */
    up_status st = check_model_type(model, err);
    if (st) return st;
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (!vocab) return up_error_set(err, UP_ERR_FORMAT, "model.vocab is missing");
    if (!merges) return up_error_set(err, UP_ERR_FORMAT, "model.merges is missing");
    if (collect_vocab(vocab, &p->vocab[0]) != UP_OK)
        return up_error_set(err, p->vocab[0].st, "%s", p->vocab[0].msg);
    if (!json_is_array(merges)) return up_error_set(err, UP_ERR_FORMAT, "model.merges is not an array");
    p->merges = merges;
    /* The vocab now lives in the chunk; drop jansson's copy early. */
    json_object_set_new((json_t *)model, "vocab", json_object());
    return UP_OK;
}

/* The fast path: minify, cut model.vocab and model.merges into chunks, parse the skeleton
 * and the chunks with jansson (chunks in parallel). Returns -1 when it cannot (anything
 * unexpected, any parse error): the caller then runs parse_whole, so errors read the same
 * on both paths. */
static int parse_split(const char *json, size_t len, parsed *p) {
    int rc = -1;
    char *min = malloc(len + 1), *skel = NULL;
    chunk_span *vc = NULL, *mc = NULL;
    if (!min) return -1;
   
    size_t mlen = json_minify_parallel(json, len, min);
    if (mlen == (size_t)-1) goto out;
    const char *end = min + mlen;
    const char *model = find_member(min, end, "model");
    if (!model) goto out;
    const char *vocab = find_member(model, end, "vocab");
    const char *merges = find_member(model, end, "merges");
    if (!vocab || !merges || *vocab != '{' || *merges != '[') goto out;
#ifdef _OPENMP
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif
    size_t target = mlen / (size_t)(threads * 8);
    if (target < ((size_t)256 << 10)) target = (size_t)256 << 10;
    const char *vend, *mend;
    size_t nvocab;
    int nv = cut_chunks(vocab, end, target, &vc, &vend, &nvocab);
    if (nv < 0) goto out;
    int nm = cut_chunks(merges, end, target, &mc, &mend, &p->n_merges);
    if (nm < 0) goto out;

    /* Skeleton: the text with both big values emptied (they may come in either order). */
    skel = malloc(mlen + 8);
    if (!skel) goto out;
    const char *a0 = vocab, *a1 = vend, *b0 = merges, *b1 = mend;
    const char *ea = "{}", *eb = "[]";
    if (b0 < a0) {
        const char *t0 = a0, *t1 = a1, *te = ea;
        a0 = b0, a1 = b1, ea = eb;
        b0 = t0, b1 = t1, eb = te;
    }
    size_t s = 0;
    memcpy(skel + s, min, (size_t)(a0 - min)), s += (size_t)(a0 - min);
    memcpy(skel + s, ea, 2), s += 2;
    memcpy(skel + s, a1, (size_t)(b0 - a1)), s += (size_t)(b0 - a1);
    memcpy(skel + s, eb, 2), s += 2;
    memcpy(skel + s, b1, (size_t)(end - b1)), s += (size_t)(end - b1);
    json_error_t je;
    /* Parsed before the threads start, so jansson's hash seed is set from one thread. */
    p->root = json_loadb(skel, s, JSON_REJECT_DUPLICATES, &je);
    if (!p->root) goto out;

    p->n_vocab_chunks = nv;
    p->vocab = calloc((size_t)(nv ? nv : 1), sizeof *p->vocab);
    if (!p->vocab) goto out;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : failed)
    for (int k = 0; k < nv; k++) {
        json_t *v = parse_span(&vc[k], '{', '}');
        if (!v) {
            failed |= 1;
            continue;
        }
        p->vocab[k].first = vc[k].first;
        if (collect_vocab(v, &p->vocab[k]) != UP_OK) failed |= 1;
        json_decref(v);
    }
    p->min = min;
    p->mspan = mc;
    p->n_merge_chunks = nm;
    min = NULL;
    mc = NULL;
    if (!failed) rc = 0;
out:
    free(min);
    free(skel);
    free(vc);
    free(mc);
    if (rc) parsed_free(p);
    return rc;
}

/* ---------------------------------------------------------------- loading: tables */

static up_status build_vocab(up_tokenizer *t, parsed *p, up_error *err) {
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
        !t->cp_id || strtab_init(&t->vocab, n))
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
            if (!utf8_valid(t->arena + off, t->model_len[id]))
                return up_error_set(err, UP_ERR_FORMAT, "model.vocab: piece of id %d is not UTF-8", id);
            if (strtab_insert(&t->vocab, t->arena, off, t->model_len[id], id) >= 0)
                return up_error_set(err, UP_ERR_FORMAT, "model.vocab: piece \"%.64s\" appears twice",
                                    t->arena + off);
            t->piece[id] = t->arena + off;
            t->piece_len[id] = t->model_len[id];
        }
        base += co->strs.n;
        chunk_free(co);
        memset(co, 0, sizeof *co);
    }
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->model_off[id] == UINT32_MAX) continue;
        const unsigned char *s = (const unsigned char *)t->arena + t->model_off[id];
        uint32_t len = t->model_len[id];
        if (len && (uint32_t)utf8_len_valid(s[0]) == len) {
            uint32_t cp = utf8_cp_valid(s, (int)len);
            if (cp < 0x10000) t->cp_id[cp] = id;
        }
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = model_id(t, name, 6);
    }
    return UP_OK;
}

static up_status build_merges(up_tokenizer *t, parsed *p, up_error *err) {
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
        json_t *arr = parse_span(&p->mspan[c], '[', ']');
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

/* ---------------------------------------------------------------- loading: components */

/* Reads {"String": s} patterns; Regex ones are refused (no regex engine here on purpose:
 * Gemma and Llama-2 need none, and a half-compatible one would encode silently wrong). */
static up_status read_pattern(const json_t *obj, const char *where, char **out, size_t *n,
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

static up_status read_string(const json_t *obj, const char *key, const char *where, char **out,
                             size_t *n, up_error *err) {
    const json_t *s = json_object_get(obj, key);
    if (!json_is_string(s)) return up_error_set(err, UP_ERR_FORMAT, "%s: \"%s\" is not a string", where, key);
    *n = json_string_length(s);
    *out = strdup(json_string_value(s));
    return *out ? UP_OK : up_error_set(err, UP_ERR_NOMEM, "out of memory");
}

static const char *type_of(const json_t *obj) {
    const json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static up_status add_normalizer(up_tokenizer *t, const json_t *cfg, const char *where, int depth,
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
            up_status st = add_normalizer(t, x, sub, depth + 1, err);
            if (st) return st;
        }
        return UP_OK;
    }
    norm_op op = {0};
    up_status st;
    if (!strcmp(type, "Replace")) {
        op.kind = NORM_REPLACE;
        if ((st = read_pattern(cfg, where, &op.a, &op.na, err))) return st;
        if ((st = read_string(cfg, "content", where, &op.b, &op.nb, err))) {
            free(op.a);
            return st;
        }
    } else if (!strcmp(type, "Prepend")) {
        op.kind = NORM_PREPEND;
        if ((st = read_string(cfg, "prepend", where, &op.a, &op.na, err))) return st;
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

static up_status add_pretokenizer(up_tokenizer *t, const json_t *cfg, const char *where, int depth,
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
            up_status st = add_pretokenizer(t, x, sub, depth + 1, err);
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
    up_status st = read_pattern(cfg, where, &op.pat, &op.npat, err);
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

static up_status add_decoder(up_tokenizer *t, const json_t *cfg, const char *where, int depth,
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
            up_status st = add_decoder(t, x, sub, depth + 1, err);
            if (st) return st;
        }
        return UP_OK;
    }
    dec_op op = {0};
    up_status st;
    if (!strcmp(type, "Replace")) {
        op.kind = DEC_REPLACE;
        if ((st = read_pattern(cfg, where, &op.a, &op.na, err))) return st;
        if ((st = read_string(cfg, "content", where, &op.b, &op.nb, err))) {
            free(op.a);
            return st;
        }
    } else if (!strcmp(type, "ByteFallback")) {
        op.kind = DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        op.kind = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        op.kind = DEC_STRIP;
        if ((st = read_string(cfg, "content", where, &op.strip, &op.nstrip, err))) return st;
        const json_t *s0 = json_object_get(cfg, "start"), *s1 = json_object_get(cfg, "stop");
        uint32_t cp;
        if (!json_is_integer(s0) || !json_is_integer(s1) || json_integer_value(s0) < 0 ||
            json_integer_value(s1) < 0 || json_integer_value(s0) > 1 << 20 ||
            json_integer_value(s1) > 1 << 20 || op.nstrip == 0 ||
            utf8_next((const unsigned char *)op.strip, op.nstrip, 0, &cp) != (int)op.nstrip) {
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

static int json_flag(const json_t *obj, const char *key, int dflt) {
    const json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* Applies the normalizer chain to s into out (out->n reset). */
static int normalize(const up_tokenizer *t, const char *s, size_t n, sbuf *out, sbuf *tmp);

static up_status read_added(up_tokenizer *t, const json_t *list, up_error *err) {
    if (!list || json_is_null(list)) return UP_OK;
    if (!json_is_array(list)) return up_error_set(err, UP_ERR_FORMAT, "added_tokens is not an array");
    size_t n = json_array_size(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || strtab_init(&t->added_t, n))
        return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *content = json_object_get(a, "content"), *id = json_object_get(a, "id");
        if (!json_is_object(a) || !json_is_string(content) || !json_is_integer(id))
            return up_error_set(err, UP_ERR_FORMAT, "added_tokens[%zu] needs an id and a content", i);
        int64_t v = json_integer_value(id);
        if (v < 0 || v >= t->n_ids)
            return up_error_set(err, UP_ERR_FORMAT, "added_tokens[%zu]: id %lld out of range", i, (long long)v);
        if (json_flag(a, "single_word", 0))
            return up_error_set(err, UP_ERR_UNSUPPORTED,
                                "added_tokens[%zu] \"%.64s\": single_word=true is not supported", i,
                                json_string_value(content));
        added_tok *x = &t->added[t->n_added++];
        x->content = strdup(json_string_value(content));
        if (!x->content) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
        x->len = (uint32_t)json_string_length(content);
        if (x->len != strlen(x->content))
            return up_error_set(err, UP_ERR_FORMAT, "added_tokens[%zu] holds a NUL byte", i);
        x->id = (int32_t)v;
        x->special = (uint8_t)json_flag(a, "special", 0);
        x->lstrip = (uint8_t)json_flag(a, "lstrip", 0);
        x->rstrip = (uint8_t)json_flag(a, "rstrip", 0);
        /* The Rust crate's default: special tokens are matched raw, others after normalizing. */
        x->normalized = (uint8_t)json_flag(a, "normalized", !x->special);
    }
    for (int i = 0; i < t->n_added; i++) {
        added_tok *x = &t->added[i];
        t->piece[x->id] = x->content;
        t->piece_len[x->id] = x->len;
        t->flags[x->id] |= ID_ADDED | (x->special ? ID_SPECIAL : 0);
    }
    return UP_OK;
}

/* The content table and tries need the normalizer (normalized tokens are matched in their
 * normalized form, as the Rust crate does), so they are built after the components. */
static up_status index_added(up_tokenizer *t, up_error *err) {
    int n = t->n_added;
    uint32_t *off = malloc((size_t)(n ? n : 1) * sizeof *off), *len = malloc((size_t)(n ? n : 1) * sizeof *len);
    sbuf all = {0}, nb = {0}, tmp = {0};
    up_status st = UP_OK;
    if (!off || !len) {
        st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        added_tok *x = &t->added[i];
        off[i] = (uint32_t)all.n;
        len[i] = x->len;
        if (sbuf_put(&all, x->content, x->len)) {
            st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        added_tok *x = &t->added[i];
        /* First listed wins on duplicates; the id -> piece map already has each. */
        strtab_insert(&t->added_t, all.p ? all.p : "", off[i], len[i], i);
        int r;
        if (x->normalized) {
            if (normalize(t, x->content, x->len, &nb, &tmp)) {
                st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
                goto out;
            }
            x->norm = malloc(nb.n + 1);
            if (!x->norm) {
                st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
                goto out;
            }
            memcpy(x->norm, nb.p ? nb.p : "", nb.n);
            x->norm[nb.n] = '\0';
            x->norm_len = (uint32_t)nb.n;
            r = trie_add(&t->norm_trie, x->norm, x->norm_len, i);
        } else {
            r = trie_add(&t->raw_trie, x->content, x->len, i);
        }
        if (r) {
            st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    /* The table points into `all`; keep it. */
    if (st == UP_OK) t->added_arena = all.p ? all.p : strdup("");
    else free(all.p);
    free(off);
    free(len);
    free(nb.p);
    free(tmp.p);
    return st;
}

static up_status read_model(up_tokenizer *t, const json_t *model, up_error *err) {
    up_status st = check_model_type(model, err);
    if (st) return st;
    const json_t *d = json_object_get(model, "dropout");
    if (d && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0.0))
        return up_error_set(err, UP_ERR_UNSUPPORTED, "model.dropout is not supported (it makes encoding random)");
    static const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_t *a = json_object_get(model, affixes[i]);
        if (a && !json_is_null(a) && !(json_is_string(a) && json_string_length(a) == 0))
            return up_error_set(err, UP_ERR_UNSUPPORTED, "model.%s is not supported", affixes[i]);
    }
    t->byte_fallback = json_flag(model, "byte_fallback", 0);
    t->fuse_unk = json_flag(model, "fuse_unk", 0);
    t->ignore_merges = json_flag(model, "ignore_merges", 0);
    return UP_OK;
}

/* A token named in tokenizer_config.json: a string or {"content": ...}. */
static int32_t config_token(const up_tokenizer *t, const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? up_tokenizer_token_id(t, json_string_value(v)) : -1;
}

static void resolve_specials(up_tokenizer *t, const json_t *root, const json_t *config) {
    t->bos_id = t->eos_id = -1;
    if (config) {
        t->bos_id = config_token(t, config, "bos_token");
        t->eos_id = config_token(t, config, "eos_token");
    }
    if (t->bos_id < 0) {
        /* TemplateProcessing {"single": [{"SpecialToken": {"id": "<bos>"}}, ...]} names it. */
        const json_t *pp = json_object_get(root, "post_processor");
        const json_t *single = json_object_get(pp, "single");
        const json_t *first = json_array_get(single, 0);
        const json_t *st = json_object_get(first, "SpecialToken");
        const json_t *name = json_object_get(st, "id");
        if (json_is_string(name)) t->bos_id = up_tokenizer_token_id(t, json_string_value(name));
    }
    static const char *bos[] = {"<bos>", "<s>", "<|begin_of_text|>"};
    static const char *eos[] = {"<eos>", "</s>", "<|end_of_text|>", "<|endoftext|>"};
    for (int i = 0; i < 3 && t->bos_id < 0; i++) t->bos_id = up_tokenizer_token_id(t, bos[i]);
    for (int i = 0; i < 4 && t->eos_id < 0; i++) t->eos_id = up_tokenizer_token_id(t, eos[i]);
}

static up_status load_parsed(up_tokenizer *t, parsed *p, const json_t *config, up_error *err) {
    up_status st;
    const json_t *root = p->root;
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return up_error_set(err, UP_ERR_FORMAT, "no \"model\" object");
    if ((st = read_model(t, model, err))) return st;
    if ((st = build_vocab(t, p, err))) return st;
    if ((st = build_merges(t, p, err))) return st;
    const json_t *x;
    if ((x = json_object_get(root, "normalizer")) && !json_is_null(x) &&
        (st = add_normalizer(t, x, "normalizer", 0, err)))
        return st;
    if ((x = json_object_get(root, "pre_tokenizer")) && !json_is_null(x) &&
        (st = add_pretokenizer(t, x, "pre_tokenizer", 0, err)))
        return st;
    if ((x = json_object_get(root, "decoder")) && !json_is_null(x)) {
        t->has_decoder = 1;
        if ((st = add_decoder(t, x, "decoder", 0, err))) return st;
    }
    if ((st = read_added(t, json_object_get(root, "added_tokens"), err))) return st;
    if ((st = index_added(t, err))) return st;
    const json_t *unk = json_object_get(model, "unk_token");
    t->unk_id = json_is_string(unk) ? model_id(t, json_string_value(unk), json_string_length(unk)) : -1;
    resolve_specials(t, root, config);
    return UP_OK;
}

static up_status load_impl(up_tokenizer **out, const char *json, size_t len, const char *name,
                           up_tokenizer_parse how, const json_t *config, up_error *err) {
    *out = NULL;
    up_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", name);
    parsed p = {0};
    up_status st;
    int split = how == UP_TOKENIZER_PARSE_SPLIT || (how == UP_TOKENIZER_PARSE_AUTO && len >= SPLIT_MIN_BYTES);
    if (split && parse_split(json, len, &p) == 0) {
        st = load_parsed(t, &p, config, err);
        parsed_free(&p);
        if (st == UP_OK) {
            *out = t;
            return UP_OK;
        }
        /* Failed after the split parse (say a piece duplicated across chunks): redo it in
         * one pass so the error reads exactly as the single-pass parse reports it. */
        up_tokenizer_free(t);
        if (!(t = calloc(1, sizeof *t))) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", name);
    }
    st = parse_whole(json, len, &p, err);
    if (st == UP_OK) st = load_parsed(t, &p, config, err);
    parsed_free(&p);
    if (st != UP_OK) {
        up_tokenizer_free(t);
        return up_error_prefix(err, "%s", name);
    }
    *out = t;
    return UP_OK;
}

up_status up_tokenizer_load_mem(up_tokenizer **out, const char *json, size_t len, const char *name,
                                up_tokenizer_parse how, up_error *err) {
    return load_impl(out, json, len, name ? name : "tokenizer.json", how, NULL, err);
}

static up_status read_file(const char *path, char **data, size_t *len, up_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return up_error_set(err, UP_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return up_error_set(err, UP_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (got != n || bad) {
        free(buf);
        return up_error_set(err, UP_ERR_IO, "%s: short read", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return UP_OK;
}

up_status up_tokenizer_load(up_tokenizer **out, const char *path, up_error *err) {
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    up_status st = read_file(path, &data, &len, err);
    if (st) return st;
    /* tokenizer_config.json beside it names BOS/EOS; it is optional, but a broken one is an
     * error rather than a silent guess. */
    json_t *config = NULL;
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path + 1) : 0;
    char *cpath = malloc(dlen + sizeof "tokenizer_config.json");
    if (!cpath) {
        free(data);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    }
    memcpy(cpath, path, dlen);
    strcpy(cpath + dlen, "tokenizer_config.json");
    struct stat sb;
    if (stat(cpath, &sb) == 0) {
        json_error_t je;
        char *ctext = NULL;
        size_t clen = 0;
        if ((st = read_file(cpath, &ctext, &clen, err))) {
            free(cpath);
            free(data);
            return st;
        }
        config = json_loadb(ctext, clen, 0, &je);
        free(ctext);
        if (!config || !json_is_object(config)) {
            st = up_error_set(err, UP_ERR_FORMAT, "%s: invalid JSON at line %d: %s", cpath, je.line,
                              config ? "not an object" : je.text);
            json_decref(config);
            free(cpath);
            free(data);
            return st;
        }
    }
    free(cpath);
    st = load_impl(out, data, len, path, UP_TOKENIZER_PARSE_AUTO, config, err);
    json_decref(config);
    free(data);
    return st;
}

up_status up_tokenizer_load_dir(up_tokenizer **out, const char *model_dir, up_error *err) {
    *out = NULL;
    size_t n = strlen(model_dir);
    char *path = malloc(n + sizeof "/tokenizer.json");
    if (!path) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    memcpy(path, model_dir, n);
    strcpy(path + n, n && model_dir[n - 1] == '/' ? "tokenizer.json" : "/tokenizer.json");
    struct stat sb;
    up_status st;
    if (stat(path, &sb) != 0)
        st = up_error_set(err, UP_ERR_IO, "no tokenizer.json in %s (needed to encode text)", model_dir);
    else
        st = up_tokenizer_load(out, path, err);
    free(path);
    return st;
}

void up_tokenizer_free(up_tokenizer *t) {
    if (!t) return;
    free(t->arena);
    free(t->model_off);
    free(t->model_len);
    free(t->piece);
    free(t->piece_len);
    free(t->flags);
    free(t->vocab.slot);
    free(t->added_t.slot);
    free(t->added_arena);
    free(t->merge);
    free(t->cp_id);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm);
    }
    free(t->added);
    free(t->raw_trie.node);
    free(t->norm_trie.node);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pretok; i++) free(t->pretok[i].pat);
    free(t->pretok);
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
        free(t->dec[i].strip);
    }
    free(t->dec);
    free(t);
}

/* ---------------------------------------------------------------- lookups */

int up_tokenizer_vocab_size(const up_tokenizer *t) { return t->n_ids; }

const char *up_tokenizer_piece(const up_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->piece[id] : NULL;
}

int32_t up_tokenizer_token_id(const up_tokenizer *t, const char *piece) {
    size_t n = strlen(piece);
    if (t->n_added && t->added_arena) {
        int32_t a = strtab_find(&t->added_t, t->added_arena, piece, n);
        if (a >= 0) return t->added[a].id;
    }
    return t->model_len ? model_id(t, piece, n) : -1;
}

int32_t up_tokenizer_bos_id(const up_tokenizer *t) { return t->bos_id; }
int32_t up_tokenizer_eos_id(const up_tokenizer *t) { return t->eos_id; }
int32_t up_tokenizer_unk_id(const up_tokenizer *t) { return t->unk_id; }

int up_tokenizer_is_special(const up_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & ID_SPECIAL);
}

int up_tokenizer_is_added(const up_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & ID_ADDED);
}

/* ---------------------------------------------------------------- encode */

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

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 1) return memchr(h, nd[0], hn);
    return memmem(h, hn, nd, nn);
}

/* Replaces every non-overlapping occurrence of a (left to right) with b. */
static int replace_all(const char *s, size_t n, const char *a, size_t na, const char *b, size_t nb,
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

static int normalize(const up_tokenizer *t, const char *s, size_t n, sbuf *out, sbuf *tmp) {
    out->n = 0;
    if (sbuf_put(out, s, n)) return -1;
    for (int i = 0; i < t->n_norm; i++) {
        const norm_op *op = &t->norm[i];
        if (op->kind == NORM_REPLACE) {
            if (!find_bytes(out->p, out->n, op->a, op->na)) continue;
            if (replace_all(out->p, out->n, op->a, op->na, op->b, op->nb, tmp)) return -1;
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

/* Splits text into plain spans and added-token spans (leftmost-longest), then applies the
 * tokens' lstrip/rstrip to the neighbouring plain spans. */
static int split_added(const up_tokenizer *t, const trie *tr, const char *s, size_t n, svec *out) {
    out->n = 0;
    size_t start = 0, i = 0;
    while (i < n) {
        int32_t tok;
        size_t m;
        if (tr->root[(unsigned char)s[i]] < 0 || !(m = trie_match(tr, s + i, n - i, &tok))) {
            i++;
            continue;
        }
        if (i > start && svec_push(out, start, i - start, -1)) return -1;
        if (svec_push(out, i, m, tok)) return -1;
        i += m;
        start = i;
    }
    if (start < n && svec_push(out, start, n - start, -1)) return -1;
    for (size_t k = 0; k < out->n; k++) {
        if (out->p[k].tok < 0) continue;
        const added_tok *a = &t->added[out->p[k].tok];
        if (a->lstrip && k > 0 && out->p[k - 1].tok < 0) {
            span *q = &out->p[k - 1];
            q->len -= ws_suffix(s + q->off, q->len);
        }
        if (a->rstrip && k + 1 < out->n && out->p[k + 1].tok < 0) {
            span *q = &out->p[k + 1];
            size_t w = ws_prefix(s + q->off, q->len);
            q->off += w;
            q->len -= w;
        }
    }
    return 0;
}

/* One Split over span sp of buf, appending the pieces to out (Rust crate semantics). */
static int split_apply(enc_ctx *c, const pretok_op *op, const char *buf, span sp, svec *out) {
    svec *parts = &c->parts;
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
        int l = utf8_len_valid(u[0]);
        uint32_t cp = utf8_cp_valid(u, l);
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
            if (split_apply(c, &t->pretok[i], s, a->p[k], b)) return nomem(c);
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
        if (normalize(t, s, n, &c->norm, &c->tmp)) return nomem(c);
        ns = c->norm.p;
        nn = c->norm.n;
    }
    if (nn == 0) return UP_OK;
    if (!t->norm_trie.any) return pretok_and_bpe(c, ns, nn);
    if (split_added(t, &t->norm_trie, ns, nn, &c->seg_norm)) return nomem(c);
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
    if (len && !utf8_valid(text, len)) {
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
        if (split_added(t, &t->raw_trie, text, len, &c.seg_raw)) {
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
            if (replace_all(buf->p + toks->p[i].off, toks->p[i].len, op->a, op->na, op->b, op->nb, tmp) ||
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
            if (utf8_valid(tmp->p, tmp->n)) {
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
