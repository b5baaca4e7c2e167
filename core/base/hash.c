#include "base/hash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"

struct up_hasher {
    EVP_MD_CTX *ctx;
    int failed; /* a printf could not allocate: the digest would miss text, so final refuses */
};

static void to_hex(const unsigned char *md, char hex[UP_HASH_HEX]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) hex[2 * i] = digits[md[i] >> 4], hex[2 * i + 1] = digits[md[i] & 15];
    hex[64] = '\0';
}

up_status up_hasher_init(up_hasher **out, up_error *err) {
    *out = NULL;
    up_hasher *h = malloc(sizeof *h);
    if (h) h->failed = 0;
    if (!h || !(h->ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        if (h) EVP_MD_CTX_free(h->ctx);
        free(h);
        return up_error_set(err, UP_ERR_NOMEM, "sha256: libcrypto could not set up a digest context");
    }
    *out = h;
    return UP_OK;
}

void up_hasher_update(up_hasher *h, const void *data, size_t n) {
    /* EVP_DigestUpdate on an initialised SHA-256 context cannot fail. */
    if (n) EVP_DigestUpdate(h->ctx, data, n);
}

void up_hasher_printf(up_hasher *h, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof buf) {
        up_hasher_update(h, buf, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        h->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    up_hasher_update(h, big, (size_t)n);
    free(big);
}

int up_hasher_final(up_hasher *h, char hex[UP_HASH_HEX]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    int ok = !h->failed && EVP_DigestFinal_ex(h->ctx, md, &len) == 1;
    if (ok) to_hex(md, hex);
    else hex[0] = '\0';
    up_hasher_free(h);
    return ok ? 0 : -1;
}

void up_hasher_free(up_hasher *h) {
    if (!h) return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

int up_hash_bytes(const void *data, size_t n, char hex[UP_HASH_HEX]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    hex[0] = '\0';
    if (EVP_Digest(data, n, md, &len, EVP_sha256(), NULL) != 1) return -1;
    to_hex(md, hex);
    return 0;
}

/* ---- files ------------------------------------------------------------------------------- */

/* Streams the open file through SHA-256 in 4 MiB reads (page cache friendly, no mmap limits). */
static up_status hash_fd(int fd, const char *path, char hex[UP_HASH_HEX], up_error *err) {
    up_hasher *h;
    up_status st = up_hasher_init(&h, err);
    if (st) return st;
    enum { CHUNK = 4 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        up_hasher_free(h);
        return up_error_set(err, UP_ERR_NOMEM, "%s: no memory for a read buffer", path);
    }
    for (;;) {
        ssize_t got = read(fd, buf, CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            st = up_error_set(err, UP_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (got == 0) break;
        up_hasher_update(h, buf, (size_t)got);
    }
    free(buf);
    if (st) up_hasher_free(h);
    else if (up_hasher_final(h, hex)) st = up_error_set(err, UP_ERR_NOMEM, "%s: sha256 failed", path);
    return st;
}

typedef struct memo_entry {
    long long size, mtime_s, mtime_ns, ino, dev;
    char hex[UP_HASH_HEX];
} memo_entry;

static void memo_of(const struct stat *sb, memo_entry *e) {
    e->size = (long long)sb->st_size;
    e->mtime_s = (long long)sb->st_mtim.tv_sec;
    e->mtime_ns = (long long)sb->st_mtim.tv_nsec;
    e->ino = (long long)sb->st_ino;
    e->dev = (long long)sb->st_dev;
}

/* memo_dir/<sha256(realpath)>. The file's own path is kept on the second line, for people. */
static int memo_path(const char *memo_dir, const char *real, char *out, size_t size) {
    char key[UP_HASH_HEX];
    if (up_hash_bytes(real, strlen(real), key)) return -1;
    int n = snprintf(out, size, "%s/%s", memo_dir, key);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int memo_read(const char *file, memo_entry *e) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char hex[80] = {0};
    int ok = fscanf(f, "upstream-sha256-memo 1 %lld %lld %lld %lld %lld %79s", &e->size, &e->mtime_s, &e->mtime_ns,
                    &e->ino, &e->dev, hex) == 6;
    fclose(f);
    if (!ok || strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64) return -1;
    memcpy(e->hex, hex, UP_HASH_HEX);
    return 0;
}

static void memo_write(const char *memo_dir, const char *file, const char *real, const memo_entry *e) {
    if (up_mkdirs(memo_dir)) return;
    char text[PATH_MAX + 256];
    int n = snprintf(text, sizeof text, "upstream-sha256-memo 1 %lld %lld %lld %lld %lld %s\n%s\n", e->size, e->mtime_s,
                     e->mtime_ns, e->ino, e->dev, e->hex, real);
    if (n < 0 || (size_t)n >= sizeof text) return;
    up_fs_write_atomic(file, text, (size_t)n, NULL); /* a memo is an optimisation: failure only costs a rehash */
}

up_status up_hash_file(const char *path, const char *memo_dir, char hex[UP_HASH_HEX], int *from_memo,
                       up_error *err) {
    if (from_memo) *from_memo = 0;
    hex[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return up_error_set(err, UP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        close(fd);
        return up_error_set(err, UP_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return up_error_set(err, UP_ERR_IO, "%s: not a regular file", path);
    }
    memo_entry now;
    memo_of(&sb, &now);
    char real[PATH_MAX], memo_file[PATH_MAX + 80];
    int use_memo = memo_dir && realpath(path, real) && !memo_path(memo_dir, real, memo_file, sizeof memo_file);
    if (use_memo) {
        memo_entry old;
        if (!memo_read(memo_file, &old) && old.size == now.size && old.mtime_s == now.mtime_s &&
            old.mtime_ns == now.mtime_ns && old.ino == now.ino && old.dev == now.dev) {
            close(fd);
            memcpy(hex, old.hex, UP_HASH_HEX);
            if (from_memo) *from_memo = 1;
            return UP_OK;
        }
    }
    up_status st = hash_fd(fd, path, hex, err);
    close(fd);
    if (st) return st;
    if (use_memo) {
        memcpy(now.hex, hex, UP_HASH_HEX);
        memo_write(memo_dir, memo_file, real, &now);
    }
    return UP_OK;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

up_status up_hash_path(const char *path, const char *memo_dir, char hex[UP_HASH_HEX], up_error *err) {
    struct stat sb;
    hex[0] = '\0';
    if (stat(path, &sb)) return up_error_set(err, UP_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return up_hash_file(path, memo_dir, hex, NULL, err);
    DIR *d = opendir(path);
    if (!d) return up_error_set(err, UP_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    up_status st = UP_OK;
    char file[PATH_MAX];
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        snprintf(file, sizeof file, "%s/%s", path, de->d_name);
        struct stat fsb;
        if (stat(file, &fsb) || !S_ISREG(fsb.st_mode)) continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
            if (!grown) {
                st = up_error_set(err, UP_ERR_NOMEM, "%s: no memory to list the directory", path);
                break;
            }
            names = grown;
        }
        if (!(names[n] = strdup(de->d_name))) {
            st = up_error_set(err, UP_ERR_NOMEM, "%s: no memory to list the directory", path);
            break;
        }
        n++;
    }
    closedir(d);
    up_hasher *h = NULL;
    if (!st) {
        if (n) qsort(names, n, sizeof *names, cmp_names); /* an empty directory has no list */
        st = up_hasher_init(&h, err);
    }
    for (size_t i = 0; !st && i < n; i++) {
        char fhex[UP_HASH_HEX];
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        if (!(st = up_hash_file(file, memo_dir, fhex, NULL, err))) up_hasher_printf(h, "%s %s\n", names[i], fhex);
    }
    if (!st) {
        if (up_hasher_final(h, hex)) st = up_error_set(err, UP_ERR_NOMEM, "%s: no memory while hashing", path);
        h = NULL;
    }
    up_hasher_free(h);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}
