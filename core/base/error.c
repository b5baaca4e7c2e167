#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

up_status up_error_set(up_error *err, up_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

up_status up_error_prefix(up_error *err, const char *fmt, ...) {
    if (!err) return UP_OK;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->status;
}

const char *up_status_name(up_status status) {
    switch (status) {
    case UP_OK: return "ok";
    case UP_ERR_IO: return "I/O error";
    case UP_ERR_FORMAT: return "format error";
    case UP_ERR_INVALID: return "invalid argument";
    case UP_ERR_UNSUPPORTED: return "unsupported";
    case UP_ERR_NOMEM: return "out of memory";
    case UP_ERR_ABORTED: return "aborted";
    }
    return "unknown error";
}
