/* upstream.settings([path]) -> the upstream.cfg tree as Lua tables (groups become tables with
 * string keys, arrays and lists become sequences), plus `_file` (the file read, or nil) and
 * `_dir`. Paths inside stay as written; upstream.expand_path(settings, path) resolves "~/" and
 * paths relative to the file. A parse error raises "file:line: message". */
#include <string.h>

#include "binding.h"
#include "settings.h"

static void push_setting(lua_State *L, const config_setting_t *s) {
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT: lua_pushinteger(L, config_setting_get_int(s)); break;
    case CONFIG_TYPE_INT64: lua_pushinteger(L, (lua_Integer)config_setting_get_int64(s)); break;
    case CONFIG_TYPE_FLOAT: lua_pushnumber(L, config_setting_get_float(s)); break;
    case CONFIG_TYPE_BOOL: lua_pushboolean(L, config_setting_get_bool(s)); break;
    case CONFIG_TYPE_STRING: lua_pushstring(L, config_setting_get_string(s)); break;
    case CONFIG_TYPE_GROUP: {
        int n = config_setting_length(s);
        lua_createtable(L, 0, n);
        for (int i = 0; i < n; i++) {
            const config_setting_t *c = config_setting_get_elem(s, (unsigned)i);
            push_setting(L, c);
            lua_setfield(L, -2, config_setting_name(c));
        }
        break;
    }
    default: { /* array or list */
        int n = config_setting_length(s);
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            push_setting(L, config_setting_get_elem(s, (unsigned)i));
            lua_rawseti(L, -2, i + 1);
        }
    }
    }
}

static int l_settings(lua_State *L) {
    const char *path = luaL_optstring(L, 1, NULL);
    up_settings *s;
    up_error e = {0};
    if (up_settings_load(&s, path, &e)) return luaL_error(L, "%s", e.msg);
    push_setting(L, up_settings_root(s));
    if (s->path[0]) {
        lua_pushstring(L, s->path), lua_setfield(L, -2, "_file");
        lua_pushstring(L, s->dir), lua_setfield(L, -2, "_dir");
    }
    up_settings_free(s);
    return 1;
}

void up_lua_register_settings(lua_State *L) {
    lua_pushcfunction(L, l_settings);
    lua_setfield(L, -2, "settings");
}
