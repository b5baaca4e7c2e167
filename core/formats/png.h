/* png — PNG files through libpng: an atomic writer with text chunks, and a reader for tests.
 *
 * Writer: 8-bit RGB (channels 3) or RGBA (channels 4) pixels, rows `stride` bytes apart,
 * top row first, non-interlaced. Each key → value pair becomes a text chunk, so a figure
 * carries the manifest of the run that made it:
 *   - a value that is pure ASCII goes into tEXt (whose text is Latin-1, so ASCII is the only
 *     text every reader decodes the same way), or zTXt when it is longer than
 *     UP_PNG_COMPRESS_TEXT bytes;
 *   - any other value goes into iTXt, which is UTF-8 by definition (compressed when long);
 *     bytes that are not valid UTF-8 are an error rather than a silently garbled chunk.
 * Keys are 1–79 printable ASCII characters with no leading, trailing or doubled spaces (the
 * PNG keyword rule, restricted to ASCII). The file is written to "<path>.tmp.<pid>.<n>" in
 * the same directory and renamed over `path` only when complete, so readers never see a
 * partial PNG and a failure leaves no temporary file behind.
 *
 * Reader: decodes any PNG libpng reads into 8-bit RGBA (palette, grey, 16-bit and tRNS are
 * expanded), and returns every text chunk (tEXt, zTXt, iTXt) in file order.
 *
 * Ownership: the writer borrows everything. up_png_read fills an up_png_image whose buffers
 * it allocates; up_png_image_free releases them (idempotent, NULL-safe).
 * Errors: UP_ERR_INVALID for bad arguments (sizes, keys, non-UTF-8 text), UP_ERR_IO for files
 * that cannot be created, written or renamed, UP_ERR_FORMAT for files libpng rejects; the
 * message names the path. libpng reports its own errors by longjmp; that jump never leaves
 * png.c (each libpng call sits under a setjmp in the function that made it). */
#ifndef UP_PNG_H
#define UP_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define UP_PNG_COMPRESS_TEXT 1024 /* values longer than this (bytes) are deflated */

/* pixels: (h, stride) bytes, each row w*channels bytes of R,G,B[,A]; channels 3 or 4.
 * keys, values: (n_text) NUL-terminated strings; may be NULL when n_text is 0. */
up_status up_png_write(const char *path, int w, int h, int channels, size_t stride,
                       const uint8_t *pixels, const char *const *keys, const char *const *values,
                       int n_text, up_error *err);

typedef struct up_png_image {
    int w, h;
    int file_channels;  /* channels stored in the file: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
    uint8_t *pixels;    /* (h, w, 4) RGBA, rows 4*w bytes apart */
    int n_text;
    char **keys;        /* (n_text) */
    char **values;      /* (n_text), UTF-8 for iTXt, as stored (Latin-1) for tEXt/zTXt */
} up_png_image;

up_status up_png_read(const char *path, up_png_image *img, up_error *err);

/* Returns the value of the first text chunk named key, or NULL. */
const char *up_png_text(const up_png_image *img, const char *key);

void up_png_image_free(up_png_image *img);

/* The version of the libpng linked in (e.g. "1.6.39"), for manifests. */
const char *up_png_version(void);

#endif
