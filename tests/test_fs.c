/* up_mkdirs: makes every missing parent, accepts what exists, refuses a file in the way. */
#include "testutil.h"

#include <errno.h>
#include <sys/stat.h>

#include "fs.h"
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_and_existing),
        cmocka_unit_test(test_file_in_the_way),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
