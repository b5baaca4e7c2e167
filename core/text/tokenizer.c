/* tokenizer — see tokenizer.h for the contract, tokenizer_impl.h for how the implementation
 * is laid out over the tokenizer*.c files. This one holds the lifecycle (load from a file,
 * a directory or memory; free), the model's options and BOS/EOS, and the lookups. */
#include "text/tokenizer_impl.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

/* Files larger than this take the split/parallel parse under UP_TOKENIZER_PARSE_AUTO. */
#define SPLIT_MIN_BYTES ((size_t)4 << 20)

/* ---------------------------------------------------------------- loading */

static up_status read_model(up_tokenizer *t, const json_t *model, up_error *err) {
    up_status st = tok_check_model_type(model, err);
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
    if ((st = tok_build_vocab(t, p, err))) return st;
    if ((st = tok_build_merges(t, p, err))) return st;
    const json_t *x;
    if ((x = json_object_get(root, "normalizer")) && !json_is_null(x) &&
        (st = tok_add_normalizer(t, x, "normalizer", 0, err)))
        return st;
    if ((x = json_object_get(root, "pre_tokenizer")) && !json_is_null(x) &&
        (st = tok_add_pretokenizer(t, x, "pre_tokenizer", 0, err)))
        return st;
    if ((x = json_object_get(root, "decoder")) && !json_is_null(x)) {
        t->has_decoder = 1;
        if ((st = tok_add_decoder(t, x, "decoder", 0, err))) return st;
    }
    if ((st = tok_read_added(t, json_object_get(root, "added_tokens"), err))) return st;
    if ((st = tok_index_added(t, err))) return st;
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
    if (split && tok_parse_split(json, len, &p) == 0) {
        st = load_parsed(t, &p, config, err);
        tok_parsed_free(&p);
        if (st == UP_OK) {
            *out = t;
            return UP_OK;
        }
        /* Failed after the split parse (say a piece duplicated across chunks): redo it in
         * one pass so the error reads exactly as the single-pass parse reports it. */
        up_tokenizer_free(t);
        if (!(t = calloc(1, sizeof *t))) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", name);
    }
    st = tok_parse_whole(json, len, &p, err);
    if (st == UP_OK) st = load_parsed(t, &p, config, err);
    tok_parsed_free(&p);
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
