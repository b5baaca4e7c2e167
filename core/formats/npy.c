#include "npy.h"

#include <stdlib.h>
#include <string.h>
#include <zip.h>

/* numpy itself refuses headers above 10 kB by default; allow far more, but not gigabytes. */
#define NPY_MAX_DICT (1u << 20)
#define NPY_PREFIX_V1 10 /* magic(6) + version(2) + u16 length */
#define NPY_PREFIX_V2 12 /* magic(6) + version(2) + u32 length */

/* --- the header dict: a small recursive-descent reader of the Python literal ------------ */

typedef struct lexer {
    const char *p, *end;
} lexer;

static void skip_ws(lexer *lx) {
    while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r'))
        lx->p++;
}

static int accept(lexer *lx, char c) {
    skip_ws(lx);
    if (lx->p < lx->end && *lx->p == c) {
        lx->p++;
        return 1;
    }
    return 0;
}

static int accept_word(lexer *lx, const char *w) {
    skip_ws(lx);
    size_t n = strlen(w);
    if ((size_t)(lx->end - lx->p) >= n && memcmp(lx->p, w, n) == 0) {
        lx->p += n;
        return 1;
    }
    return 0;
}

/* A quoted string without escapes (numpy never writes any in a header). */
static int read_string(lexer *lx, char *buf, size_t cap) {
    skip_ws(lx);
    if (lx->p >= lx->end || (*lx->p != '\'' && *lx->p != '"')) return 0;
    char q = *lx->p++;
    size_t n = 0;
    while (lx->p < lx->end && *lx->p != q) {
        if (*lx->p == '\\' || *lx->p == '\n' || n + 1 >= cap) return 0;
        buf[n++] = *lx->p++;
    }
    if (lx->p >= lx->end) return 0;
    lx->p++;
    buf[n] = 0;
    return 1;
}

/* A non-negative decimal integer (Python 2 headers may suffix 'L'). */
static int read_uint(lexer *lx, uint64_t *out) {
    skip_ws(lx);
    if (lx->p >= lx->end || *lx->p < '0' || *lx->p > '9') return 0;
    uint64_t v = 0;
    while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *lx->p - '0', &v))
            return 0;
        lx->p++;
    }
    if (lx->p < lx->end && *lx->p == 'L') lx->p++;
    *out = v;
    return 1;
}

static up_status parse_descr(const char *d, up_npy_info *out, up_error *err) {
    char order = d[0];
    const char *k = d;
    if (order == '<' || order == '>' || order == '|' || order == '=') k++;
    else order = '=';
    char kind = k[0];
    char *endp;
    long size = k[0] ? strtol(k + 1, &endp, 10) : 0;
    if (!k[0] || k[1] < '1' || k[1] > '9' || *endp)
        return up_error_set(err, UP_ERR_UNSUPPORTED, "dtype '%s' is not a plain numeric type", d);
    int t = -1;
    switch (kind) {
    case 'f': t = size == 2 ? UP_NPY_F16 : size == 4 ? UP_NPY_F32 : size == 8 ? UP_NPY_F64 : -1; break;
    case 'i': t = size == 1 ? UP_NPY_I8 : size == 2 ? UP_NPY_I16 : size == 4 ? UP_NPY_I32
                : size == 8 ? UP_NPY_I64 : -1; break;
    case 'u': t = size == 1 ? UP_NPY_U8 : size == 2 ? UP_NPY_U16 : size == 4 ? UP_NPY_U32
                : size == 8 ? UP_NPY_U64 : -1; break;
    case 'b': t = size == 1 ? UP_NPY_BOOL : -1; break;
    default: break;
    }
    if (t < 0) return up_error_set(err, UP_ERR_UNSUPPORTED, "dtype '%s' is not supported", d);
    if (order == '>' && size > 1)
        return up_error_set(err, UP_ERR_UNSUPPORTED, "dtype '%s' is big-endian", d);
    out->type = (up_npy_type)t;
    out->itemsize = (size_t)size;
    return UP_OK;
}

static up_status parse_dict(const char *text, size_t n, up_npy_info *out, up_error *err) {
    lexer lx = {text, text + n};
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    char descr[sizeof out->descr];
    if (!accept(&lx, '{')) return up_error_set(err, UP_ERR_FORMAT, "header is not a dict");
    for (;;) {
        if (accept(&lx, '}')) break;
        char key[32];
        if (!read_string(&lx, key, sizeof key) || !accept(&lx, ':'))
            return up_error_set(err, UP_ERR_FORMAT, "header dict: expected 'key':");
        if (strcmp(key, "descr") == 0) {
            if (have_descr++) return up_error_set(err, UP_ERR_FORMAT, "header repeats 'descr'");
            skip_ws(&lx);
            if (lx.p < lx.end && *lx.p == '[')
                return up_error_set(err, UP_ERR_UNSUPPORTED, "structured dtypes are not supported");
            if (!read_string(&lx, descr, sizeof descr))
                return up_error_set(err, UP_ERR_FORMAT, "header: 'descr' is not a short string");
        } else if (strcmp(key, "fortran_order") == 0) {
            if (have_order++)
                return up_error_set(err, UP_ERR_FORMAT, "header repeats 'fortran_order'");
            if (accept_word(&lx, "True")) fortran = 1;
            else if (accept_word(&lx, "False")) fortran = 0;
            else return up_error_set(err, UP_ERR_FORMAT, "header: 'fortran_order' is not a bool");
        } else if (strcmp(key, "shape") == 0) {
            if (have_shape++) return up_error_set(err, UP_ERR_FORMAT, "header repeats 'shape'");
            if (!accept(&lx, '('))
                return up_error_set(err, UP_ERR_FORMAT, "header: 'shape' is not a tuple");
            out->ndim = 0;
            while (!accept(&lx, ')')) {
                uint64_t v;
                if (!read_uint(&lx, &v) || v > INT64_MAX)
                    return up_error_set(err, UP_ERR_FORMAT,
                                        "header: 'shape' holds something other than a "
                                        "non-negative integer");
                if (out->ndim == UP_MAX_DIMS)
                    return up_error_set(err, UP_ERR_UNSUPPORTED, "more than %d dimensions",
                                        UP_MAX_DIMS);
                out->shape[out->ndim++] = (int64_t)v;
                if (!accept(&lx, ',')) {
                    if (!accept(&lx, ')'))
                        return up_error_set(err, UP_ERR_FORMAT, "header: 'shape' is malformed");
                    /* (3) is an int in Python, not a tuple */
                    if (out->ndim == 1)
                        return up_error_set(err, UP_ERR_FORMAT, "header: 'shape' is not a tuple");
                    break;
                }
            }
        } else {
            return up_error_set(err, UP_ERR_FORMAT, "header has unexpected key '%s'", key);
        }
        if (!accept(&lx, ',')) {
            if (!accept(&lx, '}')) return up_error_set(err, UP_ERR_FORMAT, "header dict is malformed");
            break;
        }
    }
    skip_ws(&lx);
    if (lx.p != lx.end)
        return up_error_set(err, UP_ERR_FORMAT, "header has trailing bytes after the dict");
    if (!have_descr || !have_order || !have_shape)
        return up_error_set(err, UP_ERR_FORMAT,
                            "header lacks %s", !have_descr ? "'descr'"
                                               : !have_order ? "'fortran_order'" : "'shape'");
    memcpy(out->descr, descr, sizeof descr);
    up_status s = parse_descr(descr, out, err);
    if (s != UP_OK) return s;
    if (fortran && out->ndim > 1)
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "array is stored in Fortran order; save it C-contiguous "
                            "(numpy.ascontiguousarray)");
    uint64_t numel = 1;
    int overflow = 0, empty = 0;
    for (int i = 0; i < out->ndim; i++) {
        if (out->shape[i] == 0) empty = 1;
        if (__builtin_mul_overflow(numel, (uint64_t)out->shape[i], &numel)) overflow = 1;
    }
    if (empty) numel = 0, overflow = 0;
    uint64_t bytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)out->itemsize, &bytes))
        return up_error_set(err, UP_ERR_FORMAT, "header: shape's byte count overflows");
    out->numel = numel;
    out->data_bytes = bytes;
    return UP_OK;
}

/* How many bytes the whole header takes, from its fixed prefix (10 or 12 bytes). */
static up_status header_size(const unsigned char *b, size_t len, size_t *total, up_error *err) {
    if (len < NPY_PREFIX_V1 || memcmp(b, "\x93NUMPY", 6) != 0)
        return up_error_set(err, UP_ERR_FORMAT, "not a .npy array (bad magic)");
    if (b[7] != 0 || b[6] < 1 || b[6] > 3)
        return up_error_set(err, UP_ERR_UNSUPPORTED, ".npy format version %u.%u is not supported",
                            b[6], b[7]);
    size_t dict;
    if (b[6] == 1) {
        dict = (size_t)b[8] | (size_t)b[9] << 8;
        *total = NPY_PREFIX_V1 + dict;
    } else {
        if (len < NPY_PREFIX_V2) return up_error_set(err, UP_ERR_FORMAT, ".npy header truncated");
        dict = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        if (dict > NPY_MAX_DICT)
            return up_error_set(err, UP_ERR_FORMAT, ".npy header length %zu is implausible", dict);
        *total = NPY_PREFIX_V2 + dict;
    }
    return UP_OK;
}

up_status up_npy_parse_header(const void *buf, size_t len, up_npy_info *out, up_error *err) {
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    size_t total = 0;
    up_status s = header_size(b, len, &total, err);
    if (s != UP_OK) return s;
    if (len < total)
        return up_error_set(err, UP_ERR_FORMAT, ".npy header truncated (%zu of %zu bytes)", len,
                            total);
    size_t prefix = b[6] == 1 ? NPY_PREFIX_V1 : NPY_PREFIX_V2;
    s = parse_dict((const char *)b + prefix, total - prefix, out, err);
    out->header_bytes = total;
    return s;
}

/* --- npz -------------------------------------------------------------------------------- */

typedef struct npz_member {
    char *key;        /* name without ".npy" */
    zip_uint64_t index;
} npz_member;

struct up_npz {
    zip_t *za;
    char *path;
    npz_member *members; /* (n), sorted by key */
    int n;
};

static int member_cmp(const void *a, const void *b) {
    return strcmp(((const npz_member *)a)->key, ((const npz_member *)b)->key);
}

void up_npz_close(up_npz *npz) {
    if (!npz) return;
    if (npz->za) zip_discard(npz->za); /* read-only: nothing to write back */
    for (int i = 0; i < npz->n; i++) free(npz->members[i].key);
    free(npz->members);
    free(npz->path);
    free(npz);
}

up_status up_npz_open(up_npz **out, const char *path, up_error *err) {
    *out = NULL;
    up_npz *npz = calloc(1, sizeof *npz);
    if (!npz || !(npz->path = strdup(path))) {
        free(npz);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    int code = 0;
    npz->za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!npz->za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        up_status st = code == ZIP_ER_NOENT || code == ZIP_ER_OPEN || code == ZIP_ER_READ
                           ? UP_ERR_IO : UP_ERR_FORMAT;
        if (code == ZIP_ER_MEMORY) st = UP_ERR_NOMEM;
        /* An .npz cut short loses its central directory at the end, so libzip calls it "Not a
         * zip archive"; say that it may be truncated. */
        up_error_set(err, st, "%s: cannot open as a zip archive: %s%s", path, zip_error_strerror(&ze),
                     code == ZIP_ER_NOZIP ? " (a truncated download, or not an .npz file)" : "");
        zip_error_fini(&ze);
        up_npz_close(npz);
        return st;
    }
    zip_int64_t n = zip_get_num_entries(npz->za, 0);
    if (n < 0 || n > INT32_MAX) {
        up_npz_close(npz);
        return up_error_set(err, UP_ERR_FORMAT, "%s: bad entry count", path);
    }
    npz->members = calloc((size_t)n + 1, sizeof *npz->members);
    if (!npz->members) {
        up_npz_close(npz);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(npz->za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        if (!name) {
            up_npz_close(npz);
            return up_error_set(err, UP_ERR_FORMAT, "%s: entry %lld has no name", path,
                                (long long)i);
        }
        size_t len = strlen(name);
        if (len <= 4 || strcmp(name + len - 4, ".npy") != 0) continue;
        char *key = strndup(name, len - 4);
        if (!key) {
            up_npz_close(npz);
            return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
        }
        npz->members[npz->n].key = key;
        npz->members[npz->n].index = (zip_uint64_t)i;
        npz->n++;
    }
    qsort(npz->members, (size_t)npz->n, sizeof *npz->members, member_cmp);
    for (int i = 1; i < npz->n; i++) {
        if (strcmp(npz->members[i - 1].key, npz->members[i].key) == 0) {
            up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy appears twice", path,
                         npz->members[i].key);
            up_npz_close(npz);
            return UP_ERR_FORMAT;
        }
    }
    *out = npz;
    return UP_OK;
}

int up_npz_count(const up_npz *npz) { return npz->n; }

const char *up_npz_key(const up_npz *npz, int i) {
    return i >= 0 && i < npz->n ? npz->members[i].key : NULL;
}

static const npz_member *find_member(const up_npz *npz, const char *key) {
    npz_member k = {.key = (char *)key};
    return bsearch(&k, npz->members, (size_t)npz->n, sizeof k, member_cmp);
}

int up_npz_has(const up_npz *npz, const char *key) { return find_member(npz, key) != NULL; }

/* An open member positioned just after its header. */
typedef struct member_reader {
    zip_file_t *zf;
    up_npy_info info;
} member_reader;

static up_status zread_exact(up_npz *npz, zip_file_t *zf, const char *key, void *dst,
                             uint64_t n, up_error *err) {
    unsigned char *p = dst;
    while (n > 0) {
        zip_uint64_t want = n > (1u << 30) ? (1u << 30) : n;
        zip_int64_t got = zip_fread(zf, p, want);
        if (got < 0)
            return up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy: %s", npz->path, key,
                                zip_file_strerror(zf));
        if (got == 0)
            return up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy ends early", npz->path,
                                key);
        p += got;
        n -= (uint64_t)got;
    }
    return UP_OK;
}

static void reader_close(member_reader *r) {
    if (r->zf) zip_fclose(r->zf);
    r->zf = NULL;
}

static up_status reader_open(up_npz *npz, const char *key, member_reader *r, up_error *err) {
    memset(r, 0, sizeof *r);
    const npz_member *m = find_member(npz, key);
    if (!m) return up_error_set(err, UP_ERR_INVALID, "%s: no array %s (member %s.npy)", npz->path,
                                key, key);
    zip_stat_t sb;
    zip_stat_init(&sb);
    if (zip_stat_index(npz->za, m->index, 0, &sb) != 0 || !(sb.valid & ZIP_STAT_SIZE))
        return up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy: %s", npz->path, key,
                            zip_strerror(npz->za));
    r->zf = zip_fopen_index(npz->za, m->index, 0);
    if (!r->zf)
        return up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy: %s", npz->path, key,
                            zip_strerror(npz->za));
    /* Only the version's own prefix: a 1.0 header may be 10 bytes long, and reading 12 would
     * overrun it (found by tests/fuzz/fuzz_npz.c). */
    unsigned char prefix[NPY_PREFIX_V2];
    size_t have = sb.size < NPY_PREFIX_V1 ? (size_t)sb.size : NPY_PREFIX_V1;
    up_status s = zread_exact(npz, r->zf, key, prefix, have, err);
    if (s == UP_OK && have == NPY_PREFIX_V1 && prefix[6] >= 2 && sb.size >= NPY_PREFIX_V2) {
        s = zread_exact(npz, r->zf, key, prefix + have, NPY_PREFIX_V2 - NPY_PREFIX_V1, err);
        have = NPY_PREFIX_V2;
    }
    size_t total = 0;
    if (s == UP_OK) s = header_size(prefix, have, &total, err);
    unsigned char *hdr = NULL;
    if (s == UP_OK && (total > sb.size || total < have))
        s = up_error_set(err, UP_ERR_FORMAT, "header truncated (%zu of %zu bytes)",
                         (size_t)sb.size, total);
    if (s == UP_OK && !(hdr = malloc(total))) s = up_error_set(err, UP_ERR_NOMEM, "out of memory");
    if (s == UP_OK) {
        memcpy(hdr, prefix, have);
        s = zread_exact(npz, r->zf, key, hdr + have, total - have, err);
        if (s == UP_OK) s = up_npy_parse_header(hdr, total, &r->info, err);
    }
    free(hdr);
    if (s == UP_OK && sb.size - total != r->info.data_bytes)
        s = up_error_set(err, UP_ERR_FORMAT,
                         "holds %llu bytes of data but shape and dtype '%s' need %llu",
                         (unsigned long long)(sb.size - total), r->info.descr,
                         (unsigned long long)r->info.data_bytes);
    if (s != UP_OK) {
        /* Messages from header parsing do not yet name the file. */
        if (err && !strstr(err->msg, npz->path))
            up_error_prefix(err, "%s: member %s.npy", npz->path, key);
        reader_close(r);
    }
    return s;
}

/* Reads past the end so libzip verifies the CRC, then closes. */
static up_status reader_finish(up_npz *npz, const char *key, member_reader *r, up_error *err) {
    unsigned char extra;
    zip_int64_t got = zip_fread(r->zf, &extra, 1);
    up_status s = UP_OK;
    if (got < 0)
        s = up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy: %s", npz->path, key,
                         zip_file_strerror(r->zf));
    else if (got > 0)
        s = up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy is longer than its directory "
                         "entry says", npz->path, key);
    int rc = zip_fclose(r->zf);
    r->zf = NULL;
    if (s == UP_OK && rc != 0) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, rc);
        s = up_error_set(err, UP_ERR_FORMAT, "%s: member %s.npy: %s", npz->path, key,
                         zip_error_strerror(&ze));
        zip_error_fini(&ze);
    }
    return s;
}

up_status up_npz_info(up_npz *npz, const char *key, up_npy_info *out, up_error *err) {
    member_reader r;
    up_status s = reader_open(npz, key, &r, err);
    if (s != UP_OK) return s;
    *out = r.info;
    reader_close(&r);
    return UP_OK;
}

static int is_float(up_npy_type t) { return t == UP_NPY_F16 || t == UP_NPY_F32 || t == UP_NPY_F64; }

/* Streams the data of an open float member into dst as fp32. */
static up_status read_floats(up_npz *npz, const char *key, member_reader *r, float *dst,
                             up_error *err) {
    const up_npy_info *in = &r->info;
    if (in->type == UP_NPY_F32) return zread_exact(npz, r->zf, key, dst, in->data_bytes, err);
    enum { CHUNK = 8192 };
    union { uint16_t h[CHUNK]; double d[CHUNK]; } buf;
    uint64_t done = 0;
    while (done < in->numel) {
        uint64_t n = in->numel - done < CHUNK ? in->numel - done : CHUNK;
        up_status s = zread_exact(npz, r->zf, key, &buf, n * in->itemsize, err);
        if (s != UP_OK) return s;
        if (in->type == UP_NPY_F16) up_convert_to_f32(dst + done, buf.h, UP_DTYPE_F16, (size_t)n);
        else
            for (uint64_t i = 0; i < n; i++) dst[done + i] = (float)buf.d[i];
        done += n;
    }
    return UP_OK;
}

up_status up_npz_read_f32_into(up_npz *npz, const char *key, float *dst, uint64_t numel,
                               up_error *err) {
    member_reader r;
    up_status s = reader_open(npz, key, &r, err);
    if (s != UP_OK) return s;
    if (!is_float(r.info.type))
        s = up_error_set(err, UP_ERR_UNSUPPORTED, "%s: member %s.npy has dtype '%s', not a float",
                         npz->path, key, r.info.descr);
    else if (r.info.numel != numel)
        s = up_error_set(err, UP_ERR_INVALID, "%s: member %s.npy holds %llu elements, not %llu",
                         npz->path, key, (unsigned long long)r.info.numel,
                         (unsigned long long)numel);
    if (s == UP_OK) s = read_floats(npz, key, &r, dst, err);
    if (s == UP_OK) return reader_finish(npz, key, &r, err);
    reader_close(&r);
    return s;
}

up_status up_npz_read_f32(up_npz *npz, const char *key, float **data, int *ndim,
                          int64_t shape[UP_MAX_DIMS], up_error *err) {
    *data = NULL;
    member_reader r;
    up_status s = reader_open(npz, key, &r, err);
    if (s != UP_OK) return s;
    float *buf = NULL;
    if (!is_float(r.info.type))
        s = up_error_set(err, UP_ERR_UNSUPPORTED, "%s: member %s.npy has dtype '%s', not a float",
                         npz->path, key, r.info.descr);
    else if (r.info.numel > SIZE_MAX / sizeof(float) ||
             !(buf = malloc(r.info.numel ? (size_t)r.info.numel * sizeof(float) : 1)))
        s = up_error_set(err, UP_ERR_NOMEM, "%s: member %s.npy: out of memory for %llu floats",
                         npz->path, key, (unsigned long long)r.info.numel);
    if (s == UP_OK) s = read_floats(npz, key, &r, buf, err);
    if (s == UP_OK) s = reader_finish(npz, key, &r, err);
    else reader_close(&r);
    if (s != UP_OK) {
        free(buf);
        return s;
    }
    *data = buf;
    *ndim = r.info.ndim;
    for (int i = 0; i < UP_MAX_DIMS; i++) shape[i] = i < r.info.ndim ? r.info.shape[i] : 0;
    return UP_OK;
}

up_status up_npz_read(up_npz *npz, const char *key, void **data, up_npy_info *info,
                      up_error *err) {
    *data = NULL;
    member_reader r;
    up_status s = reader_open(npz, key, &r, err);
    if (s != UP_OK) return s;
    void *buf = NULL;
    if (r.info.data_bytes > SIZE_MAX ||
        !(buf = malloc(r.info.data_bytes ? (size_t)r.info.data_bytes : 1)))
        s = up_error_set(err, UP_ERR_NOMEM, "%s: member %s.npy: out of memory", npz->path, key);
    if (s == UP_OK) s = zread_exact(npz, r.zf, key, buf, r.info.data_bytes, err);
    if (s == UP_OK) s = reader_finish(npz, key, &r, err);
    else reader_close(&r);
    if (s != UP_OK) {
        free(buf);
        return s;
    }
    *data = buf;
    if (info) *info = r.info;
    return UP_OK;
}
