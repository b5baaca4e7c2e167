/* A scratch directory per test binary: test_tmpdir_create in the group setup, removed with
 * everything in it by test_tmpdir_remove in the teardown; tpath("name") joins a name to it
 * (a few results stay valid at once). */
#ifndef UP_TEST_TMPDIR_H
#define UP_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static int test_tmpdir_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static inline int test_tmpdir_create(const char *tag) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/up_test_%s_XXXXXX", tag);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int test_tmpdir_remove(void) { return nftw(tmpdir, test_tmpdir_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* cmocka group setup and teardown owning the scratch directory "up_test_<tag>_XXXXXX". */
#define TEST_TMPDIR_GROUP(tag)                                                                  \
    static int setup(void **state) {                                                          \
        (void)state;                                                                          \
        return test_tmpdir_create(tag);                                                       \
    }                                                                                         \
    static int teardown(void **state) {                                                       \
        (void)state;                                                                          \
        return test_tmpdir_remove();                                                          \
    }

static inline const char *tpath(const char *name) {
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

#endif
