/* fs — file-system helpers the core's writers share.
 *
 * up_mkdirs(dir): creates dir and every missing parent (mode 0777, less the umask), like
 * `mkdir -p`. Existing directories are fine. Returns 0, or -1 with errno set (ENOTDIR when a
 * component exists and is not a directory, ENAMETOOLONG for a path over PATH_MAX).
 *
 * Atomic replacement: a writer writes PATH.tmp.PID.N (same directory, so the rename is atomic;
 * N counts within the process), then renames it onto PATH, so a reader, or a run killed
 * halfway, never sees half a file.
 *   up_fs_temp_path(path)   a fresh temporary name, malloc'd (free it); NULL when out of memory.
 *   up_fs_open_temp(path, &tmp, err)
 *                           creates such a file exclusively (never one that exists) and opens
 *                           it for writing; *tmp gets its malloc'd name. NULL with err set.
 *   up_fs_replace(tmp, path, status, err)
 *                           finishes a write whose outcome so far is status: when status is
 *                           UP_OK, renames tmp onto path (UP_ERR_IO naming both on failure);
 *                           whenever the result is not UP_OK, removes tmp. Returns the result.
 *   up_fs_write_atomic(path, data, len, err)
 *                           writes len bytes to path that way; UP_ERR_IO / UP_ERR_NOMEM with
 *                           the reason. */
#ifndef UP_FS_H
#define UP_FS_H

#include <stddef.h>
#include <stdio.h>

#include "base/error.h"

int up_mkdirs(const char *dir);

char *up_fs_temp_path(const char *path);
FILE *up_fs_open_temp(const char *path, char **tmp, up_error *err);
up_status up_fs_replace(const char *tmp, const char *path, up_status status, up_error *err);
up_status up_fs_write_atomic(const char *path, const void *data, size_t len, up_error *err);

#endif
