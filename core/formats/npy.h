/* npy — NumPy .npy arrays and .npz archives, read-only.
 *
 * File format (.npy, versions 1.0, 2.0 and 3.0): the magic "\x93NUMPY", a
 * major and minor version byte, a little-endian header length (u16 for 1.0,
 * u32 for 2.0/3.0), then that many bytes holding a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with
 * spaces and a newline; the raw array follows, numel * itemsize bytes. We
 * parse the literal ourselves (never evaluate it) and accept exactly the three
 * keys. An .npz is a zip archive (stored or deflated members, zip64 included,
 * as numpy.savez writes them) whose member "KEY.npy" holds array KEY; libzip
 * reads it and checks each member's CRC.
 *
 * Supported element types: little-endian floats '<f2', '<f4', '<f8' and
 * integers '<i1'..'<i8', '|u1'..'<u8', '|b1' ('=' is read as little-endian).
 * Big-endian, complex, string, object (pickle) and structured dtypes are
 * UP_ERR_UNSUPPORTED, as is fortran_order True for arrays of 2+ dimensions
 * (for 0-1 dimensions both orders are the same bytes).
 *
 * Everything is validated before use: magic, version, header length against
 * the bytes present, the dict's syntax and keys, the shape (non-negative,
 * product * itemsize without overflow) against the member's size. Failures are
 * UP_ERR_FORMAT (corrupt), UP_ERR_UNSUPPORTED (well-formed but not handled),
 * UP_ERR_INVALID (missing key, caller's buffer the wrong size), UP_ERR_IO or
 * UP_ERR_NOMEM, with a message naming the file and member.
 *
 * Ownership: up_npz owns the open archive; arrays read with up_npz_read_f32
 * and up_npz_read are malloc'd and belong to the caller (free()). An up_npz is
 * not safe to use from two threads at once. */
#ifndef UP_NPY_H
#define UP_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/tensor.h"

typedef enum {
    UP_NPY_F16 = 0, UP_NPY_F32, UP_NPY_F64,
    UP_NPY_I8, UP_NPY_I16, UP_NPY_I32, UP_NPY_I64,
    UP_NPY_U8, UP_NPY_U16, UP_NPY_U32, UP_NPY_U64,
    UP_NPY_BOOL
} up_npy_type;

typedef struct up_npy_info {
    up_npy_type type;
    size_t itemsize;            /* bytes per element */
    int ndim;
    int64_t shape[UP_MAX_DIMS]; /* (ndim) */
    uint64_t numel;             /* product of shape (1 for a 0-d array) */
    uint64_t data_bytes;        /* numel * itemsize */
    size_t header_bytes;        /* magic + version + length + dict: the data's offset */
    char descr[16];             /* as written, e.g. "<f4" */
} up_npy_info;

/* Parses the header at the start of buf (len bytes; the array data need not be present).
 * UP_ERR_FORMAT when buf is shorter than the header it announces. */
up_status up_npy_parse_header(const void *buf, size_t len, up_npy_info *out, up_error *err);

typedef struct up_npz up_npz;

up_status up_npz_open(up_npz **out, const char *path, up_error *err);
/* NULL-safe. */
void up_npz_close(up_npz *npz);

/* Arrays in the archive, by key (member name without ".npy"), sorted; members that are not
 * .npy files are not listed. */
int up_npz_count(const up_npz *npz);
const char *up_npz_key(const up_npz *npz, int i);
int up_npz_has(const up_npz *npz, const char *key);

/* Reads and checks KEY's header (and that the member's size matches it) without reading
 * the data. */
up_status up_npz_info(up_npz *npz, const char *key, up_npy_info *out, up_error *err);

/* Reads a floating array (f2/f4/f8) widened or narrowed to fp32 into a new malloc'd buffer.
 * f8 rounds to nearest. ndim and shape describe it. Integer arrays are UP_ERR_UNSUPPORTED. */
up_status up_npz_read_f32(up_npz *npz, const char *key, float **data, int *ndim,
                          int64_t shape[UP_MAX_DIMS], up_error *err);

/* As up_npz_read_f32 into the caller's dst, which holds numel floats; UP_ERR_INVALID when the
 * array has a different element count. */
up_status up_npz_read_f32_into(up_npz *npz, const char *key, float *dst, uint64_t numel,
                               up_error *err);

/* Reads any supported array's bytes as stored (little-endian) into a new malloc'd buffer;
 * info (optional) describes them. */
up_status up_npz_read(up_npz *npz, const char *key, void **data, up_npy_info *info,
                      up_error *err);

#endif
