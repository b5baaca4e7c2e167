#include "formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"

/* The reference implementation refuses headers above 100 MB; so do we, before allocating. */
#define ST_MAX_HEADER ((uint64_t)100000000)

/* Every dtype name the format defines that has a whole-byte element. Only those that map to
 * an up_dtype can be computed with; the rest are listed and reported as unsupported. */
static const struct { const char *name; size_t size; } st_dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
    {"I8", 1}, {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1},
    {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}, {"C64", 8},
};

typedef struct st_entry {
    const char *name;       /* owned by its file's header JSON */
    const char *dtype_name; /* idem */
    up_dtype dtype;         /* valid when supported */
    int supported;          /* dtype maps to an up_dtype and ndim <= UP_MAX_DIMS */
    int ndim;      /* as stored, may exceed UP_MAX_DIMS (then unsupported) */
    int64_t shape[UP_MAX_DIMS];
    uint64_t begin, end; /* relative to the file's data area */
    int file;            /* index into up_safetensors.files */
} st_entry;

typedef struct st_file {
    char *path;
    void *map;
    size_t map_size;
    const unsigned char *data; /* first byte after the header */
    uint64_t data_size;
    json_t *header;
} st_file;

struct up_safetensors {
    st_file *files; /* (n_files) */
    int n_files;
    st_entry *entries; /* (n_entries), sorted by name */
    int n_entries;
    const char *origin; /* the file or directory opened, for messages */
    char *origin_owned;
};

static int entry_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int entry_cmp_begin(const void *a, const void *b) {
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static void file_release(st_file *f) {
    if (f->map) munmap(f->map, f->map_size);
    json_decref(f->header);
    free(f->path);
    memset(f, 0, sizeof *f);
}

void up_safetensors_close(up_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_files; i++) file_release(&st->files[i]);
    free(st->files);
    free(st->entries);
    free(st->origin_owned);
    free(st);
}

static uint64_t read_u64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A JSON error in words. jansson reports a repeated name only as "duplicate object key" (its
 * "near" part is dropped for long names), at the byte just past the name: the name is read
 * back from text so the message can say which tensor is listed twice. */
static up_status json_failure(up_error *err, const char *path, const char *what, const char *text,
                              size_t len, const json_error_t *je) {
    if (json_error_code(je) == json_error_duplicate_key && text && je->position > 0 &&
        (size_t)je->position <= len) {
        int end = je->position - 1;
        while (end > 0 && text[end] != '"') end--;
        int start = end - 1;
        while (start >= 0 && !(text[start] == '"' && (start == 0 || text[start - 1] != '\\'))) start--;
        if (start >= 0 && end > start)
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: %s lists \"%.*s\" twice (duplicate name at line %d); each "
                                "tensor must appear once", path, what, end - start - 1,
                                text + start + 1, je->line);
    }
    return up_error_set(err, UP_ERR_FORMAT, "%s: %s: %s (line %d, column %d)", path, what, je->text,
                        je->line, je->column);
}

/* Maps PATH and parses its header into f. Entries are appended to *entries (grown as needed)
 * with file index `index`. Only checks local to the file happen here; overlap is checked once
 * all entries are in. */
static up_status map_file(st_file *f, int index, const char *path, st_entry **entries, int *n,
                          int *cap, up_error *err) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return up_error_set(err, UP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return up_error_set(err, UP_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return up_error_set(err, UP_ERR_IO, "%s is not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return up_error_set(err, UP_ERR_FORMAT,
                            "%s: %llu bytes is too short for a safetensors file (needs an 8-byte "
                            "header length)", path, (unsigned long long)size);
    }
    if (size > SIZE_MAX) {
        close(fd);
        return up_error_set(err, UP_ERR_IO, "%s: too large to map", path);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return up_error_set(err, UP_ERR_IO, "cannot map %s: %s", path, strerror(map_errno));
    f->map = map;
    f->map_size = (size_t)size;

    const unsigned char *base = map;
    uint64_t hlen = read_u64le(base);
    if (hlen > size - 8)
        return up_error_set(err, UP_ERR_FORMAT,
                            "%s: header length %llu runs past the end of the file (%llu bytes)",
                            path, (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return up_error_set(err, UP_ERR_FORMAT, "%s: header length %llu exceeds the 100 MB limit",
                            path, (unsigned long long)hlen);
    if (hlen < 2 || base[8] != '{')
        return up_error_set(err, UP_ERR_FORMAT, "%s: header is not a JSON object", path);
    f->data = base + 8 + hlen;
    f->data_size = size - 8 - hlen;

    json_error_t jerr;
    f->header = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->header) return json_failure(err, path, "header JSON", (const char *)base + 8, (size_t)hlen, &jerr);
    if (!json_is_object(f->header))
        return up_error_set(err, UP_ERR_FORMAT, "%s: header is not a JSON object", path);

    const char *key;
    json_t *val;
    json_object_foreach(f->header, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val))
                return up_error_set(err, UP_ERR_FORMAT, "%s: __metadata__ is not an object", path);
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv))
                    return up_error_set(err, UP_ERR_FORMAT,
                                        "%s: __metadata__ value for \"%s\" is not a string", path,
                                        mk);
            }
            continue;
        }
        if (!json_is_object(val))
            return up_error_set(err, UP_ERR_FORMAT, "%s: tensor %s: entry is not an object", path,
                                key);
        json_t *jd = json_object_get(val, "dtype");
        json_t *js = json_object_get(val, "shape");
        json_t *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: tensor %s: needs string \"dtype\", array \"shape\" and "
                                "array \"data_offsets\"", path, key);

        if (*n == *cap) {
            int ncap = *cap ? *cap * 2 : 64;
            st_entry *grown = realloc(*entries, (size_t)ncap * sizeof **entries);
            if (!grown) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
            *entries = grown;
            *cap = ncap;
        }
        st_entry *e = &(*entries)[*n];
        memset(e, 0, sizeof *e);
        e->name = key;
        e->file = index;
        e->dtype_name = json_string_value(jd);

        size_t elem = 0;
        for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
            if (strcmp(e->dtype_name, st_dtypes[i].name) == 0) elem = st_dtypes[i].size;
        if (!elem)
            return up_error_set(err, UP_ERR_FORMAT, "%s: tensor %s: unknown dtype \"%s\"", path,
                                key, e->dtype_name);
        e->supported = up_dtype_parse(e->dtype_name, &e->dtype) == 0;

        size_t nd = json_array_size(js);
        if (nd > UP_MAX_DIMS) e->supported = 0;
        e->ndim = (int)nd;
        uint64_t bytes = elem;
        int overflow = 0, empty = 0;
        for (size_t i = 0; i < nd; i++) {
            json_t *jv = json_array_get(js, i);
            if (!json_is_integer(jv) || json_integer_value(jv) < 0)
                return up_error_set(err, UP_ERR_FORMAT,
                                    "%s: tensor %s: shape[%zu] is not a non-negative integer",
                                    path, key, i);
            uint64_t dim = (uint64_t)json_integer_value(jv);
            if (i < UP_MAX_DIMS) e->shape[i] = (int64_t)dim;
            if (dim == 0) empty = 1;
            if (__builtin_mul_overflow(bytes, dim, &bytes)) overflow = 1;
        }
        if (empty) overflow = 0, bytes = 0; /* a zero dimension wins over any overflow */

        if (json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
            !json_is_integer(json_array_get(jo, 1)) ||
            json_integer_value(json_array_get(jo, 0)) < 0 ||
            json_integer_value(json_array_get(jo, 1)) < 0)
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: tensor %s: data_offsets must be two non-negative integers",
                                path, key);
        e->begin = (uint64_t)json_integer_value(json_array_get(jo, 0));
        e->end = (uint64_t)json_integer_value(json_array_get(jo, 1));
        if (e->end < e->begin)
            return up_error_set(err, UP_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] end "
                                "before they begin", path, key, (unsigned long long)e->begin,
                                (unsigned long long)e->end);
        if (e->end > f->data_size)
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: tensor %s: data_offsets [%llu, %llu] run past the data area "
                                "(%llu bytes): the file is truncated or its header is wrong", path, key, (unsigned long long)e->begin,
                                (unsigned long long)e->end, (unsigned long long)f->data_size);
        if (overflow || bytes != e->end - e->begin)
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: tensor %s: shape and dtype %s need %s%llu bytes but "
                                "data_offsets span %llu", path, key, e->dtype_name,
                                overflow ? "more than " : "",
                                (unsigned long long)(overflow ? UINT64_MAX : bytes),
                                (unsigned long long)(e->end - e->begin));
        (*n)++;
    }
    return UP_OK;
}

/* Sorts by name, rejects duplicates (across shards) and overlapping byte ranges. */
static up_status finish(up_safetensors *st, up_error *err) {
    if (st->n_entries == 0) return UP_OK;
    st_entry **by_begin = malloc((size_t)st->n_entries * sizeof *by_begin);
    if (!by_begin) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", st->origin);
    for (int i = 0; i < st->n_entries; i++) by_begin[i] = &st->entries[i];
    qsort(by_begin, (size_t)st->n_entries, sizeof *by_begin, entry_cmp_begin);
    up_status s = UP_OK;
    for (int i = 1; i < st->n_entries; i++) {
        const st_entry *a = by_begin[i - 1], *b = by_begin[i];
        /* Empty tensors occupy no bytes and cannot overlap anything. */
        if (a->file == b->file && b->begin < a->end && b->end > b->begin) {
            s = up_error_set(err, UP_ERR_FORMAT,
                             "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap",
                             st->files[a->file].path, a->name, (unsigned long long)a->begin,
                             (unsigned long long)a->end, b->name, (unsigned long long)b->begin,
                             (unsigned long long)b->end);
            break;
        }
    }
    free(by_begin);
    if (s != UP_OK) return s;

    qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, entry_cmp_name);
    for (int i = 1; i < st->n_entries; i++) {
        if (strcmp(st->entries[i - 1].name, st->entries[i].name) == 0)
            return up_error_set(err, UP_ERR_FORMAT, "tensor %s appears in both %s and %s",
                                st->entries[i].name, st->files[st->entries[i - 1].file].path,
                                st->files[st->entries[i].file].path);
    }
    return UP_OK;
}

static const st_entry *lookup(const up_safetensors *st, const char *name) {
    st_entry key = {.name = name};
    return bsearch(&key, st->entries, (size_t)st->n_entries, sizeof key, entry_cmp_name);
}

up_status up_safetensors_open_file(up_safetensors **out, const char *path, up_error *err) {
    *out = NULL;
    up_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->files = calloc(1, sizeof *st->files)) || !(st->origin_owned = strdup(path))) {
        if (st) free(st->files);
        free(st);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    st->origin = st->origin_owned;
    st->n_files = 1;
    int cap = 0;
    up_status s = map_file(&st->files[0], 0, path, &st->entries, &st->n_entries, &cap, err);
    if (s == UP_OK) s = finish(st, err);
    if (s != UP_OK) {
        up_safetensors_close(st);
        return s;
    }
    *out = st;
    return UP_OK;
}

static char *join_path(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a == 0 || dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static up_status open_index(up_safetensors *st, const char *dir, const char *index_path,
                            up_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && json_error_code(&jerr) == json_error_duplicate_key) {
        /* read the text back to name the tensor listed twice */
        char *text = NULL;
        size_t len = 0;
        FILE *fp = fopen(index_path, "rb");
        if (fp) {
            text = malloc((size_t)jerr.position + 1);
            if (text) len = fread(text, 1, (size_t)jerr.position, fp);
            fclose(fp);
        }
        up_status s = json_failure(err, index_path, "weight_map", text, len, &jerr);
        free(text);
        return s;
    }
    if (!root)
        return up_error_set(err, UP_ERR_FORMAT, "%s: %s (line %d, column %d)", index_path,
                            jerr.text, jerr.line, jerr.column);
    up_status s = UP_OK;
    const char **shards = NULL;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(map)) {
        s = up_error_set(err, UP_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    size_t n_map = json_object_size(map);
    if (n_map == 0) {
        s = up_error_set(err, UP_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    shards = malloc(n_map * sizeof *shards);
    if (!shards) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    size_t n_names = 0;
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        const char *file = json_string_value(val);
        if (!file || !*file || strchr(file, '/') || strcmp(file, ".") == 0 ||
            strcmp(file, "..") == 0) {
            s = up_error_set(err, UP_ERR_FORMAT,
                             "%s: weight_map entry for %s is not a file name in the directory",
                             index_path, key);
            goto done;
        }
        shards[n_names++] = file;
    }
    qsort(shards, n_names, sizeof *shards, cmp_cstr);
    size_t n_unique = 0;
    for (size_t i = 0; i < n_names; i++)
        if (n_unique == 0 || strcmp(shards[n_unique - 1], shards[i]) != 0)
            shards[n_unique++] = shards[i];

    st->files = calloc(n_unique, sizeof *st->files);
    if (!st->files) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    int cap = 0;
    for (size_t i = 0; i < n_unique; i++) {
        char *p = join_path(dir, shards[i]);
        if (!p) {
            s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", index_path);
            goto done;
        }
        st->n_files = (int)i + 1;
        if (access(p, F_OK) != 0) {
            s = up_error_set(err, UP_ERR_IO, "shard %s listed in %s is missing", p, index_path);
            free(p);
            goto done;
        }
        s = map_file(&st->files[i], (int)i, p, &st->entries, &st->n_entries, &cap, err);
        free(p);
        if (s != UP_OK) goto done;
    }
    s = finish(st, err);
    if (s != UP_OK) goto done;

    json_object_foreach(map, key, val) {
        const st_entry *e = lookup(st, key);
        const char *want = json_string_value(val);
        if (!e) {
            s = up_error_set(err, UP_ERR_FORMAT, "tensor %s listed in %s is not in shard %s/%s",
                             key, index_path, dir, want);
            goto done;
        }
        const char *have = strrchr(st->files[e->file].path, '/');
        have = have ? have + 1 : st->files[e->file].path;
        if (strcmp(have, want) != 0) {
            s = up_error_set(err, UP_ERR_FORMAT,
                             "tensor %s: %s says shard %s but it is in %s", key, index_path, want,
                             st->files[e->file].path);
            goto done;
        }
    }
done:
    free(shards);
    json_decref(root);
    return s;
}

up_status up_safetensors_open_dir(up_safetensors **out, const char *dir, up_error *err) {
    *out = NULL;
    char *index_path = join_path(dir, "model.safetensors.index.json");
    if (!index_path) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", dir);
    if (access(index_path, F_OK) != 0) {
        free(index_path);
        char *single = join_path(dir, "model.safetensors");
        if (!single) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", dir);
        if (access(single, F_OK) != 0) {
            free(single);
            return up_error_set(err, UP_ERR_IO,
                                "%s holds neither model.safetensors.index.json nor "
                                "model.safetensors", dir);
        }
        up_status s = up_safetensors_open_file(out, single, err);
        free(single);
        return s;
    }
    up_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->origin_owned = strdup(dir))) {
        free(st);
        free(index_path);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", dir);
    }
    st->origin = st->origin_owned;
    up_status s = open_index(st, dir, index_path, err);
    free(index_path);
    if (s != UP_OK) {
        up_safetensors_close(st);
        return s;
    }
    *out = st;
    return UP_OK;
}

int up_safetensors_count(const up_safetensors *st) { return st->n_entries; }

const char *up_safetensors_name(const up_safetensors *st, int i) {
    return i >= 0 && i < st->n_entries ? st->entries[i].name : NULL;
}

up_status up_safetensors_find(const up_safetensors *st, const char *name, up_tensor *out,
                              up_error *err) {
    const st_entry *e = lookup(st, name);
    if (!e) return up_error_set(err, UP_ERR_INVALID, "tensor %s not found in %s", name, st->origin);
    const st_file *f = &st->files[e->file];
    if (!e->supported) {
        if (e->ndim > UP_MAX_DIMS)
            return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: tensor %s has %d dimensions (max %d)",
                                f->path, name, e->ndim, UP_MAX_DIMS);
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: tensor %s has dtype %s, which we cannot compute with", f->path,
                            name, e->dtype_name);
    }
    const unsigned char *p = f->data + e->begin;
    /* Hugging Face writers pad the header so every tensor is aligned to its element size;
     * handing out a misaligned pointer would make every typed read undefined. */
    if ((uintptr_t)p % up_dtype_size(e->dtype) != 0)
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: tensor %s starts at a misaligned offset for %s", f->path, name,
                            e->dtype_name);
    memset(out, 0, sizeof *out);
    out->dtype = e->dtype;
    out->ndim = e->ndim;
    memcpy(out->shape, e->shape, sizeof e->shape);
    out->data = p;
    return UP_OK;
}

const char *up_safetensors_metadata(const up_safetensors *st, const char *key) {
    if (st->n_files == 0) return NULL;
    json_t *meta = json_object_get(st->files[0].header, "__metadata__");
    return json_string_value(json_object_get(meta, key));
}

const char *up_safetensors_metadata_key(const up_safetensors *st, int i) {
    if (st->n_files == 0 || i < 0) return NULL;
    json_t *meta = json_object_get(st->files[0].header, "__metadata__");
    const char *key;
    json_t *value;
    int k = 0;
    json_object_foreach(meta, key, value) {
        (void)value;
        if (k++ == i) return key;
    }
    return NULL;
}

/* --- writer ------------------------------------------------------------- */

typedef struct wr_entry {
    char *name;
    up_dtype dtype;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    void *data;
    size_t bytes;
} wr_entry;

struct up_safetensors_writer {
    char *path;
    wr_entry *entries; /* (n) */
    int n, cap;
    json_t *metadata;
};

up_status up_safetensors_writer_open(up_safetensors_writer **out, const char *path,
                                     up_error *err) {
    *out = NULL;
    up_safetensors_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path)) || !(w->metadata = json_object())) {
        if (w) free(w->path);
        free(w);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = w;
    return UP_OK;
}

void up_safetensors_writer_abort(up_safetensors_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->entries[i].name);
        free(w->entries[i].data);
    }
    free(w->entries);
    json_decref(w->metadata);
    free(w->path);
    free(w);
}

up_status up_safetensors_writer_add(up_safetensors_writer *w, const char *name, up_dtype dtype,
                                    int ndim, const int64_t *shape, const void *data,
                                    up_error *err) {
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return up_error_set(err, UP_ERR_INVALID, "%s: tensor name \"%s\" is not allowed", w->path,
                            name ? name : "(null)");
    json_t *probe = json_string(name); /* NULL when name is not valid UTF-8 */
    if (!probe)
        return up_error_set(err, UP_ERR_INVALID, "%s: tensor name is not valid UTF-8", w->path);
    json_decref(probe);
    if (dtype >= UP_DTYPE_COUNT)
        return up_error_set(err, UP_ERR_INVALID, "%s: tensor %s: bad dtype", w->path, name);
    if (ndim < 0 || ndim > UP_MAX_DIMS)
        return up_error_set(err, UP_ERR_INVALID, "%s: tensor %s: %d dimensions", w->path, name,
                            ndim);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return up_error_set(err, UP_ERR_INVALID, "%s: tensor %s added twice", w->path, name);
    uint64_t bytes = up_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(bytes, (uint64_t)shape[i], &bytes) ||
            bytes > SIZE_MAX)
            return up_error_set(err, UP_ERR_INVALID, "%s: tensor %s: bad shape[%d] = %lld",
                                w->path, name, i, (long long)shape[i]);
    }
    if (bytes && !data)
        return up_error_set(err, UP_ERR_INVALID, "%s: tensor %s: no data", w->path, name);
    if (w->n == w->cap) {
        int ncap = w->cap ? w->cap * 2 : 16;
        wr_entry *grown = realloc(w->entries, (size_t)ncap * sizeof *grown);
        if (!grown) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", w->path);
        w->entries = grown;
        w->cap = ncap;
    }
    wr_entry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->data = malloc(bytes ? (size_t)bytes : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return up_error_set(err, UP_ERR_NOMEM, "%s: tensor %s: out of memory", w->path, name);
    }
    if (bytes) memcpy(e->data, data, (size_t)bytes);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->bytes = (size_t)bytes;
    w->n++;
    return UP_OK;
}

up_status up_safetensors_writer_metadata(up_safetensors_writer *w, const char *key,
                                         const char *value, up_error *err) {
    json_t *v = value ? json_string(value) : NULL;
    if (!key || !v || json_object_set_new(w->metadata, key, v) != 0)
        return up_error_set(err, UP_ERR_INVALID,
                            "%s: metadata %s: key and value must be valid UTF-8 strings", w->path,
                            key ? key : "(null)");
    return UP_OK;
}

/* Widest element first, then by name: with no gaps (Hugging Face's reader requires the data
 * area to be covered exactly) every tensor still starts aligned to its element size. */
static int wr_cmp(const void *a, const void *b) {
    const wr_entry *x = a, *y = b;
    size_t sx = up_dtype_size(x->dtype), sy = up_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static up_status write_all(FILE *fp, const void *p, size_t n, const char *path, up_error *err) {
    if (n && fwrite(p, 1, n, fp) != n)
        return up_error_set(err, UP_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return UP_OK;
}

up_status up_safetensors_writer_close(up_safetensors_writer *w, up_error *err) {
    if (!w) return up_error_set(err, UP_ERR_INVALID, "no writer");
    up_status s = UP_OK;
    char *header = NULL, *tmp = NULL;
    FILE *fp = NULL;
    json_t *root = json_object();
    if (!root) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", w->path);
        goto done;
    }
    qsort(w->entries, (size_t)w->n, sizeof *w->entries, wr_cmp);
    if (json_object_size(w->metadata) > 0) json_object_set(root, "__metadata__", w->metadata);
    uint64_t offset = 0;
    for (int i = 0; i < w->n; i++) {
        const wr_entry *e = &w->entries[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *info = json_pack("{s:s, s:o, s:[I, I]}", "dtype", up_dtype_name(e->dtype), "shape",
                                 shape, "data_offsets", (json_int_t)offset,
                                 (json_int_t)(offset + e->bytes));
        if (!info || json_object_set_new(root, e->name, info) != 0) {
            s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", w->path);
            goto done;
        }
        offset += e->bytes;
    }
    header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!header) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", w->path);
        goto done;
    }
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) & ~(size_t)7; /* 8 + padded is a multiple of 8 */

    if (!(tmp = up_fs_temp_path(w->path))) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", w->path);
        goto done;
    }
    /* Messages name w->path, the file the caller asked for: tmp is removed on failure. */
    fp = fopen(tmp, "wb");
    if (!fp) {
        s = up_error_set(err, UP_ERR_IO, "cannot create %s: %s", w->path, strerror(errno));
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    if ((s = write_all(fp, len8, 8, w->path, err)) || (s = write_all(fp, header, hlen, w->path, err)) ||
        (s = write_all(fp, spaces, padded - hlen, w->path, err)))
        goto done;
    for (int i = 0; i < w->n; i++)
        if ((s = write_all(fp, w->entries[i].data, w->entries[i].bytes, w->path, err))) goto done;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        s = up_error_set(err, UP_ERR_IO, "cannot write %s: %s", w->path, strerror(errno));
        goto done;
    }
    int rc = fclose(fp);
    fp = NULL;
    if (rc != 0) {
        s = up_error_set(err, UP_ERR_IO, "cannot write %s: %s", w->path, strerror(errno));
        goto done;
    }
done:
    if (fp) fclose(fp);
    if (tmp) s = up_fs_replace(tmp, w->path, s, err);
    free(tmp);
    free(header);
    json_decref(root);
    up_safetensors_writer_abort(w);
    return s;
}
