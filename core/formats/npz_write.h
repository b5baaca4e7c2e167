/* npz_write — writes float32 arrays as a NumPy .npz archive, the way numpy.savez does.
 *
 * File format written: a zip archive with one member "KEY.npy" per array, in the order given.
 * Each member is a .npy file, format version 1.0: the magic "\x93NUMPY", bytes 1 and 0, a
 * little-endian u16 header length, then the header dict exactly as numpy writes it,
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (d, d_sae), }
 * (a 1-d shape is "(n,)", a 0-d one "()"), padded with spaces and ended by '\n' so that the
 * array data starts at a multiple of 64 bytes, byte for byte as numpy 1.24+ pads it (room for
 * the first axis to grow to 21 digits, then at least one space); the raw little-endian C-order
 * floats follow.
 * Members are stored (numpy.savez) or deflated (numpy.savez_compressed); each member's
 * modification time is fixed (2000-01-01) so the same arrays give the same bytes. libzip
 * writes the archive (zip64 when a member needs it).
 *
 * The archive is written to "<path>.tmp.<pid>.<n>" and renamed onto path, so a reader never sees
 * a half-written file and a failed write leaves any previous file in place.
 *
 * Ownership: the caller keeps the arrays; they are only read, and only until the call
 * returns. Nothing is retained.
 *
 * Errors: UP_ERR_INVALID for a bad key (empty, containing '/', or repeated), a negative
 * dimension or ndim outside [0, UP_MAX_DIMS]; UP_ERR_UNSUPPORTED on a big-endian host;
 * UP_ERR_IO (naming the path and libzip's reason) when the archive cannot be written or
 * renamed; UP_ERR_NOMEM. The message names the file and, where it applies, the key. */
#ifndef UP_NPZ_WRITE_H
#define UP_NPZ_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/tensor.h"

typedef struct up_npz_array {
    const char *key;            /* member name without ".npy" */
    const float *data;          /* (numel) C order; may be NULL only when numel is 0 */
    int ndim;                   /* 0..UP_MAX_DIMS */
    int64_t shape[UP_MAX_DIMS]; /* (ndim) */
} up_npz_array;

typedef enum { UP_NPZ_STORED = 0, UP_NPZ_DEFLATED } up_npz_compression;

/* Room for the longest header up_npy_header_f32 can produce: the prefix, a dict with
 * UP_MAX_DIMS 19-digit dimensions and numpy's spare space, rounded up to 64. */
#define UP_NPY_HEADER_MAX 512

/* Writes the .npy 1.0 header of a '<f4' C-order array of the given shape into buf (at least
 * UP_NPY_HEADER_MAX bytes). Returns its length, a multiple of 64; 0 for a bad ndim or a
 * negative dimension. */
size_t up_npy_header_f32(char *buf, int ndim, const int64_t *shape);

/* Writes arrays (n of them, n >= 1) to the archive at path (see above). */
up_status up_npz_write_f32(const char *path, const up_npz_array *arrays, int n,
                           up_npz_compression compression, up_error *err);

#endif
