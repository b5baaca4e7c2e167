/* fs — file-system helpers the core's writers share.
 *
 * up_mkdirs(dir): creates dir and every missing parent (mode 0777, less the umask), like
 * `mkdir -p`. Existing directories are fine. Returns 0, or -1 with errno set (ENOTDIR when a
 * component exists and is not a directory, ENAMETOOLONG for a path over PATH_MAX). */
#ifndef UP_FS_H
#define UP_FS_H

int up_mkdirs(const char *dir);

#endif
