/* tokenizer_added — added tokens (tokenizer_impl.h): reading added_tokens, the content
 * table and the byte tries they are matched with (special ones on the raw text, normalized
 * ones on each normalized section), and the leftmost-longest split with lstrip/rstrip. */
#include "text/tokenizer_impl.h"

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
        uint32_t cp;
        int l = utf8_char(s, n, i, &cp);
        if (!is_unicode_ws(cp)) break;
        i += (size_t)l;
    }
    return i;
}

static size_t ws_suffix(const char *s, size_t n) {
    size_t i = 0, keep = 0; /* keep: end of the last non-whitespace character */
    while (i < n) {
        uint32_t cp;
        int l = utf8_char(s, n, i, &cp);
        if (!is_unicode_ws(cp)) keep = i + (size_t)l;
        i += (size_t)l;
    }
    return n - keep;
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

up_status tok_read_added(up_tokenizer *t, const json_t *list, up_error *err) {
    if (!list || json_is_null(list)) return UP_OK;
    if (!json_is_array(list)) return up_error_set(err, UP_ERR_FORMAT, "added_tokens is not an array");
    size_t n = json_array_size(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || tok_strtab_init(&t->added_t, n))
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
up_status tok_index_added(up_tokenizer *t, up_error *err) {
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
        tok_strtab_insert(&t->added_t, all.p ? all.p : "", off[i], len[i], i);
        int r;
        if (x->normalized) {
            if (tok_normalize(t, x->content, x->len, &nb, &tmp)) {
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

/* Splits text into plain spans and added-token spans (leftmost-longest), then applies the
 * tokens' lstrip/rstrip to the neighbouring plain spans. */
int tok_split_added(const up_tokenizer *t, const trie *tr, const char *s, size_t n, svec *out) {
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
