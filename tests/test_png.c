/* png: RGB and RGBA round trips (size, pixels, stride), text chunks of every kind (tEXt, zTXt,
 * iTXt, compressed iTXt), the atomic write (no temp file left, old file replaced whole),
 * and the errors: unwritable path, bad keys, non-UTF-8 values, bad sizes, non-PNG input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/png.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("png")

/* Entries in tmpdir, excluding . and .. */
static int count_entries(void) {
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* A (h, stride) buffer with a pattern every pixel of which differs from its neighbours. */
static uint8_t *pattern(int w, int h, int ch, size_t stride) {
    uint8_t *p = calloc((size_t)h, stride);
    assert_non_null(p);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) p[(size_t)y * stride + x * ch + c] = (uint8_t)(x * 7 + y * 13 + c * 71);
    for (size_t y = 0; y < (size_t)h; y++) /* padding bytes that must not leak into the file */
        memset(p + y * stride + (size_t)w * ch, 0xAB, stride - (size_t)w * ch);
    return p;
}

static void round_trip(int ch) {
    const int w = 37, h = 23;
    size_t stride = (size_t)w * ch + 5;
    uint8_t *px = pattern(w, h, ch, stride);
    const char *path = tpath(ch == 3 ? "rgb.png" : "rgba.png");
    up_error e = {0};
    assert_int_equal(up_png_write(path, w, h, ch, stride, px, NULL, NULL, 0, &e), UP_OK);
    up_png_image img;
    assert_int_equal(up_png_read(path, &img, &e), UP_OK);
    assert_int_equal(img.w, w);
    assert_int_equal(img.h, h);
    assert_int_equal(img.file_channels, ch);
    assert_int_equal(img.n_text, 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *a = px + (size_t)y * stride + x * ch, *b = img.pixels + ((size_t)y * w + x) * 4;
            for (int c = 0; c < ch; c++) assert_int_equal(a[c], b[c]);
            if (ch == 3) assert_int_equal(b[3], 255);
        }
    up_png_image_free(&img);
    up_png_image_free(&img); /* idempotent */
    free(px);
}

static void test_round_trip_rgb(void **state) {
    (void)state;
    round_trip(3);
}

static void test_round_trip_rgba(void **state) {
    (void)state;
    round_trip(4);
}

static void test_text_chunks(void **state) {
    (void)state;
    char *long_ascii = malloc(5000), *long_utf8 = malloc(5000);
    assert_non_null(long_ascii);
    assert_non_null(long_utf8);
    for (int i = 0; i < 4999; i++) long_ascii[i] = "{\"run\": 42}\n"[i % 12];
    long_ascii[4999] = 0;
    long_utf8[0] = 0;
    while (strlen(long_utf8) + 8 < 4999) strcat(long_utf8, "αβγ—δ"); /* 2+2+2+3+2 bytes */
    const char *keys[] = {"Title", "manifest", "Description", "Comment", "empty", "up: git"};
    const char *vals[] = {"Refusal — top latents", long_ascii, "plain ASCII", long_utf8, "", "ee6bc23"};
    uint8_t px[3 * 4 * 2] = {0};
    const char *path = tpath("text.png");
    up_error e = {0};
    assert_int_equal(up_png_write(path, 4, 2, 3, 12, px, keys, vals, 6, &e), UP_OK);
    up_png_image img;
    assert_int_equal(up_png_read(path, &img, &e), UP_OK);
    assert_int_equal(img.n_text, 6);
    for (int i = 0; i < 6; i++) {
        assert_string_equal(img.keys[i], keys[i]); /* file order is the caller's order */
        assert_string_equal(up_png_text(&img, keys[i]), vals[i]);
    }
    assert_null(up_png_text(&img, "absent"));
    up_png_image_free(&img);

    /* The long values were deflated: the file is far smaller than the text. */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true(sb.st_size < 4000);
    /* and the chunk types are the ones png.h promises. */
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *bytes = malloc((size_t)sb.st_size);
    assert_int_equal(fread(bytes, 1, (size_t)sb.st_size, fp), (size_t)sb.st_size);
    fclose(fp);
    int n_tEXt = 0, n_zTXt = 0, n_iTXt = 0;
    for (long i = 0; i + 4 <= sb.st_size; i++) {
        n_tEXt += !memcmp(bytes + i, "tEXt", 4);
        n_zTXt += !memcmp(bytes + i, "zTXt", 4);
        n_iTXt += !memcmp(bytes + i, "iTXt", 4);
    }
    assert_int_equal(n_tEXt, 3); /* Description, empty, up: git */
    assert_int_equal(n_zTXt, 1); /* manifest */
    assert_int_equal(n_iTXt, 2); /* Title (em dash), Comment (long, compressed) */
    free(bytes);
    free(long_ascii);
    free(long_utf8);
}

static void test_atomic_replace(void **state) {
    (void)state;
    const char *path = tpath("atomic.png");
    uint8_t a[3 * 8 * 8], b[3 * 16 * 4];
    memset(a, 10, sizeof a);
    memset(b, 200, sizeof b);
    int before = count_entries();
    up_error e = {0};
    assert_int_equal(up_png_write(path, 8, 8, 3, 24, a, NULL, NULL, 0, &e), UP_OK);
    assert_int_equal(count_entries(), before + 1); /* the PNG, and no temp file */
    assert_int_equal(up_png_write(path, 16, 4, 3, 48, b, NULL, NULL, 0, &e), UP_OK);
    assert_int_equal(count_entries(), before + 1);
    up_png_image img;
    assert_int_equal(up_png_read(path, &img, &e), UP_OK);
    assert_int_equal(img.w, 16);
    assert_int_equal(img.h, 4);
    assert_int_equal(img.pixels[0], 200);
    up_png_image_free(&img);

    /* A failed write (bad key) leaves the old file as it was and no temp file. */
    const char *bad[] = {" lead"}, *val[] = {"x"};
    assert_int_equal(up_png_write(path, 8, 8, 3, 24, a, bad, val, 1, &e), UP_ERR_INVALID);
    assert_int_equal(count_entries(), before + 1);
    assert_int_equal(up_png_read(path, &img, &e), UP_OK);
    assert_int_equal(img.w, 16);
    up_png_image_free(&img);
}

static void test_errors(void **state) {
    (void)state;
    uint8_t px[3 * 4 * 4] = {0};
    up_error e = {0};
    int before = count_entries();

    /* Unwritable: a directory that does not exist, and a path under a plain file. */
    assert_int_equal(up_png_write(tpath("no/such/dir/x.png"), 4, 4, 3, 12, px, NULL, NULL, 0, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "no/such/dir/x.png"));
    FILE *fp = fopen(tpath("plain"), "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(up_png_write(tpath("plain/x.png"), 4, 4, 3, 12, px, NULL, NULL, 0, &e), UP_ERR_IO);
    /* A read-only directory (root ignores permissions, so only check when they bite). */
    const char *ro = tpath("ro");
    assert_int_equal(mkdir(ro, 0555), 0);
    if (access(ro, W_OK) != 0) {
        char p[600];
        snprintf(p, sizeof p, "%s/x.png", ro);
        assert_int_equal(up_png_write(p, 4, 4, 3, 12, px, NULL, NULL, 0, &e), UP_ERR_IO);
        assert_non_null(strstr(e.msg, "ro/x.png"));
    }

    /* Bad arguments. */
    const char *path = tpath("bad.png");
    assert_int_equal(up_png_write(path, 0, 4, 3, 12, px, NULL, NULL, 0, &e), UP_ERR_INVALID);
    assert_int_equal(up_png_write(path, 4, 4, 2, 12, px, NULL, NULL, 0, &e), UP_ERR_INVALID);
    assert_int_equal(up_png_write(path, 4, 4, 3, 11, px, NULL, NULL, 0, &e), UP_ERR_INVALID);
    assert_int_equal(up_png_write(path, 4, 4, 3, 12, NULL, NULL, NULL, 0, &e), UP_ERR_INVALID);
    const char *keys[] = {"ok", "", "double  space", "trailing ", "tab\tkey",
                          "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234"};
    const char *vals[] = {"v", "v", "v", "v", "v", "v"};
    for (int i = 1; i < 6; i++) {
        const char *k2[] = {keys[0], keys[i]};
        assert_int_equal(up_png_write(path, 4, 4, 3, 12, px, k2, vals, 2, &e), UP_ERR_INVALID);
    }
    const char *nonutf8[] = {"caf\xe9", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82"};
    for (int i = 0; i < 4; i++) {
        const char *v[] = {nonutf8[i]};
        assert_int_equal(up_png_write(path, 4, 4, 3, 12, px, keys, v, 1, &e), UP_ERR_INVALID);
        assert_non_null(strstr(e.msg, "UTF-8"));
    }
    assert_int_equal(count_entries(), before + 2); /* "plain" and "ro"; nothing else */

    /* Reading what is not a PNG, or is a truncated one. */
    up_png_image img;
    assert_int_equal(up_png_read(tpath("missing.png"), &img, &e), UP_ERR_IO);
    assert_int_equal(up_png_read(tpath("plain"), &img, &e), UP_ERR_FORMAT);
    const char *good = tpath("good.png");
    assert_int_equal(up_png_write(good, 4, 4, 3, 12, px, NULL, NULL, 0, &e), UP_OK);
    struct stat sb;
    assert_int_equal(stat(good, &sb), 0);
    assert_int_equal(truncate(good, sb.st_size - 20), 0);
    assert_int_equal(up_png_read(good, &img, &e), UP_ERR_FORMAT);
    assert_null(img.pixels);
    chmod(ro, 0755);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_rgb),
        cmocka_unit_test(test_round_trip_rgba),
        cmocka_unit_test(test_text_chunks),
        cmocka_unit_test(test_atomic_replace),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
