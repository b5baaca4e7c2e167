/* upstream.settings([path]) -> tree, lines
 * tree: the upstream.cfg tree as Lua tables (groups become tables with string keys, arrays and
 * lists become sequences), plus `_file` (the file read, or nil) and `_dir`. Paths inside stay
 * as written; lua/upstream/settings.lua resolves "~/" and paths relative to the file.
 * lines: {["models.organism.path"] = 12, ["saes.x.l0.3"] = 40, ...}, the line of every setting
 * by its dotted path (list elements by 1-based index), so checks made in Lua can say file:line.
 * A parse error raises "file:line: message". */
#include <string.h>

#include "binding.h"
#include "settings.h"

/* Records the setting's line under `path` in the table at `lines` (an absolute index). */
static void note_line(lua_State *L, int lines, const char *path, const config_setting_t *s) {
    lua_pushinteger(L, config_setting_source_line(s));
    lua_setfield(L, lines, path);
}

static void push_setting(lua_State *L, const config_setting_t *s, int lines, const char *path) {
    luaL_checkstack(L, 4, "settings nested too deep");
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
            const char *sub = *path ? lua_pushfstring(L, "%s.%s", path, config_setting_name(c))
                                    : lua_pushstring(L, config_setting_name(c));
            note_line(L, lines, sub, c);
            push_setting(L, c, lines, sub);
            lua_remove(L, -2);
            lua_setfield(L, -2, config_setting_name(c));
        }
        break;
    }
    default: { /* array or list */
        int n = config_setting_length(s);
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            const config_setting_t *c = config_setting_get_elem(s, (unsigned)i);
            const char *sub = lua_pushfstring(L, "%s.%d", path, i + 1);
            note_line(L, lines, sub, c);
            push_setting(L, c, lines, sub);
            lua_remove(L, -2);
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
    lua_newtable(L);
    int lines = lua_gettop(L);
    push_setting(L, up_settings_root(s), lines, "");
    if (s->path[0]) {
        lua_pushstring(L, s->path), lua_setfield(L, -2, "_file");
        lua_pushstring(L, s->dir), lua_setfield(L, -2, "_dir");
    }
    up_settings_free(s);
    lua_insert(L, lines); /* tree, lines */
    return 2;
}

void up_lua_register_settings(lua_State *L) {
    lua_pushcfunction(L, l_settings);
    lua_setfield(L, -2, "settings");
}
