#include "settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int exists(const char *p) { return access(p, R_OK) == 0; }

up_status up_settings_load(up_settings **out, const char *explicit_path, up_error *err) {
    *out = NULL;
    up_settings *s = calloc(1, sizeof *s);
    if (!s) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    config_init(&s->cfg);
    char candidate[4096] = "";
    const char *env = getenv("UPSTREAM_CONFIG"), *home = getenv("HOME");
    if (explicit_path) {
        if (!exists(explicit_path)) {
            up_settings_free(s);
            return up_error_set(err, UP_ERR_IO, "settings file %s does not exist", explicit_path);
        }
        snprintf(candidate, sizeof candidate, "%s", explicit_path);
    } else if (env && *env) {
        if (!exists(env)) {
            up_settings_free(s);
            return up_error_set(err, UP_ERR_IO, "$UPSTREAM_CONFIG names %s, which does not exist", env);
        }
        snprintf(candidate, sizeof candidate, "%s", env);
    } else if (exists("upstream.cfg")) {
        snprintf(candidate, sizeof candidate, "upstream.cfg");
    } else if (home) {
        snprintf(candidate, sizeof candidate, "%s/.config/upstream/upstream.cfg", home);
        if (!exists(candidate)) candidate[0] = '\0';
    }
    if (candidate[0]) {
        if (!config_read_file(&s->cfg, candidate)) {
            up_error_set(err, UP_ERR_FORMAT, "%s:%d: %s",
                         config_error_file(&s->cfg) ? config_error_file(&s->cfg) : candidate,
                         config_error_line(&s->cfg), config_error_text(&s->cfg));
            up_settings_free(s);
            return UP_ERR_FORMAT;
        }
        snprintf(s->path, sizeof s->path, "%s", candidate);
        snprintf(s->dir, sizeof s->dir, "%s", candidate);
        char *slash = strrchr(s->dir, '/');
        if (slash) *slash = '\0';
        else snprintf(s->dir, sizeof s->dir, ".");
    }
    *out = s;
    return UP_OK;
}

void up_settings_free(up_settings *s) {
    if (!s) return;
    config_destroy(&s->cfg);
    free(s);
}

const config_setting_t *up_settings_root(const up_settings *s) { return config_root_setting(&s->cfg); }
