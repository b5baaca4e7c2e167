#include "base/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The counter makes names unique within the process, so two threads writing the same path
 * never share a temporary file. */
char *up_fs_temp_path(const char *path) {
    static atomic_uint counter;
    size_t n = strlen(path) + 48;
    char *tmp = malloc(n);
    if (tmp) snprintf(tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
    return tmp;
}

FILE *up_fs_open_temp(const char *path, char **tmp_out, up_error *err) {
    *tmp_out = NULL;
    for (int attempt = 0; attempt < 100; attempt++) {
        char *tmp = up_fs_temp_path(path);
        if (!tmp) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path), NULL;
        /* O_EXCL: a name left by a crashed run with a recycled PID is skipped, not reused;
         * 0666 so the final file gets the umask's permissions like any other. */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST) {
            free(tmp);
            continue;
        }
        FILE *fp = fd < 0 ? NULL : fdopen(fd, "wb");
        if (!fp) {
            up_error_set(err, UP_ERR_IO, "cannot create %s: %s", path, strerror(errno)); /* tmp is ours */
            if (fd >= 0) close(fd), unlink(tmp);
            free(tmp);
            return NULL;
        }
        *tmp_out = tmp;
        return fp;
    }
    up_error_set(err, UP_ERR_IO, "cannot create a temporary file beside %s", path);
    return NULL;
}

up_status up_fs_replace(const char *tmp, const char *path, up_status status, up_error *err) {
    if (status == UP_OK && rename(tmp, path) != 0)
        status = up_error_set(err, UP_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (status != UP_OK) unlink(tmp);
    return status;
}

up_status up_fs_write_atomic(const char *path, const void *data, size_t len, up_error *err) {
    char *tmp;
    FILE *f = up_fs_open_temp(path, &tmp, err);
    if (!f) return err ? err->status : UP_ERR_IO;
    up_status s = UP_OK;
    int bad = fwrite(data, 1, len, f) != len;
    /* The message names path, not tmp: tmp is removed, and path is the file the user knows. */
    if (fclose(f) != 0 || bad) s = up_error_set(err, UP_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    s = up_fs_replace(tmp, path, s, err);
    free(tmp);
    return s;
}
