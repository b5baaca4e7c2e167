/* libFuzzer target: an SAELens directory -> up_sae_load.
 *
 * Input: cfg.json, then (after FUZZ_SEP) sae_weights.safetensors. cfg.json's every key that
 * sae.h lists can be missing, mistyped or absurd; the weights can disagree with it.
 *
 * Properties: a loaded SAE passes fuzz_sae_check (positive sizes, both parts, TopK's k within
 * d_sae, every value finite) and has the architecture cfg.json names; loading frees all it
 * took on failure (LeakSanitizer). Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_sae_check.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *parts[2];
    size_t sizes[2];
    const int n = fuzz_split(data, size, parts, sizes, 2);
    const char *dir = fuzz_dir();
    fuzz_write("cfg.json", parts[0], sizes[0]);
    if (n > 1) fuzz_write("sae_weights.safetensors", parts[1], sizes[1]);
    up_sae *sae = NULL;
    up_error err = {0};
    if (up_sae_load(&sae, dir, UP_SAE_ALL, &err) != UP_OK) {
        if (sae || !err.msg[0]) abort();
        return 0;
    }
    fuzz_sae_check(sae);
    up_sae_free(sae);
    return 0;
}
