/* up_mkdirs: makes every missing parent, accepts what exists, refuses a file in the way.
 * Atomic replacement: the content lands whole, the temporary file never stays behind, a
 * failed write leaves the old file as it was. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("fs")

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_nested_and_existing(void **state) {
    (void)state;
    const char *deep = tpath("a/b//c/d");
    assert_int_equal(up_mkdirs(deep), 0);
    assert_true(is_dir(tpath("a/b/c/d")));
    assert_int_equal(up_mkdirs(deep), 0); /* again: already there */
    char trailing[600];
    snprintf(trailing, sizeof trailing, "%s/", tpath("a/b/e"));
    assert_int_equal(up_mkdirs(trailing), 0);
    assert_true(is_dir(tpath("a/b/e")));
}

static void test_file_in_the_way(void **state) {
    (void)state;
    FILE *f = fopen(tpath("plain"), "w");
    assert_non_null(f);
    fclose(f);
    errno = 0;
    assert_int_equal(up_mkdirs(tpath("plain")), -1);
    assert_int_equal(errno, ENOTDIR);
    assert_int_equal(up_mkdirs(tpath("plain/below")), -1);
    assert_int_equal(up_mkdirs(""), -1);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Entries of the scratch directory whose name contains ".tmp." */
static int temp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_write_atomic(void **state) {
    (void)state;
    up_error e = {0};
    const char *path = tpath("atomic.txt");
    assert_int_equal(up_fs_write_atomic(path, "first\n", 6, &e), UP_OK);
    assert_string_equal(slurp(path), "first\n");
    assert_int_equal(up_fs_write_atomic(path, "second", 6, &e), UP_OK);
    assert_string_equal(slurp(path), "second");
    assert_int_equal(temp_files(), 0);
    /* A directory that does not exist: an error naming the file, nothing left behind. */
    assert_int_equal(up_fs_write_atomic(tpath("missing/x.txt"), "x", 1, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "missing/x.txt"));
    /* A failed write (status already an error) keeps the old file and removes the temporary. */
    char *tmp = up_fs_temp_path(path);
    FILE *f = fopen(tmp, "wb");
    assert_non_null(f);
    fputs("half", f);
    fclose(f);
    assert_int_equal(up_fs_replace(tmp, path, UP_ERR_IO, &e), UP_ERR_IO);
    assert_string_equal(slurp(path), "second");
    assert_int_equal(temp_files(), 0);
    free(tmp);
    /* Renaming onto a directory fails: reported, temporary removed. */
    assert_int_equal(up_mkdirs(tpath("adir/inner")), 0);
    tmp = up_fs_temp_path(tpath("adir"));
    f = fopen(tmp, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(up_fs_replace(tmp, tpath("adir"), UP_OK, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "cannot rename"));
    assert_int_equal(temp_files(), 0);
    free(tmp);
}

/* Two temporaries for one path are two files (the writers of a process never share one);
 * up_fs_open_temp creates exclusively and names what it opened. */
static void test_open_temp(void **state) {
    (void)state;
    up_error e = {0};
    const char *path = tpath("twice.txt");
    char *a = NULL, *b = NULL;
    FILE *fa = up_fs_open_temp(path, &a, &e), *fb = up_fs_open_temp(path, &b, &e);
    assert_non_null(fa);
    assert_non_null(fb);
    assert_string_not_equal(a, b);
    assert_int_equal(strncmp(a, path, strlen(path)), 0);
    fputs("from a", fa), fputs("from b", fb);
    fclose(fa), fclose(fb);
    assert_int_equal(up_fs_replace(a, path, UP_OK, &e), UP_OK);
    assert_string_equal(slurp(path), "from a");
    assert_int_equal(up_fs_replace(b, path, UP_OK, &e), UP_OK);
    assert_string_equal(slurp(path), "from b");
    assert_int_equal(temp_files(), 0);
    free(a), free(b);
    /* In a directory that does not exist: NULL, an error naming the path, no name handed out. */
    char *c = (char *)1;
    assert_null(up_fs_open_temp(tpath("missing/y.txt"), &c, &e));
    assert_null(c);
    assert_non_null(strstr(e.msg, "missing/y.txt"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_and_existing),
        cmocka_unit_test(test_file_in_the_way),
        cmocka_unit_test(test_write_atomic),
        cmocka_unit_test(test_open_temp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
