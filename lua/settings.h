/* settings — the user's upstream.cfg (libconfig syntax).
 *
 * Search order: an explicit path (--config), $UPSTREAM_CONFIG, ./upstream.cfg, then
 * ~/.config/upstream/upstream.cfg; the first that exists is read. None existing is not an
 * error (built-in defaults apply). Parse errors come back as UP_ERR_FORMAT with "file:line:
 * message" from libconfig. The file holds a registry of models (name -> HF directory, chat
 * template, per-model experiment defaults) and SAEs (name -> path pattern with {layer},
 * {width} and {l0}, format, hook, model), plus threads and the cache, results and plots
 * directories; see upstream.cfg.example for every key.
 *
 * Ownership: up_settings owns the parsed tree; config pointers and strings returned by the
 * accessors die with up_settings_free. Paths come back as written: the host resolves "~/" and
 * paths relative to the file's directory (dir) in lua/upstream/config.lua. */
#ifndef UP_SETTINGS_H
#define UP_SETTINGS_H

#include <libconfig.h>
#include <stddef.h>

#include "base/error.h"

typedef struct up_settings {
    config_t cfg;
    char path[4096]; /* the file read, "" when none was found */
    char dir[4096];  /* its directory, for relative paths */
} up_settings;

/* explicit_path may be NULL. An explicit path that does not exist is UP_ERR_IO. */
up_status up_settings_load(up_settings **out, const char *explicit_path, up_error *err);
void up_settings_free(up_settings *s);

/* The root setting (a group), never NULL. */
const config_setting_t *up_settings_root(const up_settings *s);

#endif
