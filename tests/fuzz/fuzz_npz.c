/* libFuzzer target: an .npz archive -> up_npz (every member) and up_sae_load (GemmaScope
 * params.npz).
 *
 * Properties: every listed key's header reads; an array read has the shape and byte count its
 * header announced (up_npz_read and up_npz_read_f32 agree with up_npz_info); an SAE that loads
 * passes fuzz_sae_check (sizes, parts, every value finite). Arrays over 64 MiB are not read
 * (the fuzzer's memory limit), their headers still are. Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/npy.h"
#include "fuzz_sae_check.h"
#include "fuzz_util.h"

#define READ_LIMIT ((uint64_t)64 << 20)

static void read_archive(const char *path) {
    up_npz *z = NULL;
    up_error err = {0};
    if (up_npz_open(&z, path, &err) != UP_OK) {
        if (z || !err.msg[0]) abort();
        return;
    }
    for (int i = 0; i < up_npz_count(z); i++) {
        const char *key = up_npz_key(z, i);
        if (!up_npz_has(z, key)) abort();
        if (i && strcmp(up_npz_key(z, i - 1), key) >= 0) abort();
        up_npy_info info;
        up_error e = {0};
        if (up_npz_info(z, key, &info, &e) != UP_OK || info.data_bytes > READ_LIMIT) continue;
        void *raw = NULL;
        up_npy_info again;
        if (up_npz_read(z, key, &raw, &again, &e) == UP_OK) {
            if (again.data_bytes != info.data_bytes || again.ndim != info.ndim || again.type != info.type) abort();
            volatile unsigned char sum = 0;
            for (uint64_t k = 0; k < again.data_bytes; k++) sum += ((unsigned char *)raw)[k];
            free(raw);
        }
        float *f = NULL;
        int ndim;
        int64_t shape[UP_MAX_DIMS];
        if (up_npz_read_f32(z, key, &f, &ndim, shape, &e) == UP_OK) {
            if (ndim != info.ndim || memcmp(shape, info.shape, (size_t)ndim * sizeof *shape)) abort();
            volatile float sum = 0;
            for (uint64_t k = 0; k < info.numel; k++) sum += f[k];
            free(f);
        }
    }
    up_npz_close(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_dir();
    const char *path = fuzz_write("params.npz", data, size);
    read_archive(path);
    up_sae *sae = NULL;
    up_error err = {0};
    if (up_sae_load(&sae, path, UP_SAE_ALL, &err) == UP_OK) {
        if (sae->arch != UP_SAE_JUMPRELU) abort();
        fuzz_sae_check(sae);
        up_sae_free(sae);
    } else if (sae || !err.msg[0]) {
        abort();
    }
    return 0;
}
