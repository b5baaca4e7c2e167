/* fuzz_sae_check — the properties every loaded SAE must have, whatever file it came from
 * (sae.h): positive sizes, the parts asked for present, the architecture's fields consistent,
 * every loaded value finite, the hook a terminated string that matches the layer. Aborts when
 * one fails. */
#ifndef UP_FUZZ_SAE_CHECK_H
#define UP_FUZZ_SAE_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae/sae.h"

static void fuzz_sae_finite(const float *p, size_t n, const char *what) {
    if (!p) {
        fprintf(stderr, "loaded SAE has no %s\n", what);
        abort();
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            fprintf(stderr, "loaded SAE has a non-finite %s[%zu]\n", what, i);
            abort();
        }
}

static void fuzz_sae_check(const up_sae *s) {
    if (s->d_in <= 0 || s->d_sae <= 0) abort();
    if (s->parts != UP_SAE_ALL) abort();
    if (s->arch == UP_SAE_TOPK ? (s->k <= 0 || s->k > s->d_sae) : s->k != 0) abort();
    if (!memchr(s->hook, 0, sizeof s->hook)) abort();
    if (s->layer < -1) abort();
    const size_t din = (size_t)s->d_in, dsae = (size_t)s->d_sae;
    fuzz_sae_finite(s->W_enc, din * dsae, "W_enc");
    fuzz_sae_finite(s->W_dec, din * dsae, "W_dec");
    fuzz_sae_finite(s->b_enc, dsae, "b_enc");
    fuzz_sae_finite(s->b_dec, din, "b_dec");
    if (s->arch == UP_SAE_JUMPRELU) fuzz_sae_finite(s->threshold, dsae, "threshold");
    if (!s->path || !*s->path) abort();
}

#endif
