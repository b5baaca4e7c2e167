#include "fs.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

/* One component: made, or already a directory. */
static int mkdir_one(const char *path) {
    struct stat st;
    if (mkdir(path, 0777) == 0) return 0;
    if (errno != EEXIST) return -1;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    errno = ENOTDIR;
    return -1;
}

int up_mkdirs(const char *dir) {
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0) {
        errno = ENOENT;
        return -1;
    }
    if (n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(path, dir, n + 1);
    /* Each prefix that ends before a '/', then the whole path. */
    for (char *p = path + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/') continue;
        *p = '\0';
        int bad = mkdir_one(path);
        *p = '/';
        if (bad) return -1;
    }
    return mkdir_one(path);
}
