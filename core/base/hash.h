/* hash — SHA-256 of bytes, files and directories (OpenSSL libcrypto's EVP), with a memo so a
 * multi-gigabyte checkpoint is read once, not once per run.
 *
 * Digests are written as 64 lowercase hex characters plus a NUL (UP_HASH_HEX bytes). A file's
 * digest is what `sha256sum FILE` prints and what a Hugging Face LFS pointer records as
 * "oid sha256:", so a researcher can check a checkpoint against the Hub without this program.
 *
 * A directory's digest (up_hash_path) is the SHA-256 of the lines "NAME DIGEST\n" of its
 * regular files, names in byte order, hidden files (leading '.') and subdirectories skipped.
 * A model directory or a SAELens directory thus gets one identity that changes when any file
 * in it does; it is deliberately conservative (a changed README counts too).
 *
 * Memo: up_hash_file may keep digests in memo_dir, one small text file per hashed path, named
 * by the SHA-256 of the path's realpath, recording size, mtime (ns), inode and device. An
 * entry is used only when all four still match the file; anything else (missing, unreadable
 * or malformed entry) means the file is hashed again and the entry rewritten. Entries are
 * written to a temporary name and renamed, so concurrent runs at worst both hash. A tool that
 * rewrites a file in place and restores its mtime defeats the memo, as it defeats make.
 *
 * Ownership: an up_hasher is allocated by up_hasher_init and freed by up_hasher_final (which
 * also writes the digest) or up_hasher_free. Nothing else allocates beyond a call.
 * Errors: an up_status with a message naming the file; a memo that cannot be read or written
 * is not an error (the file is hashed anyway). Nothing here prints. */
#ifndef UP_HASH_H
#define UP_HASH_H

#include <stddef.h>

#include "base/error.h"

#define UP_HASH_HEX 65 /* 64 hex digits and a NUL */

typedef struct up_hasher up_hasher;

/* Streaming SHA-256, for canonical serialisations built piece by piece. */
up_status up_hasher_init(up_hasher **out, up_error *err);
void up_hasher_update(up_hasher *h, const void *data, size_t n);
/* Feeds the printf-formatted text (without its NUL). Long output is handled. */
void up_hasher_printf(up_hasher *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes the digest of everything fed and frees h. Returns 0, or -1 (hex "") when a printf
 * could not allocate, so a digest never silently misses part of its text. */
int up_hasher_final(up_hasher *h, char hex[UP_HASH_HEX]);
void up_hasher_free(up_hasher *h); /* NULL-safe; discards */

/* One-shot digest of n bytes. Returns 0, or -1 if libcrypto cannot allocate (hex is then ""). */
int up_hash_bytes(const void *data, size_t n, char hex[UP_HASH_HEX]);

/* Digest of a regular file. memo_dir NULL: no memo; otherwise it is created if absent.
 * from_memo (may be NULL) is set to 1 when the digest came from the memo, else 0. */
up_status up_hash_file(const char *path, const char *memo_dir, char hex[UP_HASH_HEX], int *from_memo,
                       up_error *err);

/* A file's digest, or a directory's (see above), each file through the memo. */
up_status up_hash_path(const char *path, const char *memo_dir, char hex[UP_HASH_HEX], up_error *err);

#endif
