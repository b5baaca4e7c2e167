#include "engine/hooks.h"

#include <string.h>

static int capture_fn(const up_hook_call *call, void *user) {
    const up_capture *cap = user;
    const size_t n = (size_t)call->n_rows * call->n_tok * call->d;
    if (n > cap->n) return -1;
    memcpy(cap->dst, call->act, n * sizeof(float));
    return UP_HOOK_CONTINUE;
}

static int stop_fn(const up_hook_call *call, void *user) {
    (void)call, (void)user;
    return UP_HOOK_STOP;
}

up_hook up_hook_capture(up_hook_point p, up_capture *cap) { return (up_hook){p, capture_fn, cap}; }

up_hook up_hook_stop(up_hook_point p) { return (up_hook){p, stop_fn, NULL}; }
