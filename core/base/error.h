/* error — how core reports failure.
 *
 * Every fallible core function returns an up_status and, on failure, fills the
 * caller's up_error with a message that names the file, tensor or key involved.
 * Core never prints, never exits and never longjmps; invariants may assert.
 * An up_error may be NULL, in which case only the status comes back. */
#ifndef UP_ERROR_H
#define UP_ERROR_H

typedef enum {
    UP_OK = 0,
    UP_ERR_IO,          /* open/read/write/mmap failed */
    UP_ERR_FORMAT,      /* a file is corrupt, truncated or lies about itself */
    UP_ERR_INVALID,     /* the caller passed something unusable */
    UP_ERR_UNSUPPORTED, /* well-formed but not something we implement */
    UP_ERR_NOMEM,
    UP_ERR_ABORTED      /* a hook or callback asked to stop */
} up_status;

typedef struct up_error {
    up_status status;
    char msg[1024];
} up_error;

/* Sets err (if non-NULL) and returns status, so callers can `return up_error_set(...)`. */
up_status up_error_set(up_error *err, up_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to an existing message (keeps the status). */
up_status up_error_prefix(up_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *up_status_name(up_status status);

#endif
