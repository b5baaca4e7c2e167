/* libFuzzer target: a sharded checkpoint -> up_safetensors_open_dir, every tensor found.
 *
 * Input: model.safetensors.index.json, then up to three shards 1.safetensors .. 3.safetensors,
 * separated by FUZZ_SEP (fuzz_util.h). An empty first part writes no index, so the directory
 * is read as a single model.safetensors (the second part).
 *
 * Properties: a loaded checkpoint lists sorted, unique names; every tensor found is readable
 * to its last byte (each is touched, so a view past its shard's mapping faults) and has as
 * many bytes as its shape and dtype say; the reader owns nothing after close (LeakSanitizer).
 * Offsets inside one file are checked exactly by fuzz_safetensors. Build and run:
 * tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *parts[4];
    size_t sizes[4];
    const int n_parts = fuzz_split(data, size, parts, sizes, 4);
    const char *dir = fuzz_dir();
    if (sizes[0]) fuzz_write("model.safetensors.index.json", parts[0], sizes[0]);
    else if (n_parts > 1) fuzz_write("model.safetensors", parts[1], sizes[1]);
    for (int i = 1; i < n_parts; i++) {
        char name[32];
        snprintf(name, sizeof name, "%d.safetensors", i);
        fuzz_write(name, parts[i], sizes[i]);
    }
    up_safetensors *st = NULL;
    up_error err = {0};
    if (up_safetensors_open_dir(&st, dir, &err) != UP_OK) {
        if (st || !err.msg[0]) abort();
        return 0;
    }
    volatile unsigned sum = 0;
    for (int i = 0; i < up_safetensors_count(st); i++) {
        const char *name = up_safetensors_name(st, i);
        if (i && strcmp(up_safetensors_name(st, i - 1), name) >= 0) abort();
        up_tensor t;
        up_error ferr = {0};
        if (up_safetensors_find(st, name, &t, &ferr) != UP_OK) {
            if (!ferr.msg[0]) abort();
            continue;
        }
        const int64_t numel = up_tensor_numel(&t);
        if (numel < 0) abort();
        const unsigned char *p = t.data;
        const size_t nbytes = (size_t)numel * up_dtype_size(t.dtype);
        for (size_t k = 0; k < nbytes; k++) sum += p[k];
    }
    up_safetensors_close(st);
    return 0;
}
