/* libFuzzer target: one .safetensors file -> up_safetensors_open_file, every tensor found.
 *
 * Properties, checked against the harness's own reading of the header (jansson, as the format
 * says): every tensor the reader hands out has exactly the bytes its data_offsets name, and
 * they lie inside the file; the byte ranges of tensors in one file do not overlap; a tensor's
 * byte count is its element count times its dtype's size; names come back sorted and unique.
 * Also no crash, leak or sanitizer report. Build and run: tests/fuzz/run.sh. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "fuzz_util.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_safetensors: %s failed (line %d)\n", #cond, __LINE__); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

typedef struct range { uint64_t begin, end; } range;

static int by_begin(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_dir();
    const char *path = fuzz_write("model.safetensors", data, size);
    up_safetensors *st = NULL;
    up_error err = {0};
    if (up_safetensors_open_file(&st, path, &err) != UP_OK) {
        CHECK(st == NULL && err.msg[0]);
        return 0;
    }
    /* Accepted: the header is there and parses for us too. */
    CHECK(size >= 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    CHECK(hlen <= size - 8);
    json_t *header = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, NULL);
    CHECK(json_is_object(header));
    const uint8_t *area = data + 8 + hlen;
    const uint64_t area_size = size - 8 - hlen;

    const int n = up_safetensors_count(st);
    range *ranges = calloc((size_t)n + 1, sizeof *ranges);
    CHECK(ranges);
    int n_ranges = 0;
    for (int i = 0; i < n; i++) {
        const char *name = up_safetensors_name(st, i);
        CHECK(name && strcmp(name, "__metadata__") != 0);
        if (i) CHECK(strcmp(up_safetensors_name(st, i - 1), name) < 0);
        const json_t *e = json_object_get(header, name);
        const json_t *off = json_object_get(e, "data_offsets");
        CHECK(json_array_size(off) == 2 && json_is_integer(json_array_get(off, 0)) &&
              json_is_integer(json_array_get(off, 1)));
        const json_int_t b = json_integer_value(json_array_get(off, 0)), en = json_integer_value(json_array_get(off, 1));
        CHECK(0 <= b && b <= en && (uint64_t)en <= area_size);
        ranges[n_ranges++] = (range){(uint64_t)b, (uint64_t)en};
        up_tensor t;
        up_error ferr = {0};
        if (up_safetensors_find(st, name, &t, &ferr) != UP_OK) {
            CHECK(ferr.msg[0]);
            continue;
        }
        const uint64_t nbytes = (uint64_t)up_tensor_numel(&t) * up_dtype_size(t.dtype);
        CHECK(nbytes == (uint64_t)(en - b));
        /* The same bytes as the file's, which also proves they lie inside it. */
        CHECK(nbytes == 0 || memcmp(t.data, area + b, nbytes) == 0);
    }
    qsort(ranges, (size_t)n_ranges, sizeof *ranges, by_begin);
    for (int i = 1; i < n_ranges; i++)
        if (ranges[i].begin < ranges[i].end && ranges[i - 1].begin < ranges[i - 1].end)
            CHECK(ranges[i - 1].end <= ranges[i].begin);
    for (int i = 0; up_safetensors_metadata_key(st, i); i++)
        CHECK(up_safetensors_metadata(st, up_safetensors_metadata_key(st, i)) != NULL);
    free(ranges);
    json_decref(header);
    up_safetensors_close(st);
    return 0;
}
