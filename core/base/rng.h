/* rng — splitmix64, the one generator behind every seeded draw in core (random models, the
 * shared embedding, SAE initialisation seeds, training order), so a seed gives the same bits
 * on every machine and build.
 *
 * up_splitmix64(&state) advances state by the golden-ratio increment and returns the mixed
 * value (Steele, Lea and Flood's finalizer). Any state is valid, 0 included. */
#ifndef UP_RNG_H
#define UP_RNG_H

#include <stdint.h>

static inline uint64_t up_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
