/* libFuzzer target: bytes -> up_npy_parse_header (the .npy header of every npz member).
 *
 * Properties: an accepted header lies inside the bytes given (header_bytes <= size), names a
 * known element type with its size, 0..UP_MAX_DIMS non-negative dimensions whose product is
 * numel, and data_bytes = numel * itemsize without overflow. Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>

#include "formats/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    up_npy_info info;
    up_error err = {0};
    if (up_npy_parse_header(data, size, &info, &err) != UP_OK) {
        if (!err.msg[0]) abort();
        return 0;
    }
    if (info.header_bytes > size || info.header_bytes < 10) abort();
    if (info.ndim < 0 || info.ndim > UP_MAX_DIMS) abort();
    if (info.type > UP_NPY_BOOL || info.itemsize == 0 || info.itemsize > 8) abort();
    /* A zero dimension makes the array empty, however large the others (the product of those
     * may overflow, and that is fine). */
    uint64_t numel = 1;
    int empty = 0;
    for (int i = 0; i < info.ndim; i++) {
        if (info.shape[i] < 0) abort();
        empty = empty || info.shape[i] == 0;
    }
    for (int i = 0; i < info.ndim && !empty; i++) {
        if (numel > UINT64_MAX / (uint64_t)info.shape[i]) abort();
        numel *= (uint64_t)info.shape[i];
    }
    if (empty) numel = 0;
    if (numel != info.numel) abort();
    if (numel && info.itemsize > UINT64_MAX / numel) abort();
    if (info.data_bytes != numel * info.itemsize) abort();
    return 0;
}
