/* safetensors — read (memory-mapped) and write Hugging Face safetensors files.
 *
 * File format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON mapping
 * tensor name -> {"dtype": "F32"|"BF16"|"F16"|"I32"|"I64"|..., "shape": [..],
 * "data_offsets": [begin, end]} (offsets relative to the byte after the
 * header), plus an optional "__metadata__" object of string -> string. Data
 * follows the header. A sharded checkpoint is a directory holding
 * model.safetensors.index.json ({"weight_map": {name: shard file}}) and the
 * shards.
 *
 * Everything is validated before use: header length against the file size,
 * JSON syntax and UTF-8, duplicate names, dtype names, shape/byte-count
 * agreement, offsets in range and non-overlapping, and (for an index) every
 * shard present and every listed tensor found in its shard. Failures come back
 * as UP_ERR_FORMAT/UP_ERR_IO with a message naming the file and tensor.
 *
 * Ownership: up_safetensors owns the mappings; up_tensor views returned by
 * up_safetensors_find point into them and die with up_safetensors_close.
 * Dtypes other than F32/BF16/F16/I32/I64 (e.g. U8, F64) are accepted in the
 * header and listed, but up_safetensors_find reports them as unsupported. */
#ifndef UP_SAFETENSORS_H
#define UP_SAFETENSORS_H

#include "base/error.h"
#include "base/tensor.h"

typedef struct up_safetensors up_safetensors;

/* Opens one .safetensors file. */
up_status up_safetensors_open_file(up_safetensors **out, const char *path, up_error *err);

/* Opens a checkpoint directory: model.safetensors.index.json with its shards
 * if present, else model.safetensors. */
up_status up_safetensors_open_dir(up_safetensors **out, const char *dir, up_error *err);

/* NULL-safe, idempotent on a NULL pointer. */
void up_safetensors_close(up_safetensors *st);

/* Number of tensors, and the i-th name (sorted by name, 0 <= i < count). */
int up_safetensors_count(const up_safetensors *st);
const char *up_safetensors_name(const up_safetensors *st, int i);

/* Looks a tensor up by name. Returns UP_OK and fills *out; UP_ERR_INVALID
 * with "tensor NAME not found in FILE" when absent; UP_ERR_UNSUPPORTED for a
 * dtype we cannot compute with. */
up_status up_safetensors_find(const up_safetensors *st, const char *name, up_tensor *out,
                              up_error *err);

/* Value of a "__metadata__" key (of the first shard), or NULL. */
const char *up_safetensors_metadata(const up_safetensors *st, const char *key);
/* The i-th "__metadata__" key (0-based, in file order), or NULL past the end. */
const char *up_safetensors_metadata_key(const up_safetensors *st, int i);

/* --- writer -------------------------------------------------------------
 * Tensors are copied on add and written on close, to PATH.tmp.<pid>.<n> first and
 * renamed onto PATH, so a reader never sees a half-written file. Names must be
 * unique. The data area starts 8-byte aligned (the header is space-padded) and
 * tensors follow it with no gaps, widest element first, so each starts aligned
 * to its element size (gaps would make Hugging Face's reader refuse the file).
 * A reader's up_safetensors_find refuses a tensor that is not so aligned. */
typedef struct up_safetensors_writer up_safetensors_writer;

up_status up_safetensors_writer_open(up_safetensors_writer **out, const char *path, up_error *err);
up_status up_safetensors_writer_add(up_safetensors_writer *w, const char *name, up_dtype dtype,
                                    int ndim, const int64_t *shape, const void *data,
                                    up_error *err);
up_status up_safetensors_writer_metadata(up_safetensors_writer *w, const char *key,
                                         const char *value, up_error *err);
/* Writes and renames; frees w whatever the outcome. */
up_status up_safetensors_writer_close(up_safetensors_writer *w, up_error *err);
/* Frees w without writing anything. NULL-safe. */
void up_safetensors_writer_abort(up_safetensors_writer *w);

#endif
