/* JSON for scripts (manifests, organism.json, reports), through jansson.
 *
 *   upstream.json_encode(value[, {indent = 2}]) -> string
 *        Tables whose keys are exactly 1..n become arrays (an empty table is []); other tables
 *        become objects with their keys sorted, so the same value always gives the same text.
 *        Keys must be strings (or integers, written as text) ; integers stay integers, other
 *        numbers are written with 17 significant digits (they read back bit for bit); NaN and
 *        infinities become null. indent = 0 gives one line. Cycles and other types raise.
 *   upstream.json_decode(text[, source]) -> value
 *        null becomes upstream.json_null (a light userdata), so arrays keep their length.
 *        A syntax error raises "source:line:column: message" (source defaults to "json").
 *   upstream.json_read(path)             -> value   (json_decode of the file, errors name it)
 *   upstream.json_null
 * Error rule: everything raises (misuse with luaL_argerror, bad text with the position). */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "base/utf8.h"
#include "binding.h"

#define MAX_DEPTH 64

/* Encoding runs in two passes: check() walks the value and raises on anything the encoder
 * cannot write (a cycle or deeper nesting, a key that is not a string or integer, a string that
 * is not UTF-8, another type); only then does encode() build the jansson tree, which cannot
 * fail but for memory. A raise therefore never strands a half-built tree. */

/* Whether the table at idx is a sequence 1..n (n set): such tables become arrays. */
static int is_array(lua_State *L, int idx, size_t *n_out) {
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return 0;
        }
        n++;
    }
    *n_out = n;
    return lua_rawlen(L, idx) == n;
}

static void check(lua_State *L, int idx, int depth) {
    if (depth > MAX_DEPTH) luaL_error(L, "json_encode: nested deeper than %d (a cycle?)", MAX_DEPTH);
    luaL_checkstack(L, 4, "json_encode: nested too deep");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
    case LUA_TNUMBER: return;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (!up_utf8_valid(s, n)) luaL_error(L, "json_encode: string is not valid UTF-8: %s", s);
        return;
    }
    case LUA_TTABLE:
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const int top = lua_gettop(L); /* value at top, key below it */
            const int kt = lua_type(L, top - 1);
            if (kt == LUA_TSTRING) check(L, top - 1, depth + 1);
            else if (!lua_isinteger(L, top - 1))
                luaL_error(L, "json_encode: object keys must be strings or integers, got %s", luaL_typename(L, top - 1));
            check(L, top, depth + 1);
            lua_settop(L, top - 1);
        }
        return;
    case LUA_TLIGHTUSERDATA:
        if (!lua_touserdata(L, idx)) return; /* upstream.json_null */
        /* fall through */
    default: luaL_error(L, "json_encode: cannot encode a %s", luaL_typename(L, idx));
    }
}

/* The value at idx, already checked. */
static json_t *encode(lua_State *L, int idx) {
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) return json_null();
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return json_stringn(s, n);
    }
    case LUA_TTABLE: {
        size_t n;
        if (is_array(L, idx, &n)) {
            json_t *a = json_array();
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (lua_Integer)i);
                json_array_append_new(a, encode(L, lua_gettop(L)));
                lua_pop(L, 1);
            }
            return a;
        }
        json_t *o = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const int top = lua_gettop(L);
            lua_pushvalue(L, top - 1); /* converts a copy of an integer key, never the key lua_next walks */
            json_object_set_new(o, lua_tostring(L, -1), encode(L, top));
            lua_settop(L, top - 1);
        }
        return o;
    }
    default: return json_null(); /* nil and upstream.json_null */
    }
}

static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    int indent = 2;
    if (lua_istable(L, 2)) {
        static const char *const fields[] = {"indent", NULL};
        up_lua_check_keys(L, 2, fields, "opts");
        lua_getfield(L, 2, "indent");
        if (!lua_isnil(L, -1)) indent = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    if (indent < 0 || indent > 31) return luaL_argerror(L, 2, "indent must be 0..31");
    lua_settop(L, 1);
    check(L, 1, 0);
    json_t *j = encode(L, 1);
    size_t flags = JSON_SORT_KEYS | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY | (indent ? JSON_INDENT(indent) : JSON_COMPACT);
    char *text = json_dumps(j, flags);
    json_decref(j);
    if (!text) return luaL_error(L, "json_encode: out of memory");
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static void decode(lua_State *L, json_t *j) {
    luaL_checkstack(L, 4, "json_decode: nested too deep");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(j));
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
            decode(L, v);
            lua_setfield(L, -2, key);
        }
        break;
    }
    case JSON_ARRAY: {
        lua_createtable(L, (int)json_array_size(j), 0);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            decode(L, v);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); break;
    case JSON_REAL: lua_pushnumber(L, json_real_value(j)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_pushlightuserdata(L, NULL); break;
    }
}

static int push_decoded(lua_State *L, json_t *j, const json_error_t *je, const char *source) {
    if (!j) return luaL_error(L, "%s:%d:%d: %s", source, je->line, je->column, je->text);
    decode(L, j); /* cannot raise but for stack overflow, which leaks j: acceptable for depth > C stack */
    json_decref(j);
    return 1;
}

static int l_decode(lua_State *L) {
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    const char *source = luaL_optstring(L, 2, "json");
    json_error_t je;
    json_t *j = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    return push_decoded(L, j, &je, source);
}

static int l_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_DECODE_ANY, &je);
    if (!j && je.line < 0) return luaL_error(L, "%s: %s", path, je.text);
    return push_decoded(L, j, &je, path);
}

void up_lua_register_json(lua_State *L) {
    static const luaL_Reg fns[] = {{"json_encode", l_encode}, {"json_decode", l_decode}, {"json_read", l_read}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    lua_pushlightuserdata(L, NULL), lua_setfield(L, -2, "json_null");
}
