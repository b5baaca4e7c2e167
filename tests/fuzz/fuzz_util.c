/* fuzz_util — see fuzz_util.h. */
#include "fuzz_util.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[PATH_MAX];

/* Removes every file and directory below path (one level of subdirectories is all a target
 * writes: the grid cache's CACHE/xx/). */
static void empty_dir(const char *path, int remove_self) {
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    char sub[PATH_MAX];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (unlink(sub) != 0) empty_dir(sub, 1);
    }
    closedir(d);
    if (remove_self) rmdir(path);
}

static void remove_dir(void) { empty_dir(dir, 1); }

const char *fuzz_dir(void) {
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/upstream-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("fuzz_dir: mkdtemp");
            abort();
        }
        atexit(remove_dir);
    }
    empty_dir(dir, 0);
    return dir;
}

const char *fuzz_write(const char *name, const void *data, size_t size) {
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

int fuzz_split(const uint8_t *data, size_t size, const uint8_t **parts, size_t *sizes, int max) {
    const size_t sep = strlen(FUZZ_SEP);
    int n = 0;
    while (n < max - 1) {
        const uint8_t *at = memmem(data, size, FUZZ_SEP, sep);
        if (!at) break;
        parts[n] = data, sizes[n] = (size_t)(at - data), n++;
        size -= (size_t)(at - data) + sep, data = at + sep;
    }
    parts[n] = data, sizes[n] = size;
    return n + 1;
}
