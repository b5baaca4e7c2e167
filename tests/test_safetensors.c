/* safetensors: writer -> reader round trip, sharded directories, and a catalogue of corrupt
 * files (generated here in a temporary directory) that must each come back as an error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("st")

/* Writes an 8-byte length (or `hlen_override` when non-zero), the header, then `data_len`
 * bytes of data (a counting pattern). */
static void write_raw(const char *path, const char *header, uint64_t hlen_override,
                      size_t data_len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hlen >> (8 * i));
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, strlen(header), f), strlen(header));
    for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xff), f);
    fclose(f);
}

/* Like write_raw, with the header space-padded so the data area starts 8-byte aligned. */
static void write_padded(const char *path, const char *header, size_t data_len) {
    size_t n = strlen(header), padded = (n + 7) & ~(size_t)7;
    char *h = malloc(padded + 1);
    assert_non_null(h);
    memcpy(h, header, n);
    memset(h + n, ' ', padded - n);
    h[padded] = 0;
    write_raw(path, h, 0, data_len);
    free(h);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* Opens PATH expecting failure with STATUS and a message containing NEEDLE. */
static void expect_open_error(const char *path, up_status status, const char *needle) {
    up_safetensors *st = (up_safetensors *)0x1;
    up_error err = {0};
    up_status s = up_safetensors_open_file(&st, path, &err);
    if (s != status || !strstr(err.msg, needle))
        fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\"", path, up_status_name(s),
                 err.msg, up_status_name(status), needle);
    assert_null(st);
}

static void test_round_trip(void **state) {
    (void)state;
    const char *path = tpath("rt.safetensors");
    float f32[6] = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
    uint16_t bf16[3] = {up_f32_to_bf16(1.0f), up_f32_to_bf16(-3.5f), up_f32_to_bf16(65504.f)};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001}; /* 1, -2, 65504, smallest subnormal */
    int32_t i32[2] = {-7, 2147483647};
    int64_t i64[1] = {-((int64_t)1 << 62)};
    float scalar = 42.0f;

    up_safetensors_writer *w;
    up_error err = {0};
    assert_int_equal(up_safetensors_writer_open(&w, path, &err), UP_OK);
    int64_t s23[] = {2, 3}, s3[] = {3}, s221[] = {2, 2, 1}, s2[] = {2}, s1[] = {1}, s0[] = {4, 0};
    assert_int_equal(up_safetensors_writer_add(w, "b.f32", UP_DTYPE_F32, 2, s23, f32, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "a.bf16", UP_DTYPE_BF16, 1, s3, bf16, &err),
                     UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "c.f16", UP_DTYPE_F16, 3, s221, f16, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "d.i32", UP_DTYPE_I32, 1, s2, i32, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "e.i64", UP_DTYPE_I64, 1, s1, i64, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "f.scalar", UP_DTYPE_F32, 0, NULL, &scalar, &err),
                     UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "g.empty", UP_DTYPE_F16, 2, s0, NULL, &err), UP_OK);
    /* Names are unique and __metadata__ is reserved. */
    assert_int_equal(up_safetensors_writer_add(w, "b.f32", UP_DTYPE_F32, 2, s23, f32, &err),
                     UP_ERR_INVALID);
    assert_int_equal(up_safetensors_writer_add(w, "__metadata__", UP_DTYPE_F32, 0, NULL, &scalar,
                                               &err),
                     UP_ERR_INVALID);
    assert_int_equal(up_safetensors_writer_metadata(w, "format", "pt", &err), UP_OK);
    assert_int_equal(up_safetensors_writer_metadata(w, "note", "héllo \"quoted\"", &err), UP_OK);
    assert_int_equal(up_safetensors_writer_close(w, &err), UP_OK);

    /* No temporary file is left behind. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);

    up_safetensors *st;
    assert_int_equal(up_safetensors_open_file(&st, path, &err), UP_OK);
    assert_int_equal(up_safetensors_count(st), 7);
    const char *sorted[] = {"a.bf16", "b.f32", "c.f16", "d.i32", "e.i64", "f.scalar", "g.empty"};
    for (int i = 0; i < 7; i++) assert_string_equal(up_safetensors_name(st, i), sorted[i]);
    assert_null(up_safetensors_name(st, 7));
    assert_null(up_safetensors_name(st, -1));

    struct { const char *name; up_dtype dt; int ndim; int64_t shape[3]; const void *data; size_t n; }
    want[] = {
        {"a.bf16", UP_DTYPE_BF16, 1, {3}, bf16, sizeof bf16},
        {"b.f32", UP_DTYPE_F32, 2, {2, 3}, f32, sizeof f32},
        {"c.f16", UP_DTYPE_F16, 3, {2, 2, 1}, f16, sizeof f16},
        {"d.i32", UP_DTYPE_I32, 1, {2}, i32, sizeof i32},
        {"e.i64", UP_DTYPE_I64, 1, {1}, i64, sizeof i64},
        {"f.scalar", UP_DTYPE_F32, 0, {0}, &scalar, sizeof scalar},
        {"g.empty", UP_DTYPE_F16, 2, {4, 0}, NULL, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        up_tensor t;
        assert_int_equal(up_safetensors_find(st, want[i].name, &t, &err), UP_OK);
        assert_int_equal(t.dtype, want[i].dt);
        assert_int_equal(t.ndim, want[i].ndim);
        for (int d = 0; d < t.ndim; d++) assert_int_equal(t.shape[d], want[i].shape[d]);
        assert_int_equal((uintptr_t)t.data % up_dtype_size(t.dtype), 0);
        if (want[i].n) assert_memory_equal(t.data, want[i].data, want[i].n);
        assert_int_equal((size_t)up_tensor_numel(&t) * up_dtype_size(t.dtype), want[i].n);
    }
    up_tensor t;
    assert_int_equal(up_safetensors_find(st, "nope", &t, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "nope"));
    assert_non_null(strstr(err.msg, "rt.safetensors"));

    assert_string_equal(up_safetensors_metadata(st, "format"), "pt");
    assert_string_equal(up_safetensors_metadata(st, "note"), "héllo \"quoted\"");
    assert_null(up_safetensors_metadata(st, "absent"));
    up_safetensors_close(st);
    up_safetensors_close(NULL);
}

/* The layout follows the format's reference reader: 8-byte-aligned data area, no gaps. */
static void test_writer_layout(void **state) {
    (void)state;
    const char *path = tpath("layout.safetensors");
    up_safetensors_writer *w;
    up_error err = {0};
    uint16_t h[3] = {1, 2, 3};
    float f[1] = {1};
    int64_t s3[] = {3}, s1[] = {1};
    assert_int_equal(up_safetensors_writer_open(&w, path, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "h", UP_DTYPE_F16, 1, s3, h, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "f", UP_DTYPE_F32, 1, s1, f, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_close(w, &err), UP_OK);

    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, fp), 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
    assert_int_equal((8 + hlen) % 8, 0);
    fseek(fp, 0, SEEK_END);
    assert_int_equal((uint64_t)ftell(fp), 8 + hlen + 4 + 6);
    fclose(fp);
}

static void test_writer_errors(void **state) {
    (void)state;
    up_safetensors_writer *w;
    up_error err = {0};
    float f = 1;
    int64_t neg[] = {-1};
    assert_int_equal(up_safetensors_writer_open(&w, tpath("no/such/dir/x.safetensors"), &err),
                     UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "x", UP_DTYPE_F32, 1, neg, &f, &err),
                     UP_ERR_INVALID);
    assert_int_equal(up_safetensors_writer_add(w, "\xff\xfe", UP_DTYPE_F32, 0, NULL, &f, &err),
                     UP_ERR_INVALID);
    assert_int_equal(up_safetensors_writer_add(w, "x", UP_DTYPE_F32, 0, NULL, &f, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_close(w, &err), UP_ERR_IO);
    assert_non_null(strstr(err.msg, "no/such/dir"));

    assert_int_equal(up_safetensors_writer_open(&w, tpath("aborted.safetensors"), &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, "x", UP_DTYPE_F32, 0, NULL, &f, &err), UP_OK);
    up_safetensors_writer_abort(w);
    up_safetensors_writer_abort(NULL);
    assert_int_not_equal(access(tpath("aborted.safetensors"), F_OK), 0);
}

/* Dtypes the format defines but we do not compute with are listed, and refused by find. */
static void test_unsupported_dtypes(void **state) {
    (void)state;
    const char *path = tpath("u8.safetensors");
    write_padded(path,
                 "{\"bytes\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                 "\"dbl\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]},"
                 "\"ok\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]},"
                 "\"deep\":{\"dtype\":\"I8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[3,4]}}",
                 20);
    up_safetensors *st;
    up_error err = {0};
    assert_int_equal(up_safetensors_open_file(&st, path, &err), UP_OK);
    assert_int_equal(up_safetensors_count(st), 4);
    up_tensor t;
    assert_int_equal(up_safetensors_find(st, "bytes", &t, &err), UP_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "U8"));
    assert_int_equal(up_safetensors_find(st, "dbl", &t, &err), UP_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "F64"));
    assert_int_equal(up_safetensors_find(st, "deep", &t, &err), UP_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "dimensions"));
    assert_int_equal(up_safetensors_find(st, "ok", &t, &err), UP_OK);
    up_safetensors_close(st);
}

static void test_misaligned(void **state) {
    (void)state;
    /* 8 + 62-byte header: the data area starts at offset 70, not a multiple of 4. */
    const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    char padded[128];
    snprintf(padded, sizeof padded, "%-62s", hdr);
    const char *path = tpath("misaligned.safetensors");
    write_raw(path, padded, 0, 4);
    up_safetensors *st;
    up_error err = {0};
    assert_int_equal(up_safetensors_open_file(&st, path, &err), UP_OK);
    up_tensor t;
    assert_int_equal(up_safetensors_find(st, "w", &t, &err), UP_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "misaligned"));
    up_safetensors_close(st);
}

static void test_corrupt_files(void **state) {
    (void)state;
    const char *one = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    write_bytes(tpath("empty.safetensors"), "", 0);
    expect_open_error(tpath("empty.safetensors"), UP_ERR_FORMAT, "too short");

    write_bytes(tpath("short.safetensors"), "\x10\x00\x00", 3);
    expect_open_error(tpath("short.safetensors"), UP_ERR_FORMAT, "short.safetensors");

    /* The length promises more header than the file holds. */
    write_raw(tpath("past_eof.safetensors"), one, strlen(one) + 100, 0);
    expect_open_error(tpath("past_eof.safetensors"), UP_ERR_FORMAT, "past the end");

    write_raw(tpath("huge.safetensors"), one, UINT64_MAX, 8);
    expect_open_error(tpath("huge.safetensors"), UP_ERR_FORMAT, "past the end");

    /* The header is cut short: valid length field, JSON truncated mid-object. */
    char cut[40];
    memcpy(cut, one, 30);
    cut[30] = 0;
    write_raw(tpath("truncated_header.safetensors"), cut, 0, 0);
    expect_open_error(tpath("truncated_header.safetensors"), UP_ERR_FORMAT, "JSON");

    write_raw(tpath("not_json.safetensors"), "{this is not json}", 0, 8);
    expect_open_error(tpath("not_json.safetensors"), UP_ERR_FORMAT, "JSON");

    write_raw(tpath("array.safetensors"), "[1, 2, 3]", 0, 0);
    expect_open_error(tpath("array.safetensors"), UP_ERR_FORMAT, "not a JSON object");

    write_raw(tpath("overlap.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              0, 12);
    expect_open_error(tpath("overlap.safetensors"), UP_ERR_FORMAT, "overlap");

    write_raw(tpath("out_of_range.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 12);
    expect_open_error(tpath("out_of_range.safetensors"), UP_ERR_FORMAT, "tensor a");

    write_raw(tpath("reversed.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 0, 12);
    expect_open_error(tpath("reversed.safetensors"), UP_ERR_FORMAT, "tensor a");

    write_raw(tpath("offset_huge.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
              "\"data_offsets\":[9223372036854775800,9223372036854775807]}}", 0, 12);
    expect_open_error(tpath("offset_huge.safetensors"), UP_ERR_FORMAT, "tensor a");

    write_raw(tpath("unknown_dtype.safetensors"),
              "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("unknown_dtype.safetensors"), UP_ERR_FORMAT, "F33");

    write_raw(tpath("mismatch.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("mismatch.safetensors"), UP_ERR_FORMAT, "tensor a");

    /* The shape's product overflows 64 bits; the wrapped product must not pass for 8 bytes. */
    write_raw(tpath("shape_overflow.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,2,1],"
              "\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("shape_overflow.safetensors"), UP_ERR_FORMAT, "tensor a");

    write_raw(tpath("negative_shape.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("negative_shape.safetensors"), UP_ERR_FORMAT, "shape");

    write_raw(tpath("float_shape.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("float_shape.safetensors"), UP_ERR_FORMAT, "shape");

    write_raw(tpath("missing_field.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, 8);
    expect_open_error(tpath("missing_field.safetensors"), UP_ERR_FORMAT, "data_offsets");

    write_raw(tpath("bad_utf8.safetensors"),
              "{\"a\xc3\x28\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("bad_utf8.safetensors"), UP_ERR_FORMAT, "JSON");

    write_raw(tpath("nul_name.safetensors"),
              "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8);
    expect_open_error(tpath("nul_name.safetensors"), UP_ERR_FORMAT, "JSON");

    write_raw(tpath("duplicate.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              0, 8);
    expect_open_error(tpath("duplicate.safetensors"), UP_ERR_FORMAT, "duplicate");

    write_raw(tpath("bad_metadata.safetensors"), "{\"__metadata__\":{\"k\":1}}", 0, 0);
    expect_open_error(tpath("bad_metadata.safetensors"), UP_ERR_FORMAT, "__metadata__");

    expect_open_error(tpath("does_not_exist.safetensors"), UP_ERR_IO, "does_not_exist");
    expect_open_error(tmpdir, UP_ERR_IO, "regular file");
}

/* Writes a two-tensor shard with the writer. */
static void write_shard(const char *path, const char *a, const char *b, float base) {
    up_safetensors_writer *w;
    up_error err = {0};
    float v[4] = {base, base + 1, base + 2, base + 3};
    int64_t s[] = {2, 2};
    assert_int_equal(up_safetensors_writer_open(&w, path, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, a, UP_DTYPE_F32, 2, s, v, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_add(w, b, UP_DTYPE_F32, 2, s, v, &err), UP_OK);
    char meta[32];
    snprintf(meta, sizeof meta, "%g", base);
    assert_int_equal(up_safetensors_writer_metadata(w, "base", meta, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_close(w, &err), UP_OK);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static const char *make_dir(const char *name) {
    const char *d = tpath(name);
    assert_int_equal(mkdir(d, 0755), 0);
    return d;
}

static char *dpath(const char *dir, const char *name) {
    static char buf[4][600];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 600, "%s/%s", dir, name);
    return p;
}

static void expect_dir_error(const char *dir, up_status status, const char *needle) {
    up_safetensors *st = (up_safetensors *)0x1;
    up_error err = {0};
    up_status s = up_safetensors_open_dir(&st, dir, &err);
    if (s != status || !strstr(err.msg, needle))
        fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\"", dir, up_status_name(s), err.msg,
                 up_status_name(status), needle);
    assert_null(st);
}

static const char *index_two =
    "{\"metadata\":{\"total_size\":64},\"weight_map\":{"
    "\"layer.0.w\":\"model-00001-of-00002.safetensors\","
    "\"layer.0.b\":\"model-00001-of-00002.safetensors\","
    "\"layer.1.w\":\"model-00002-of-00002.safetensors\","
    "\"layer.1.b\":\"model-00002-of-00002.safetensors\"}}";

static void test_sharded(void **state) {
    (void)state;
    const char *dir = make_dir("sharded");
    write_shard(dpath(dir, "model-00001-of-00002.safetensors"), "layer.0.w", "layer.0.b", 10);
    write_shard(dpath(dir, "model-00002-of-00002.safetensors"), "layer.1.w", "layer.1.b", 20);
    write_text(dpath(dir, "model.safetensors.index.json"), index_two);

    up_safetensors *st;
    up_error err = {0};
    assert_int_equal(up_safetensors_open_dir(&st, dir, &err), UP_OK);
    assert_int_equal(up_safetensors_count(st), 4);
    assert_string_equal(up_safetensors_name(st, 0), "layer.0.b");
    assert_string_equal(up_safetensors_name(st, 3), "layer.1.w");
    up_tensor t;
    assert_int_equal(up_safetensors_find(st, "layer.1.w", &t, &err), UP_OK);
    assert_true(((const float *)t.data)[3] == 23.0f);
    assert_int_equal(up_safetensors_find(st, "layer.0.b", &t, &err), UP_OK);
    assert_true(((const float *)t.data)[0] == 10.0f);
    assert_string_equal(up_safetensors_metadata(st, "base"), "10");
    assert_int_equal(up_safetensors_find(st, "layer.2.w", &t, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "sharded"));
    up_safetensors_close(st);

    /* A directory with a single model.safetensors. */
    const char *single = make_dir("single");
    write_shard(dpath(single, "model.safetensors"), "x", "y", 1);
    assert_int_equal(up_safetensors_open_dir(&st, single, &err), UP_OK);
    assert_int_equal(up_safetensors_count(st), 2);
    up_safetensors_close(st);

    expect_dir_error(make_dir("empty_dir"), UP_ERR_IO, "model.safetensors");
}

static void test_sharded_errors(void **state) {
    (void)state;
    /* Missing shard file: the message names it. */
    const char *d1 = make_dir("missing_shard");
    write_shard(dpath(d1, "model-00001-of-00002.safetensors"), "layer.0.w", "layer.0.b", 1);
    write_text(dpath(d1, "model.safetensors.index.json"), index_two);
    expect_dir_error(d1, UP_ERR_IO, "model-00002-of-00002.safetensors");

    /* A tensor the index lists is absent from its shard. */
    const char *d2 = make_dir("absent_tensor");
    write_shard(dpath(d2, "model-00001-of-00002.safetensors"), "layer.0.w", "layer.0.b", 1);
    write_shard(dpath(d2, "model-00002-of-00002.safetensors"), "layer.1.w", "layer.1.other", 2);
    write_text(dpath(d2, "model.safetensors.index.json"), index_two);
    expect_dir_error(d2, UP_ERR_FORMAT, "layer.1.b");

    /* The index names the wrong shard for a tensor. */
    const char *d3 = make_dir("wrong_shard");
    write_shard(dpath(d3, "model-00001-of-00002.safetensors"), "layer.0.w", "layer.1.b", 1);
    write_shard(dpath(d3, "model-00002-of-00002.safetensors"), "layer.1.w", "layer.0.b", 2);
    write_text(dpath(d3, "model.safetensors.index.json"), index_two);
    expect_dir_error(d3, UP_ERR_FORMAT, "says shard");

    /* The same tensor in two shards. */
    const char *d4 = make_dir("dup_across");
    write_shard(dpath(d4, "model-00001-of-00002.safetensors"), "layer.0.w", "layer.0.b", 1);
    write_shard(dpath(d4, "model-00002-of-00002.safetensors"), "layer.1.w", "layer.0.b", 2);
    write_text(dpath(d4, "model.safetensors.index.json"),
               "{\"weight_map\":{\"layer.0.w\":\"model-00001-of-00002.safetensors\","
               "\"layer.1.w\":\"model-00002-of-00002.safetensors\"}}");
    expect_dir_error(d4, UP_ERR_FORMAT, "layer.0.b");

    /* Malformed index files. */
    const char *d5 = make_dir("bad_index");
    write_text(dpath(d5, "model.safetensors.index.json"), "{\"weight_map\": [");
    expect_dir_error(d5, UP_ERR_FORMAT, "index.json");
    write_text(dpath(d5, "model.safetensors.index.json"), "{\"other\": {}}");
    expect_dir_error(d5, UP_ERR_FORMAT, "weight_map");
    write_text(dpath(d5, "model.safetensors.index.json"), "{\"weight_map\": {\"a\": 3}}");
    expect_dir_error(d5, UP_ERR_FORMAT, "a");
    write_text(dpath(d5, "model.safetensors.index.json"),
               "{\"weight_map\": {\"a\": \"../escape.safetensors\"}}");
    expect_dir_error(d5, UP_ERR_FORMAT, "not a file name");
    write_text(dpath(d5, "model.safetensors.index.json"),
               "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}");
    expect_dir_error(d5, UP_ERR_FORMAT, "duplicate");

    /* A corrupt shard: the message names the shard. */
    const char *d6 = make_dir("corrupt_shard");
    write_shard(dpath(d6, "model-00001-of-00002.safetensors"), "layer.0.w", "layer.0.b", 1);
    write_raw(dpath(d6, "model-00002-of-00002.safetensors"), "{nope", 0, 0);
    write_text(dpath(d6, "model.safetensors.index.json"), index_two);
    expect_dir_error(d6, UP_ERR_FORMAT, "model-00002-of-00002.safetensors");
}

/* Every truncation of a valid file must fail cleanly (run under ASan for the proof). */
static void test_every_truncation(void **state) {
    (void)state;
    const char *path = tpath("full.safetensors");
    write_shard(path, "a", "b", 5);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 40 && n < sizeof buf);
    const char *cut = tpath("cut.safetensors");
    for (size_t len = 0; len < n; len++) {
        write_bytes(cut, buf, len);
        up_safetensors *st = NULL;
        up_error err = {0};
        assert_int_not_equal(up_safetensors_open_file(&st, cut, &err), UP_OK);
        assert_null(st);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_writer_layout),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_unsupported_dtypes),
        cmocka_unit_test(test_misaligned),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_sharded_errors),
        cmocka_unit_test(test_every_truncation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
