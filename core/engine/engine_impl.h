/* engine_impl — what the engine's own files share and nothing outside core/engine may use
 * (as ggml keeps ggml-impl.h): kernels the forward and the backward both run, and the threading
 * threshold they agree on. Not public API: names and signatures change with the engine. */
#ifndef UP_ENGINE_IMPL_H
#define UP_ENGINE_IMPL_H

#include "engine/forward.h"

/* Below this many floats a cheap elementwise loop (norms, residual adds, copies) runs on the
 * calling thread: a parallel region costs a fork and a barrier, and on a shared machine a
 * barrier whose partner thread is descheduled costs far more than such a loop. */
#define UP_OMP_MIN_FLOATS (1L << 18)

/* Kernels the backward shares (fp32, in place / elementwise, OpenMP over slots):
 * rotate-half RoPE over the full head_dim for n_heads heads of each slot (pad slots, pos -1,
 * rotate as position 0), or its transpose; the MLP activation and its derivative. */
void up_rope_rotate(float *t, const int *pos, int n_slots, int n_heads, int hd, float theta, int transpose);
float up_gelu(float x, up_activation act);
float up_gelu_grad(float x, up_activation act);

#endif
