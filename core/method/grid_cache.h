/* grid_cache — a grid cell's key and its file in the on-disk cache (private to the grid; the
 * format is the one grid.h describes under "Cache").
 *
 * Keys. A cell's key is the SHA-256 (hash.h) of its spec: a canonical text naming everything
 * that determines its outputs, made of four parts, each ending in a newline:
 *   run spec     the grid format, the identities (the caller's, the model directory's digest
 *                and the digest of every SAE a CLAMP uses, when there is a cache), the stop and
 *                refusal ids, the objective, the text switch and substring list, coherence
 *   prompt spec  the prompt's ids
 *   items spec   the intervention's items; ADD with alpha 0 left out (steer.h skips it)
 *   decoding     max_new_tokens
 * Labels do not count. Equal keys are one computation (grid.c deduplicates by them), so they
 * are formed with or without a cache.
 *
 * Cell files. CACHE/<key[0:2]>/<key>.json, written whole (a temporary name, then renamed) with
 * doubles to 17 significant digits, NaN as null and infinities as "inf"/"-inf", so a cell read
 * back is bit-identical to the one written. The spec is kept in the file for audits. The last
 * field, "check", is the SHA-256 of the file as it would be without it; a file whose check
 * does not match (changed or cut anywhere) is a miss, recomputed and rewritten.
 *
 * Errors: the spec makers return NULL when out of memory (grid_run_spec also fails, with a
 * message, when an identity file cannot be hashed or the model has no directory to hash);
 * grid_cache_read treats anything odd as a miss; grid_cache_write reports I/O failures. */
#ifndef UP_GRID_CACHE_H
#define UP_GRID_CACHE_H

#include "method/grid_impl.h"

/* "prompt n=<n> <ids>\n". The caller frees it. */
char *grid_prompt_spec(const int32_t *ids, int n);

/* "steer n=<kept>\n" and one line per item that changes anything. The caller frees it. */
char *grid_items_spec(const up_model *m, const up_steer *items, int n);

/* The part every key of one run starts with, for the grid's current axes and o. The caller
 * frees it. Hashes the model and CLAMP SAE files when o->cache_dir is set (memoised in
 * CACHE/filehash). */
char *grid_run_spec(const up_grid *g, const up_grid_opts *o, up_error *err);

/* The whole spec of one cell (the caller frees it), its key written to key (65 bytes). */
char *grid_cell_spec(const char *run_spec, const char *prompt_spec, const char *items_spec, int max_new_tokens,
                     char key[65]);

/* A cell's outputs as the sealed bytes of its cache file (size set; the caller frees them);
 * spec may be NULL (a cell sent between ranks, dist.h). NULL when out of memory. */
char *grid_cell_encode(const up_grid_cell *c, const char *spec, size_t *size, up_error *err);

/* Fills c's outputs (and state UP_GRID_CACHED) from sealed bytes (grid_cell_encode's), checked
 * as a cache file is; want_key NULL accepts any key. 0, or -1 leaving c untouched. */
int grid_cell_decode(const char *bytes, size_t size, int vocab_size, const char *want_key, up_grid_cell *c);

/* Fills c's outputs (and state UP_GRID_CACHED) from the file of c->key; 0 on a hit, -1 on a
 * miss (no file, another format or key, anything unreadable), leaving c untouched. */
int grid_cache_read(const char *dir, int vocab_size, up_grid_cell *c);

/* Writes c's outputs and its spec to the file of c->key. */
up_status grid_cache_write(const char *dir, const up_grid_cell *c, const char *spec, up_error *err);

#endif
