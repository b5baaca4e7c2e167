/* npz_write: headers byte for byte as numpy pads them, round trips through our reader (stored
 * and deflated), numpy's own reader and writer when /usr/bin/python3 has numpy (skipped
 * otherwise), atomic replacement, and bad input as clear errors. */
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
#include <zip.h>

#include "formats/npy.h"
#include "formats/npz_write.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("npzw")

/* Values exactly representable in fp32 and in Python's arithmetic alike. */
static float value(int i) { return (float)(i % 97) * 0.25f - 3.0f; }

static void header_is(int ndim, const int64_t *shape, const char *dict) {
    char buf[UP_NPY_HEADER_MAX];
    size_t n = up_npy_header_f32(buf, ndim, shape);
    assert_true(n > 0);
    assert_int_equal(n % 64, 0);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
    assert_int_equal((size_t)(unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8, n - 10);
    assert_memory_equal(buf + 10, dict, strlen(dict));
    for (size_t i = 10 + strlen(dict); i < n - 1; i++) assert_int_equal(buf[i], ' ');
    assert_int_equal(buf[n - 1], '\n');
    /* Our own reader accepts it. */
    up_npy_info info;
    up_error e = {0};
    assert_int_equal(up_npy_parse_header(buf, n, &info, &e), UP_OK);
    assert_int_equal(info.ndim, ndim);
    assert_int_equal(info.header_bytes, n);
    for (int i = 0; i < ndim; i++) assert_int_equal(info.shape[i], shape[i]);
}

static void test_headers(void **state) {
    (void)state;
    int64_t s2[] = {32, 128}, s1[] = {128}, s3[] = {2, 3, 4};
    header_is(2, s2, "{'descr': '<f4', 'fortran_order': False, 'shape': (32, 128), }");
    header_is(1, s1, "{'descr': '<f4', 'fortran_order': False, 'shape': (128,), }");
    header_is(0, NULL, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
    header_is(3, s3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }");
    /* numpy 1.24+: a (32, 128) array's header is 128 bytes (room for 19 more digits). */
    char buf[UP_NPY_HEADER_MAX];
    assert_int_equal(up_npy_header_f32(buf, 2, s2), 128);
    assert_int_equal(up_npy_header_f32(buf, 0, NULL), 128);
    int64_t neg[] = {-1};
    assert_int_equal(up_npy_header_f32(buf, 1, neg), 0);
    assert_int_equal(up_npy_header_f32(buf, UP_MAX_DIMS + 1, s2), 0);
}

typedef struct arrays {
    float a[6 * 5], b[7], c[1];
    up_npz_array items[3];
} arrays;

static void make_arrays(arrays *x) {
    for (int i = 0; i < 30; i++) x->a[i] = value(i);
    for (int i = 0; i < 7; i++) x->b[i] = value(100 + i);
    x->c[0] = 42.5f;
    x->items[0] = (up_npz_array){"W_enc", x->a, 2, {6, 5}};
    x->items[1] = (up_npz_array){"b_enc", x->b, 1, {7}};
    x->items[2] = (up_npz_array){"scalar", x->c, 0, {0}};
}

static void check_read_back(const char *path, const arrays *x) {
    up_npz *z = NULL;
    up_error e = {0};
    if (up_npz_open(&z, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(up_npz_count(z), 3);
    float *data;
    int ndim;
    int64_t shape[UP_MAX_DIMS];
    assert_int_equal(up_npz_read_f32(z, "W_enc", &data, &ndim, shape, &e), UP_OK);
    assert_int_equal(ndim, 2);
    assert_int_equal(shape[0], 6);
    assert_int_equal(shape[1], 5);
    assert_memory_equal(data, x->a, sizeof x->a);
    free(data);
    assert_int_equal(up_npz_read_f32(z, "b_enc", &data, &ndim, shape, &e), UP_OK);
    assert_int_equal(ndim, 1);
    assert_memory_equal(data, x->b, sizeof x->b);
    free(data);
    assert_int_equal(up_npz_read_f32(z, "scalar", &data, &ndim, shape, &e), UP_OK);
    assert_int_equal(ndim, 0);
    assert_true(data[0] == 42.5f);
    free(data);
    up_npz_close(z);
}

static void test_round_trip(void **state) {
    (void)state;
    arrays x;
    make_arrays(&x);
    up_error e = {0};
    const char *stored = tpath("stored.npz"), *deflated = tpath("deflated.npz");
    if (up_npz_write_f32(stored, x.items, 3, UP_NPZ_STORED, &e)) fail_msg("%s", e.msg);
    if (up_npz_write_f32(deflated, x.items, 3, UP_NPZ_DEFLATED, &e)) fail_msg("%s", e.msg);
    check_read_back(stored, &x);
    check_read_back(deflated, &x);

    /* Members are stored or deflated as asked, in the order given, named KEY.npy. */
    int zerr;
    zip_t *za = zip_open(stored, ZIP_RDONLY, &zerr);
    assert_non_null(za);
    assert_int_equal(zip_get_num_entries(za, 0), 3);
    assert_string_equal(zip_get_name(za, 0, 0), "W_enc.npy");
    assert_string_equal(zip_get_name(za, 2, 0), "scalar.npy");
    zip_stat_t st;
    assert_int_equal(zip_stat_index(za, 0, 0, &st), 0);
    assert_int_equal(st.comp_method, ZIP_CM_STORE);
    assert_int_equal(st.size, 128 + sizeof x.a);
    zip_close(za);
    za = zip_open(deflated, ZIP_RDONLY, &zerr);
    assert_int_equal(zip_stat_index(za, 0, 0, &st), 0);
    assert_int_equal(st.comp_method, ZIP_CM_DEFLATE);
    zip_close(za);

    /* The same arrays give the same bytes. */
    const char *again = tpath("again.npz");
    if (up_npz_write_f32(again, x.items, 3, UP_NPZ_STORED, &e)) fail_msg("%s", e.msg);
    FILE *f1 = fopen(stored, "rb"), *f2 = fopen(again, "rb");
    int c1, c2;
    do {
        c1 = fgetc(f1), c2 = fgetc(f2);
        assert_int_equal(c1, c2);
    } while (c1 != EOF);
    fclose(f1), fclose(f2);
}

static void test_replace_atomically(void **state) {
    (void)state;
    arrays x;
    make_arrays(&x);
    up_error e = {0};
    const char *path = tpath("replace.npz");
    if (up_npz_write_f32(path, x.items, 1, UP_NPZ_STORED, &e)) fail_msg("%s", e.msg);
    if (up_npz_write_f32(path, x.items, 3, UP_NPZ_STORED, &e)) fail_msg("%s", e.msg);
    check_read_back(path, &x);
    /* A failed write leaves the previous file alone and no temporary behind. */
    up_npz_array bad[2] = {x.items[0], x.items[0]};
    assert_int_equal(up_npz_write_f32(path, bad, 2, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    check_read_back(path, &x);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void test_errors(void **state) {
    (void)state;
    arrays x;
    make_arrays(&x);
    up_error e = {0};
    const char *path = tpath("bad.npz");
    up_npz_array a = x.items[0];
    a.key = "";
    assert_int_equal(up_npz_write_f32(path, &a, 1, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "bad key"));
    a.key = "dir/name";
    assert_int_equal(up_npz_write_f32(path, &a, 1, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    a = x.items[0];
    a.shape[1] = -5;
    assert_int_equal(up_npz_write_f32(path, &a, 1, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "W_enc"));
    a = x.items[0];
    a.ndim = UP_MAX_DIMS + 1;
    assert_int_equal(up_npz_write_f32(path, &a, 1, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    a = x.items[0];
    a.data = NULL;
    assert_int_equal(up_npz_write_f32(path, &a, 1, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    assert_int_equal(up_npz_write_f32(path, x.items, 0, UP_NPZ_STORED, &e), UP_ERR_INVALID);
    const char *missing = tpath("no/such/dir/x.npz");
    assert_int_equal(up_npz_write_f32(missing, x.items, 3, UP_NPZ_STORED, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "no/such/dir"));
    assert_int_not_equal(access(path, F_OK), 0);
}

/* Reads member `name` of an archive whole. */
static unsigned char *member(const char *path, const char *name, size_t *len) {
    int zerr;
    zip_t *za = zip_open(path, ZIP_RDONLY, &zerr);
    assert_non_null(za);
    zip_stat_t st;
    assert_int_equal(zip_stat(za, name, 0, &st), 0);
    unsigned char *buf = malloc(st.size + 1);
    zip_file_t *f = zip_fopen(za, name, 0);
    assert_non_null(f);
    assert_int_equal(zip_fread(f, buf, st.size), (zip_int64_t)st.size);
    zip_fclose(f);
    zip_close(za);
    *len = st.size;
    return buf;
}

static int have_numpy(void) {
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

static void test_numpy(void **state) {
    (void)state;
    if (!have_numpy()) {
        skip(); /* the suite never depends on Python */
        return;
    }
    arrays x;
    make_arrays(&x);
    up_error e = {0};
    const char *ours = tpath("ours.npz"), *theirs = tpath("theirs.npz");
    if (up_npz_write_f32(ours, x.items, 3, UP_NPZ_STORED, &e)) fail_msg("%s", e.msg);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 - <<'EOF'\n"
             "import numpy as np, sys\n"
             "v = lambda i: np.float32((i %% 97) * 0.25 - 3.0)\n"
             "a = np.array([v(i) for i in range(30)], np.float32).reshape(6, 5)\n"
             "b = np.array([v(100 + i) for i in range(7)], np.float32)\n"
             "c = np.array(42.5, np.float32)\n"
             "z = np.load('%s')\n"
             "ok = sorted(z.files) == ['W_enc', 'b_enc', 'scalar'] and z['W_enc'].dtype == np.float32\n"
             "ok = ok and np.array_equal(z['W_enc'], a) and np.array_equal(z['b_enc'], b)\n"
             "ok = ok and z['scalar'].shape == () and z['scalar'] == c\n"
             "np.savez('%s', W_enc=a, b_enc=b, scalar=c)\n"
             "sys.exit(0 if ok else 1)\n"
             "EOF\n",
             ours, theirs);
    assert_int_equal(system(cmd), 0);
    /* numpy's own members are the same bytes as ours. */
    const char *names[] = {"W_enc.npy", "b_enc.npy", "scalar.npy"};
    for (int i = 0; i < 3; i++) {
        size_t n1, n2;
        unsigned char *m1 = member(ours, names[i], &n1), *m2 = member(theirs, names[i], &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(m1, m2, n1);
        free(m1), free(m2);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_replace_atomically),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_numpy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
