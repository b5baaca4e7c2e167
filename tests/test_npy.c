/* npy/npz: header parsing (good and bad dicts), npz archives built here with libzip (stored
 * and deflated) and by hand (zip64, as numpy writes members), and corrupt archives. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "formats/npy.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("npy")

/* An in-memory .npy: header dict `dict` (padded as numpy pads it) then data. */
typedef struct npy_buf {
    unsigned char *p;
    size_t len;
} npy_buf;

static npy_buf make_npy(int major, const char *dict, const void *data, size_t data_len) {
    size_t prefix = major == 1 ? 10 : 12;
    size_t dlen = strlen(dict);
    size_t total = (prefix + dlen + 1 + 63) / 64 * 64; /* dict + '\n', padded to 64 */
    npy_buf b = {malloc(total + data_len), total + data_len};
    assert_non_null(b.p);
    memcpy(b.p, "\x93NUMPY", 6);
    b.p[6] = (unsigned char)major;
    b.p[7] = 0;
    size_t hl = total - prefix;
    for (size_t i = 0; i < prefix - 8; i++) b.p[8 + i] = (unsigned char)(hl >> (8 * i));
    memcpy(b.p + prefix, dict, dlen);
    memset(b.p + prefix + dlen, ' ', hl - dlen - 1);
    b.p[total - 1] = '\n';
    if (data_len) memcpy(b.p + total, data, data_len);
    return b;
}

static npy_buf make_f32(const char *shape, const float *v, size_t n) {
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shape);
    return make_npy(1, dict, v, n * sizeof(float));
}

/* --- header parsing ------------------------------------------------------------------- */

static up_status parse(const char *dict, int major, up_npy_info *info, up_error *err) {
    npy_buf b = make_npy(major, dict, NULL, 0);
    up_status s = up_npy_parse_header(b.p, b.len, info, err);
    free(b.p);
    return s;
}

static void test_header_ok(void **state) {
    (void)state;
    up_npy_info info;
    up_error err = {0};
    assert_int_equal(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1,
                           &info, &err), UP_OK);
    assert_int_equal(info.type, UP_NPY_F32);
    assert_int_equal(info.itemsize, 4);
    assert_int_equal(info.ndim, 2);
    assert_int_equal(info.shape[0], 2);
    assert_int_equal(info.shape[1], 3);
    assert_int_equal(info.numel, 6);
    assert_int_equal(info.data_bytes, 24);
    assert_int_equal(info.header_bytes, 128);
    assert_string_equal(info.descr, "<f4");

    for (int major = 2; major <= 3; major++) {
        assert_int_equal(parse("{'descr': '<f2', 'fortran_order': False, 'shape': (7,), }", major,
                               &info, &err), UP_OK);
        assert_int_equal(info.type, UP_NPY_F16);
        assert_int_equal(info.ndim, 1);
        assert_int_equal(info.shape[0], 7);
        assert_int_equal(info.header_bytes % 64, 0);
    }
    /* 0-d, key order, double quotes, no trailing comma, Python 2 longs, odd spacing. */
    assert_int_equal(parse("{'shape': (), 'fortran_order': False, 'descr': '<i8'}", 1, &info,
                           &err), UP_OK);
    assert_int_equal(info.ndim, 0);
    assert_int_equal(info.numel, 1);
    assert_int_equal(info.type, UP_NPY_I64);
    assert_int_equal(parse("{\"descr\":\"|u1\",\"fortran_order\":False,\"shape\":(3L,4L)}", 1,
                           &info, &err), UP_OK);
    assert_int_equal(info.type, UP_NPY_U8);
    assert_int_equal(info.numel, 12);
    assert_int_equal(parse("{ 'descr' : '<i4' , 'fortran_order' : False , 'shape' : ( 0 , 5 ) , }",
                           1, &info, &err), UP_OK);
    assert_int_equal(info.type, UP_NPY_I32);
    assert_int_equal(info.numel, 0);
    assert_int_equal(info.data_bytes, 0);
    /* fortran_order is harmless for 0-1 dimensions. */
    assert_int_equal(parse("{'descr': '<f8', 'fortran_order': True, 'shape': (4,), }", 1, &info,
                           &err), UP_OK);
    assert_int_equal(info.type, UP_NPY_F64);
    assert_int_equal(parse("{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }", 1, &info,
                           &err), UP_OK);
    assert_int_equal(info.type, UP_NPY_BOOL);
}

static void expect_parse(const char *dict, up_status want, const char *needle) {
    up_npy_info info;
    up_error err = {0};
    up_status s = parse(dict, 1, &info, &err);
    if (s != want || !strstr(err.msg, needle))
        fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\"", dict, up_status_name(s),
                 err.msg, up_status_name(want), needle);
}

static void test_header_errors(void **state) {
    (void)state;
    expect_parse("['descr', '<f4']", UP_ERR_FORMAT, "not a dict");
    expect_parse("{'descr': '<f4', 'fortran_order': False}", UP_ERR_FORMAT, "'shape'");
    expect_parse("{'descr': '<f4', 'shape': (1,)}", UP_ERR_FORMAT, "'fortran_order'");
    expect_parse("{'fortran_order': False, 'shape': (1,)}", UP_ERR_FORMAT, "'descr'");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
                 UP_ERR_FORMAT, "extra");
    expect_parse("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                 UP_ERR_FORMAT, "repeats");
    expect_parse("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", UP_ERR_FORMAT,
                 "bool");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", UP_ERR_FORMAT,
                 "tuple");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (3)}", UP_ERR_FORMAT, "tuple");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,)}", UP_ERR_FORMAT,
                 "non-negative");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}", UP_ERR_FORMAT,
                 "shape");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
                 UP_ERR_FORMAT, "shape");
    expect_parse("{'descr': '<f4', 'fortran_order': False, "
                 "'shape': (4294967296, 4294967296, 4,)}", UP_ERR_FORMAT, "overflow");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", UP_ERR_FORMAT,
                 "trailing");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", UP_ERR_FORMAT,
                 "malformed");
    expect_parse("{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", UP_ERR_FORMAT, "");
    expect_parse("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", UP_ERR_UNSUPPORTED,
                 "Fortran");
    expect_parse("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", UP_ERR_UNSUPPORTED,
                 "big-endian");
    expect_parse("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", UP_ERR_UNSUPPORTED,
                 "|O");
    expect_parse("{'descr': '<U5', 'fortran_order': False, 'shape': (2,), }", UP_ERR_UNSUPPORTED,
                 "<U5");
    expect_parse("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", UP_ERR_UNSUPPORTED,
                 "<c8");
    expect_parse("{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }", UP_ERR_UNSUPPORTED,
                 "<f3");
    expect_parse("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
                 UP_ERR_UNSUPPORTED, "structured");
    expect_parse("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
                 UP_ERR_UNSUPPORTED, "dimensions");

    up_npy_info info;
    up_error err = {0};
    npy_buf b = make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", NULL, 0);
    assert_int_equal(up_npy_parse_header(b.p, b.len - 1, &info, &err), UP_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    assert_int_equal(up_npy_parse_header(b.p, 5, &info, &err), UP_ERR_FORMAT);
    assert_int_equal(up_npy_parse_header(b.p, 0, &info, &err), UP_ERR_FORMAT);
    b.p[0] = 'X';
    assert_int_equal(up_npy_parse_header(b.p, b.len, &info, &err), UP_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "magic"));
    b.p[0] = 0x93;
    b.p[6] = 4;
    assert_int_equal(up_npy_parse_header(b.p, b.len, &info, &err), UP_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "version"));
    free(b.p);
    /* A v2 header claiming a multi-gigabyte dict is refused before anything is allocated. */
    unsigned char v2[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(up_npy_parse_header(v2, sizeof v2, &info, &err), UP_ERR_FORMAT);
}

/* --- npz ------------------------------------------------------------------------------ */

typedef struct member {
    const char *name;
    npy_buf npy;
} member;

static void write_npz(const char *path, member *m, int n, zip_int32_t method) {
    int code;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &code);
    assert_non_null(za);
    for (int i = 0; i < n; i++) {
        zip_source_t *src = zip_source_buffer(za, m[i].npy.p, m[i].npy.len, 0);
        assert_non_null(src);
        zip_int64_t idx = zip_file_add(za, m[i].name, src, ZIP_FL_ENC_UTF_8);
        assert_true(idx >= 0);
        assert_int_equal(zip_set_file_compression(za, (zip_uint64_t)idx, method, 9), 0);
    }
    assert_int_equal(zip_close(za), 0);
}

static void free_members(member *m, int n) {
    for (int i = 0; i < n; i++) free(m[i].npy.p);
}

static void put16(unsigned char **p, unsigned v) {
    (*p)[0] = (unsigned char)v, (*p)[1] = (unsigned char)(v >> 8);
    *p += 2;
}
static void put32(unsigned char **p, uint32_t v) {
    for (int i = 0; i < 4; i++) (*p)[i] = (unsigned char)(v >> (8 * i));
    *p += 4;
}
static void put64(unsigned char **p, uint64_t v) {
    for (int i = 0; i < 8; i++) (*p)[i] = (unsigned char)(v >> (8 * i));
    *p += 8;
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* One stored member in a zip64 archive, the way numpy.savez forces zip64 on every member:
 * local and central headers carry 0xFFFFFFFF sizes and a zip64 extra field, and the archive
 * ends with a zip64 end-of-central-directory record and locator. */
static void write_zip64_stored(const char *path, const char *name, const npy_buf *npy) {
    size_t nlen = strlen(name);
    unsigned char *buf = malloc(256 + 2 * nlen + npy->len);
    assert_non_null(buf);
    unsigned char *p = buf;
    uint32_t crc = crc32_of(npy->p, npy->len);
    /* local file header */
    put32(&p, 0x04034b50); put16(&p, 45); put16(&p, 0); put16(&p, 0); /* stored */
    put16(&p, 0); put16(&p, 0x21);                                   /* time, date */
    put32(&p, crc); put32(&p, 0xffffffffu); put32(&p, 0xffffffffu);
    put16(&p, (unsigned)nlen); put16(&p, 20);
    memcpy(p, name, nlen), p += nlen;
    put16(&p, 0x0001); put16(&p, 16); put64(&p, npy->len); put64(&p, npy->len);
    memcpy(p, npy->p, npy->len), p += npy->len;
    /* central directory */
    size_t cd_off = (size_t)(p - buf);
    put32(&p, 0x02014b50); put16(&p, 45); put16(&p, 45); put16(&p, 0); put16(&p, 0);
    put16(&p, 0); put16(&p, 0x21);
    put32(&p, crc); put32(&p, 0xffffffffu); put32(&p, 0xffffffffu);
    put16(&p, (unsigned)nlen); put16(&p, 28); put16(&p, 0); put16(&p, 0); put16(&p, 0);
    put32(&p, 0); put32(&p, 0xffffffffu);
    memcpy(p, name, nlen), p += nlen;
    put16(&p, 0x0001); put16(&p, 24); put64(&p, npy->len); put64(&p, npy->len); put64(&p, 0);
    size_t cd_len = (size_t)(p - buf) - cd_off;
    /* zip64 end of central directory record + locator */
    size_t eocd64 = (size_t)(p - buf);
    put32(&p, 0x06064b50); put64(&p, 44); put16(&p, 45); put16(&p, 45); put32(&p, 0);
    put32(&p, 0); put64(&p, 1); put64(&p, 1); put64(&p, cd_len); put64(&p, cd_off);
    put32(&p, 0x07064b50); put32(&p, 0); put64(&p, eocd64); put32(&p, 1);
    /* end of central directory */
    put32(&p, 0x06054b50); put16(&p, 0); put16(&p, 0); put16(&p, 0xffff); put16(&p, 0xffff);
    put32(&p, 0xffffffffu); put32(&p, 0xffffffffu); put16(&p, 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, (size_t)(p - buf), f), (size_t)(p - buf));
    fclose(f);
    free(buf);
}

static const float M23[6] = {1.5f, -2.0f, 3.25f, 0.0f, -1e-3f, 1e6f};

static void check_npz_contents(const char *path) {
    up_npz *npz;
    up_error err = {0};
    assert_int_equal(up_npz_open(&npz, path, &err), UP_OK);
    assert_int_equal(up_npz_count(npz), 5);
    assert_string_equal(up_npz_key(npz, 0), "W_enc");
    assert_string_equal(up_npz_key(npz, 1), "double");
    assert_string_equal(up_npz_key(npz, 4), "scalar");
    assert_null(up_npz_key(npz, 5));
    assert_true(up_npz_has(npz, "W_enc"));
    assert_false(up_npz_has(npz, "W_enc.npy"));
    assert_false(up_npz_has(npz, "readme"));

    float *d;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    assert_int_equal(up_npz_read_f32(npz, "W_enc", &d, &ndim, shape, &err), UP_OK);
    assert_int_equal(ndim, 2);
    assert_int_equal(shape[0], 2);
    assert_int_equal(shape[1], 3);
    assert_memory_equal(d, M23, sizeof M23);
    free(d);

    assert_int_equal(up_npz_read_f32(npz, "half", &d, &ndim, shape, &err), UP_OK);
    assert_int_equal(ndim, 1);
    assert_true(d[0] == 1.0f && d[1] == -2.0f && d[2] == 65504.0f);
    free(d);

    assert_int_equal(up_npz_read_f32(npz, "double", &d, &ndim, shape, &err), UP_OK);
    assert_true(d[0] == 0.5f && d[1] == (float)0.1);
    free(d);

    assert_int_equal(up_npz_read_f32(npz, "scalar", &d, &ndim, shape, &err), UP_OK);
    assert_int_equal(ndim, 0);
    assert_true(d[0] == 7.0f);
    free(d);

    float into[6];
    assert_int_equal(up_npz_read_f32_into(npz, "W_enc", into, 6, &err), UP_OK);
    assert_memory_equal(into, M23, sizeof M23);
    assert_int_equal(up_npz_read_f32_into(npz, "W_enc", into, 5, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "W_enc"));

    /* Integers come back raw, and are refused as floats. */
    void *raw;
    up_npy_info info;
    assert_int_equal(up_npz_read(npz, "ints", &raw, &info, &err), UP_OK);
    assert_int_equal(info.type, UP_NPY_I32);
    assert_int_equal(((int32_t *)raw)[2], -5);
    free(raw);
    assert_int_equal(up_npz_read_f32(npz, "ints", &d, &ndim, shape, &err), UP_ERR_UNSUPPORTED);
    assert_null(d);
    assert_int_equal(up_npz_info(npz, "ints", &info, &err), UP_OK);
    assert_int_equal(info.numel, 3);

    assert_int_equal(up_npz_read_f32(npz, "missing", &d, &ndim, shape, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "missing"));
    assert_non_null(strstr(err.msg, path));
    up_npz_close(npz);
    up_npz_close(NULL);
}

static int build_members(member *m) {
    uint16_t half[3] = {0x3c00, 0xc000, 0x7bff};
    double dbl[2] = {0.5, 0.1};
    int32_t ints[3] = {1, 2, -5};
    float scalar = 7.0f;
    m[0] = (member){"W_enc.npy", make_f32("(2, 3)", M23, 6)};
    m[1] = (member){"half.npy",
                    make_npy(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", half,
                             sizeof half)};
    m[2] = (member){"double.npy",
                    make_npy(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", dbl,
                             sizeof dbl)};
    m[3] = (member){"ints.npy",
                    make_npy(3, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", ints,
                             sizeof ints)};
    m[4] = (member){"scalar.npy", make_f32("()", &scalar, 1)};
    m[5] = (member){"readme.txt", {(unsigned char *)strdup("not an array"), 12}};
    return 6;
}

static void test_npz_stored_and_deflated(void **state) {
    (void)state;
    member m[8];
    int n = build_members(m);
    write_npz(tpath("stored.npz"), m, n, ZIP_CM_STORE);
    write_npz(tpath("deflated.npz"), m, n, ZIP_CM_DEFLATE);
    free_members(m, n);
    check_npz_contents(tpath("stored.npz"));
    check_npz_contents(tpath("deflated.npz"));
}

static void test_npz_zip64(void **state) {
    (void)state;
    npy_buf b = make_f32("(2, 3)", M23, 6);
    write_zip64_stored(tpath("zip64.npz"), "W_dec.npy", &b);
    free(b.p);
    up_npz *npz;
    up_error err = {0};
    if (up_npz_open(&npz, tpath("zip64.npz"), &err) != UP_OK) fail_msg("%s", err.msg);
    float *d;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    if (up_npz_read_f32(npz, "W_dec", &d, &ndim, shape, &err) != UP_OK) fail_msg("%s", err.msg);
    assert_int_equal(ndim, 2);
    assert_memory_equal(d, M23, sizeof M23);
    free(d);
    up_npz_close(npz);
}

static void expect_open_fails(const char *path, up_status want) {
    up_npz *npz = (up_npz *)0x1;
    up_error err = {0};
    up_status s = up_npz_open(&npz, path, &err);
    if (s != want) fail_msg("%s: got %s \"%s\"", path, up_status_name(s), err.msg);
    assert_null(npz);
    assert_non_null(strstr(err.msg, path));
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static void test_corrupt_zip(void **state) {
    (void)state;
    expect_open_fails(tpath("absent.npz"), UP_ERR_IO);

    unsigned char garbage[4096];
    for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (unsigned char)(i * 2654435761u >> 13);
    write_file(tpath("garbage.npz"), garbage, sizeof garbage);
    expect_open_fails(tpath("garbage.npz"), UP_ERR_FORMAT);

    /* A valid archive cut short loses its central directory. */
    member m[8];
    int n = build_members(m);
    write_npz(tpath("whole.npz"), m, n, ZIP_CM_DEFLATE);
    free_members(m, n);
    size_t len;
    unsigned char *whole = slurp(tpath("whole.npz"), &len);
    write_file(tpath("half.npz"), whole, len / 2);
    expect_open_fails(tpath("half.npz"), UP_ERR_FORMAT);

    /* Every truncation fails cleanly at open or at read; none crashes (see the ASan build). */
    for (size_t cut = 0; cut < len; cut++) {
        write_file(tpath("cut.npz"), whole, cut);
        up_npz *npz;
        up_error err = {0};
        if (up_npz_open(&npz, tpath("cut.npz"), &err) != UP_OK) continue;
        float *d = NULL;
        int ndim;
        int64_t shape[UP_MAX_DIMS];
        int ok = 1;
        for (int i = 0; i < up_npz_count(npz); i++) {
            if (up_npz_read_f32(npz, up_npz_key(npz, i), &d, &ndim, shape, &err) == UP_OK) free(d);
            else ok = 0;
        }
        /* An empty file reads as an empty archive; anything longer must lose something. */
        assert_true(!ok || up_npz_count(npz) == 0);
        up_npz_close(npz);
    }

    /* Flip one data byte of a stored member: the CRC check catches it on read. */
    npy_buf b = make_f32("(2, 3)", M23, 6);
    member one[1] = {{"W.npy", b}};
    write_npz(tpath("crc.npz"), one, 1, ZIP_CM_STORE);
    free(b.p);
    unsigned char *z = slurp(tpath("crc.npz"), &len);
    unsigned char *hit = memmem(z, len, M23, sizeof M23);
    assert_non_null(hit);
    hit[5] ^= 0x40;
    write_file(tpath("crc.npz"), z, len);
    free(z);
    up_npz *npz;
    up_error err = {0};
    assert_int_equal(up_npz_open(&npz, tpath("crc.npz"), &err), UP_OK);
    float *d;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    assert_int_equal(up_npz_read_f32(npz, "W", &d, &ndim, shape, &err), UP_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "W.npy"));
    up_npz_close(npz);
    free(whole);
}

static void expect_member_error(up_npz *npz, const char *key, up_status want, const char *needle) {
    float *d = (float *)0x1;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    up_error err = {0};
    up_status s = up_npz_read_f32(npz, key, &d, &ndim, shape, &err);
    if (s != want || !strstr(err.msg, needle) || !strstr(err.msg, key))
        fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\"", key, up_status_name(s),
                 err.msg, up_status_name(want), needle);
    assert_null(d);
    up_npy_info info;
    assert_int_equal(up_npz_info(npz, key, &info, &err), want);
}

static void test_corrupt_members(void **state) {
    (void)state;
    npy_buf bad_magic = make_f32("(2, 3)", M23, 6);
    bad_magic.p[1] = 'X';
    member m[] = {
        {"bad_magic.npy", bad_magic},
        {"bad_dict.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3) ",
                                  M23, sizeof M23)},
        {"short_data.npy", make_f32("(2, 3)", M23, 5)},
        {"long_data.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
                                   M23, sizeof M23)},
        {"fortran.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                                 M23, sizeof M23)},
        {"tiny.npy", {(unsigned char *)strdup("\x93NUM"), 4}},
        {"cut_header.npy", {NULL, 0}},
        {"pickle.npy", make_npy(1, "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                                "\x80\x04N.", 4)},
        /* A 1.0 header of 10 bytes (an empty dict) and data: reading a 2.0 prefix overran it
         * (an AddressSanitizer report, found by tests/fuzz/fuzz_npz.c). */
        {"empty_dict.npy", {(unsigned char *)memcpy(malloc(14), "\x93NUMPY\x01\x00\x00\x00" "abcd", 14), 14}},
    };
    npy_buf full = make_f32("(2, 3)", M23, 6);
    m[6].npy.p = full.p;
    m[6].npy.len = 30; /* inside the 64-byte header */
    int n = (int)(sizeof m / sizeof m[0]);
    for (int pass = 0; pass < 2; pass++) {
        const char *path = tpath(pass ? "bad_members_deflated.npz" : "bad_members.npz");
        write_npz(path, m, n, pass ? ZIP_CM_DEFLATE : ZIP_CM_STORE);
        up_npz *npz;
        up_error err = {0};
        assert_int_equal(up_npz_open(&npz, path, &err), UP_OK);
        expect_member_error(npz, "bad_magic", UP_ERR_FORMAT, "magic");
        expect_member_error(npz, "bad_dict", UP_ERR_FORMAT, "malformed");
        expect_member_error(npz, "short_data", UP_ERR_FORMAT, "bytes of data");
        expect_member_error(npz, "long_data", UP_ERR_FORMAT, "bytes of data");
        expect_member_error(npz, "fortran", UP_ERR_UNSUPPORTED, "Fortran");
        expect_member_error(npz, "tiny", UP_ERR_FORMAT, "tiny.npy");
        expect_member_error(npz, "cut_header", UP_ERR_FORMAT, "truncated");
        expect_member_error(npz, "pickle", UP_ERR_UNSUPPORTED, "|O");
        expect_member_error(npz, "empty_dict", UP_ERR_FORMAT, "empty_dict.npy");
        expect_member_error(npz, "nothing_here", UP_ERR_INVALID, "no array");
        up_npz_close(npz);
    }
    free_members(m, n);
}

/* Two members with the same name cannot both be the array. */
static void test_duplicate_member(void **state) {
    (void)state;
    npy_buf b = make_f32("(2, 3)", M23, 6);
    size_t len;
    unsigned char *z;
    /* libzip refuses to add a duplicate name; rename the second entry after writing. */
    member m[2] = {{"A.npy", b}, {"B.npy", b}};
    write_npz(tpath("dup.npz"), m, 2, ZIP_CM_STORE);
    z = slurp(tpath("dup.npz"), &len);
    for (size_t i = 0; i + 5 <= len; i++)
        if (memcmp(z + i, "B.npy", 5) == 0) z[i] = 'A';
    write_file(tpath("dup.npz"), z, len);
    free(z);
    free(b.p);
    up_npz *npz = NULL;
    up_error err = {0};
    up_status s = up_npz_open(&npz, tpath("dup.npz"), &err);
    assert_int_equal(s, UP_ERR_FORMAT);
    assert_null(npz);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_ok),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_npz_stored_and_deflated),
        cmocka_unit_test(test_npz_zip64),
        cmocka_unit_test(test_corrupt_zip),
        cmocka_unit_test(test_corrupt_members),
        cmocka_unit_test(test_duplicate_member),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
