/* hooks — stock hooks for up_forward's eval callbacks (forward.h), so that a caller who only
 * wants a point's activation, or a pass that ends early, does not write its own callback.
 *
 *   up_hook_capture(p, cap)   at point p, copies the chunk's activation (n_rows, n_tok, d) into
 *                             cap->dst, which holds cap->n floats (caller-owned; cap must live
 *                             until the pass ends). Each call overwrites the last, so a
 *                             prefill leaves the whole prompt there. A chunk of more than cap->n
 *                             floats aborts the pass (up_forward returns UP_ERR_ABORTED) rather
 *                             than overflow dst.
 *   up_hook_stop(p)           ends the pass at point p (UP_HOOK_STOP): nothing above p is
 *                             computed; the state must be reset before its next append.
 *   up_hook_prompt_len(c, b)  row b's prompt length in a hook call: c->n_prompt[b] when the pass
 *                             has prompt lengths (generation), else the prompt is taken to end at
 *                             the chunk's last slot (a one-call prefill).
 *
 * The returned up_hook values go into a caller-owned up_hooks array like any other hook; put a
 * capture before a stop at the same point (hooks run in registration order). */
#ifndef UP_HOOKS_H
#define UP_HOOKS_H

#include <stddef.h>

#include "engine/forward.h"

typedef struct up_capture {
    float *dst; /* caller-owned */
    size_t n;   /* floats dst holds */
} up_capture;

up_hook up_hook_capture(up_hook_point p, up_capture *cap);
up_hook up_hook_stop(up_hook_point p);

static inline int up_hook_prompt_len(const up_hook_call *call, int b) {
    if (call->n_prompt) return call->n_prompt[b];
    return call->pos[(size_t)b * call->n_tok + call->n_tok - 1] + 1;
}

#endif
