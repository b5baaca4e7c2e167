/* fuzz_util — what the fuzz targets share: a private scratch directory for the files a reader
 * takes by path, and the split of one fuzz input into several files.
 *
 * Readers that take a directory (a sharded checkpoint, an SAELens SAE, a model) get one input
 * that holds their files one after the other, separated by FUZZ_SEP; seeds are made that way by
 * tests/fuzz/make_seeds.py and each target's dictionary names the separator, so libFuzzer can
 * add and drop whole files. */
#ifndef UP_FUZZ_UTIL_H
#define UP_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_SEP "\n#@FILE@#\n"

/* A directory of this process's own (made once, under $TMPDIR or /tmp; removed at exit), emptied
 * of the previous input's files on every call. */
const char *fuzz_dir(void);

/* Writes DIR/name; aborts on an I/O error (the harness is broken, not the reader). Returns the
 * path in a static buffer (valid until the next call). */
const char *fuzz_write(const char *name, const void *data, size_t size);

/* Splits data at FUZZ_SEP into at most max parts; returns how many (at least 1). */
int fuzz_split(const uint8_t *data, size_t size, const uint8_t **parts, size_t *sizes, int max);

#endif
