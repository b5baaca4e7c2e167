/* tokenizer_json — tokenizer.json text -> `parsed` (tokenizer_impl.h), the plain data the
 * tables are built from. A single jansson pass over Gemma's 33 MB file takes about a second,
 * so the split path minifies the text (in parallel), cuts model.vocab and model.merges into
 * element-aligned chunks by a structural scan, and parses the chunks in parallel; anything it
 * does not recognise sends the caller back to the whole parse, which reports real errors. */
#include "text/tokenizer_impl.h"

#include <stdarg.h>
#include <stdio.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

void tok_chunk_free(chunk_out *c) {
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

void tok_parsed_free(parsed *p) {
    for (int i = 0; i < p->n_vocab_chunks; i++) tok_chunk_free(&p->vocab[i]);
    free(p->vocab);
    free(p->min);
    free(p->mspan);
    if (p->root) json_decref(p->root);
    memset(p, 0, sizeof *p);
}

/* "[" + span + "]" (or braces) parsed by jansson. */
json_t *tok_parse_span(const chunk_span *cs, char open, char close) {
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
up_status tok_check_model_type(const json_t *model, up_error *err) {
    const json_t *type = json_object_get(model, "type");
    if (!type) return UP_OK;
    if (!json_is_string(type)) return up_error_set(err, UP_ERR_FORMAT, "model.type is not a string");
    if (strcmp(json_string_value(type), "BPE") != 0)
        return up_error_set(err, UP_ERR_UNSUPPORTED, "model type \"%s\" is not supported (only BPE)",
                            json_string_value(type));
    return UP_OK;
}

up_status tok_parse_whole(const char *json, size_t len, parsed *p, up_error *err) {
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
    up_status st = tok_check_model_type(model, err);
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
int tok_parse_split(const char *json, size_t len, parsed *p) {
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
        json_t *v = tok_parse_span(&vc[k], '{', '}');
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
    if (rc) tok_parsed_free(p);
    return rc;
}
