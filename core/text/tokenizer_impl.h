/* tokenizer_impl — the tokenizer's private implementation header, as ggml keeps ggml-impl.h:
 * the up_tokenizer struct, its tables and the internal functions one of the tokenizer's files
 * calls in another. It is NOT part of the public API: only core/text/tokenizer*.c include it;
 * everything else uses text/tokenizer.h, whose contract (ownership, errors, threads) covers
 * all of this. Helpers the encoder's inner loops call (containers, hashing, table lookups)
 * are static inline here; functions one file defines for the others carry the prefix tok_.
 *
 * The files, one concept each:
 *   tokenizer.c            load (file, directory, memory), free, lookups; model options, BOS/EOS
 *   tokenizer_json.c       JSON text -> `parsed`: one jansson pass, or minify + a chunked
 *                          parallel parse of model.vocab and model.merges
 *   tokenizer_vocab.c      the tables: piece -> id (strtab), id -> piece, merges
 *   tokenizer_added.c      added tokens: reading them, their tries, the leftmost-longest split
 *   tokenizer_normalize.c  the normalizer and the Split pre-tokenizer: reading and applying them
 *   tokenizer_encode.c     encode: UTF-8 repair -> added-token split -> normalize ->
 *                          pre-tokenize -> BPE (priority queue)
 *   tokenizer_decode.c     the decoder chain: reading and running it
 *
 * Errors: functions returning up_status fill up_error as the public ones do; int-returning
 * ones give 0, or -1 when out of memory. */
#ifndef UP_TOKENIZER_IMPL_H
#define UP_TOKENIZER_IMPL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/utf8.h"
#include "text/tokenizer.h"

/* Ids beyond this are refused: a corrupt file must not make us allocate gigabytes. */
#define MAX_IDS (1 << 24)

/* ---------------------------------------------------------------- containers */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static inline int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int sbuf_put(sbuf *b, const void *s, size_t n) {
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

static inline int ivec_push(ivec *v, int32_t x) {
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

static inline int svec_push(svec *v, size_t off, size_t len, int32_t tok) {
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

static inline uint64_t hash_bytes(const char *s, size_t n) {
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

static inline uint64_t hash_u64(uint64_t x) {
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

/* Sized for n strings (at most half full); -1 when out of memory. */
int tok_strtab_init(strtab *t, size_t n);

static inline int slot_equal(const strslot *x, const char *arena, const char *s, size_t n) {
    if (n <= SLOT_PREFIX) return memcmp(x->prefix, s, n) == 0;
    return memcmp(x->prefix, s, SLOT_PREFIX) == 0 &&
           memcmp(arena + x->off + SLOT_PREFIX, s + SLOT_PREFIX, n - SLOT_PREFIX) == 0;
}

static inline int32_t strtab_find_h(const strtab *t, const char *arena, const char *s, size_t n, uint64_t h) {
    uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & t->mask;
    for (;;) {
        const strslot *x = &t->slot[i];
        if (x->id < 0) return -1;
        if (x->tag == tag && x->len == n && slot_equal(x, arena, s, n)) return x->id;
        i = (i + 1) & t->mask;
    }
}

static inline int32_t strtab_find(const strtab *t, const char *arena, const char *s, size_t n) {
    return strtab_find_h(t, arena, s, n, hash_bytes(s, n));
}

static inline void strtab_prefetch(const strtab *t, uint64_t h) { __builtin_prefetch(&t->slot[(uint32_t)h & t->mask]); }

/* Inserts (arena+off, len) -> id; returns the id already holding that string, or -1. */
int32_t tok_strtab_insert(strtab *t, const char *arena, uint32_t off, uint32_t len, int32_t id);

/* ---------------------------------------------------------------- UTF-8 */

/* One character of text the tokenizer already knows is valid UTF-8 (encode repairs its input
 * first; vocab pieces are checked on load): its length, *cp its code point. A malformed
 * sequence, which callers never pass, reads as U+FFFD over its maximal invalid subpart, so a
 * loop over it still advances. */
static inline int utf8_char(const char *s, size_t n, size_t i, uint32_t *cp) {
    int k = up_utf8_next((const unsigned char *)s, n, i, cp);
    if (k > 0) return k;
    *cp = 0xFFFD;
    return -k;
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

static inline int32_t model_id(const up_tokenizer *t, const char *s, size_t n) {
    return strtab_find(&t->vocab, t->arena, s, n);
}

static inline int merge_find(const up_tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *res) {
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

/* ---------------------------------------------------------------- loading: parsed JSON */

/* Reads a boolean member, dflt when absent or not a boolean. */
static inline int json_flag(const json_t *obj, const char *key, int dflt) {
    const json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static inline const char *type_of(const json_t *obj) {
    const json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

typedef struct {
    const char *start, *end; /* elements, without the enclosing brackets */
    size_t first;            /* index of the first element in the container */
} chunk_span;

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

/* tokenizer_json.c: the two parses. tok_parse_whole reports errors (jansson's, or a missing
 * or mistyped model.vocab / model.merges); tok_parse_split returns -1 on anything it does not
 * recognise, and the caller then runs tok_parse_whole so that errors read the same. */
up_status tok_parse_whole(const char *json, size_t len, parsed *p, up_error *err);
int tok_parse_split(const char *json, size_t len, parsed *p);
void tok_parsed_free(parsed *p);
void tok_chunk_free(chunk_out *c);
/* "[" + span + "]" (or braces) parsed by jansson; NULL on any error. */
json_t *tok_parse_span(const chunk_span *cs, char open, char close);
/* model.type is optional (older files) but must say BPE when present. */
up_status tok_check_model_type(const json_t *model, up_error *err);

/* tokenizer_vocab.c: the model's tables, from what a parse left (frees the vocab chunks). */
up_status tok_build_vocab(up_tokenizer *t, parsed *p, up_error *err);
up_status tok_build_merges(up_tokenizer *t, parsed *p, up_error *err);

/* tokenizer_added.c: tok_read_added reads added_tokens (after the vocab: it may extend the
 * ids); tok_index_added builds the content table and tries (after the normalizer).
 * tok_split_added cuts s into plain spans (tok -1) and added-token spans, leftmost-longest,
 * applying the tokens' lstrip/rstrip to their plain neighbours. */
up_status tok_read_added(up_tokenizer *t, const json_t *list, up_error *err);
up_status tok_index_added(up_tokenizer *t, up_error *err);
int tok_split_added(const up_tokenizer *t, const trie *tr, const char *s, size_t n, svec *out);

/* tokenizer_normalize.c: components read from their JSON config (`where` names it in errors;
 * Sequence nests up to depth 8), and applied. tok_read_pattern/tok_read_string are shared
 * with the decoder's config, tok_replace_all with its Replace step. */
up_status tok_add_normalizer(up_tokenizer *t, const json_t *cfg, const char *where, int depth, up_error *err);
up_status tok_add_pretokenizer(up_tokenizer *t, const json_t *cfg, const char *where, int depth, up_error *err);
up_status tok_read_pattern(const json_t *obj, const char *where, char **out, size_t *n, up_error *err);
up_status tok_read_string(const json_t *obj, const char *key, const char *where, char **out, size_t *n,
                          up_error *err);
/* Replaces every non-overlapping occurrence of a (left to right) with b, into out. */
int tok_replace_all(const char *s, size_t n, const char *a, size_t na, const char *b, size_t nb, sbuf *out);
/* Applies the normalizer chain to s into out (out->n reset); tmp is scratch. */
int tok_normalize(const up_tokenizer *t, const char *s, size_t n, sbuf *out, sbuf *tmp);
/* One Split over span sp of buf, appending the pieces to out (Rust crate semantics); parts
 * is scratch. */
int tok_pretokenize_split(const pretok_op *op, const char *buf, span sp, svec *out, svec *parts);

/* tokenizer_decode.c: reads a decoder config (as tok_add_normalizer). */
up_status tok_add_decoder(up_tokenizer *t, const json_t *cfg, const char *where, int depth, up_error *err);

#endif
