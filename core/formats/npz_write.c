#include "formats/npz_write.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zip.h>

#include "base/fs.h"

#define NPY_ALIGN 64         /* numpy >= 1.14 aligns the data of every .npy it writes to 64 */
#define NPY_PREFIX_V1 10     /* magic(6) + version(2) + u16 length */
#define NPZ_MTIME 946684800  /* 2000-01-01 UTC: a fixed member time keeps the bytes stable */

size_t up_npy_header_f32(char *buf, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > UP_MAX_DIMS) return 0;
    char dict[UP_NPY_HEADER_MAX];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return 0;
        /* Python's tuple repr: "(n,)" for one element, "(a, b)" for more. */
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%s%" PRId64, i ? ", " : "",
                        shape[i]);
    }
    len += snprintf(dict + len, sizeof dict - (size_t)len, "%s), }", ndim == 1 ? "," : "");
    /* numpy >= 1.24 leaves room for the first axis to grow to 21 digits, then pads with spaces
     * (always at least one, a whole 64 when the rest fits exactly) before the final '\n'. */
    if (ndim > 0) {
        char digits[24];
        int nd = snprintf(digits, sizeof digits, "%" PRId64, shape[0]);
        for (; nd < 21; nd++) dict[len++] = ' ';
    }
    size_t with_nl = (size_t)len + 1;
    size_t pad = NPY_ALIGN - (NPY_PREFIX_V1 + with_nl) % NPY_ALIGN;
    size_t total = NPY_PREFIX_V1 + with_nl + pad;
    if (total > UP_NPY_HEADER_MAX) return 0;
    size_t hlen = total - NPY_PREFIX_V1; /* dict, padding and '\n' */
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + NPY_PREFIX_V1, dict, (size_t)len);
    memset(buf + NPY_PREFIX_V1 + len, ' ', hlen - (size_t)len - 1);
    buf[total - 1] = '\n';
    return total;
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static up_status check_arrays(const char *path, const up_npz_array *arrays, int n,
                              up_error *err) {
    if (n < 1 || !arrays)
        return up_error_set(err, UP_ERR_INVALID, "%s: no arrays to write", path);
    for (int i = 0; i < n; i++) {
        const up_npz_array *a = &arrays[i];
        if (!a->key || !a->key[0] || strchr(a->key, '/') || strlen(a->key) > 200)
            return up_error_set(err, UP_ERR_INVALID, "%s: array %d has a bad key \"%s\"", path, i,
                                a->key ? a->key : "(null)");
        for (int j = 0; j < i; j++)
            if (!strcmp(arrays[j].key, a->key))
                return up_error_set(err, UP_ERR_INVALID, "%s: key %s is given twice", path,
                                    a->key);
        if (a->ndim < 0 || a->ndim > UP_MAX_DIMS)
            return up_error_set(err, UP_ERR_INVALID, "%s: %s has %d dimensions (at most %d)", path,
                                a->key, a->ndim, UP_MAX_DIMS);
        uint64_t numel = 1;
        for (int j = 0; j < a->ndim; j++) {
            if (a->shape[j] < 0)
                return up_error_set(err, UP_ERR_INVALID, "%s: %s has a negative dimension", path,
                                    a->key);
            numel *= (uint64_t)a->shape[j];
        }
        if (numel && !a->data)
            return up_error_set(err, UP_ERR_INVALID, "%s: %s has no data", path, a->key);
    }
    return UP_OK;
}

static uint64_t numel_of(const up_npz_array *a) {
    uint64_t numel = 1;
    for (int j = 0; j < a->ndim; j++) numel *= (uint64_t)a->shape[j];
    return numel;
}

up_status up_npz_write_f32(const char *path, const up_npz_array *arrays, int n,
                           up_npz_compression compression, up_error *err) {
    up_status s = check_arrays(path, arrays, n, err);
    if (s != UP_OK) return s;
    if (!host_is_little_endian())
        return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: writing .npy needs a little-endian host",
                            path);
    /* libzip reads the sources only in zip_close, so every header must live until then. */
    char *headers = malloc((size_t)n * UP_NPY_HEADER_MAX);
    char *tmp = up_fs_temp_path(path);
    if (!headers || !tmp) {
        free(headers), free(tmp);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    unlink(tmp);
    int zerr = 0;
    zip_t *za = zip_open(tmp, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        s = up_error_set(err, UP_ERR_IO, "%s: cannot create: %s", tmp, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        free(headers), free(tmp);
        return s;
    }
    for (int i = 0; i < n && s == UP_OK; i++) {
        const up_npz_array *a = &arrays[i];
        char *hdr = headers + (size_t)i * UP_NPY_HEADER_MAX;
        size_t hlen = up_npy_header_f32(hdr, a->ndim, a->shape);
        uint64_t bytes = numel_of(a) * sizeof(float);
        zip_buffer_fragment_t frag[2] = {{(zip_uint8_t *)hdr, hlen},
                                         {(zip_uint8_t *)a->data, bytes}};
        zip_source_t *src = zip_source_buffer_fragment(za, frag, bytes ? 2 : 1, 0);
        char name[256];
        snprintf(name, sizeof name, "%s.npy", a->key);
        zip_int64_t idx = src ? zip_file_add(za, name, src, ZIP_FL_ENC_UTF_8) : -1;
        if (idx < 0) {
            if (src) zip_source_free(src);
            s = up_error_set(err, UP_ERR_IO, "%s: cannot add %s: %s", path, name,
                             zip_strerror(za));
            break;
        }
        if (zip_set_file_compression(za, (zip_uint64_t)idx,
                                     compression == UP_NPZ_DEFLATED ? ZIP_CM_DEFLATE : ZIP_CM_STORE,
                                     0) != 0 ||
            zip_file_set_mtime(za, (zip_uint64_t)idx, (time_t)NPZ_MTIME, 0) != 0)
            s = up_error_set(err, UP_ERR_IO, "%s: cannot set up %s: %s", path, name,
                             zip_strerror(za));
    }
    if (s == UP_OK && zip_close(za) != 0) {
        s = up_error_set(err, UP_ERR_IO, "%s: cannot write: %s", tmp, zip_strerror(za));
        zip_discard(za);
    } else if (s != UP_OK) {
        zip_discard(za);
    }
    s = up_fs_replace(tmp, path, s, err);
    free(headers), free(tmp);
    return s;
}
