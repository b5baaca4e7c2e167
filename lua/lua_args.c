/* Argument readers shared by the bindings (declared in binding.h): token ids, integer lists,
 * lists of id lists, vectors and option fields, read into Lua-owned blocks where a raise
 * could otherwise leak. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

int32_t *up_lua_check_ids(lua_State *L, int idx, int *n) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer len = luaL_len(L, idx);
    if (len <= 0) luaL_argerror(L, idx, "empty list of token ids");
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || v < 0 || v > INT32_MAX) {
            free(ids);
            luaL_argerror(L, idx, "token ids must be non-negative integers");
        }
        ids[i - 1] = (int32_t)v;
    }
    *n = (int)len;
    return ids;
}

int *up_lua_read_ints(lua_State *L, int idx, const char *what, int *n) {
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) luaL_error(L, "%s: expected a table of integers", what);
    lua_Integer len = luaL_len(L, idx);
    if (len < 0 || len > INT_MAX) luaL_error(L, "%s: bad length", what);
    luaL_checkstack(L, 8, "too many lists for one call");
    int *v = lua_newuserdatauv(L, len > 0 ? (size_t)len * sizeof *v : 1, 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        int ok;
        lua_Integer x = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || x < INT_MIN || x > INT_MAX) luaL_error(L, "%s: entry %d is not an integer", what, (int)i);
        v[i - 1] = (int)x;
    }
    *n = (int)len;
    return v;
}

/* Raises about the list of id lists at idx: as argument idx when what is NULL, else naming what. */
static void lists_error(lua_State *L, int idx, const char *what, const char *msg) {
    if (what) luaL_error(L, "%s: %s", what, msg);
    luaL_argerror(L, idx, msg);
}

int up_lua_read_id_lists(lua_State *L, int idx, const char *what, const int32_t ***ids, int **lens) {
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) lists_error(L, idx, what, "expected a list of token id lists");
    lua_Integer n = luaL_len(L, idx);
    if (n <= 0 || n > INT32_MAX) lists_error(L, idx, what, "expected a non-empty list of token id lists");
    size_t total = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, idx, i) != LUA_TTABLE) lists_error(L, idx, what, "every entry must be a list of token ids");
        lua_Integer len = luaL_len(L, -1);
        if (len <= 0) lists_error(L, idx, what, "every list of token ids must be non-empty");
        total += (size_t)len;
        lua_pop(L, 1);
    }
    luaL_checkstack(L, 4, "too many lists of token ids for one call");
    size_t head = (size_t)n * (sizeof(int32_t *) + sizeof(int));
    char *mem = lua_newuserdatauv(L, head + total * sizeof(int32_t), 0);
    *ids = (const int32_t **)mem;
    *lens = (int *)(mem + (size_t)n * sizeof(int32_t *));
    int32_t *flat = (int32_t *)(mem + head);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        lua_Integer len = luaL_len(L, -1);
        (*ids)[i - 1] = flat;
        (*lens)[i - 1] = (int)len;
        for (lua_Integer j = 1; j <= len; j++) {
            lua_geti(L, -1, j);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok || v < 0 || v > INT32_MAX) lists_error(L, idx, what, "token ids must be non-negative integers");
            *flat++ = (int32_t)v;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return (int)n;
}

void up_lua_read_vector_into(lua_State *L, int idx, int n, float *dst, const char *what) {
    up_lua_tensor *t = luaL_testudata(L, idx, UP_TENSOR_MT);
    if (t) {
        if (!t->data || t->numel != n) luaL_error(L, "%s: expected %d values, got a tensor of %d", what, n, (int)t->numel);
        memcpy(dst, t->data, (size_t)n * sizeof *dst);
        return;
    }
    if (!lua_istable(L, idx) || luaL_len(L, idx) != n) luaL_error(L, "%s: expected a Tensor or a table of %d numbers", what, n);
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        int ok;
        dst[i] = (float)lua_tonumberx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok) luaL_error(L, "%s: entry %d is not a number", what, i + 1);
    }
}

float *up_lua_read_vector(lua_State *L, int idx, int n, const char *what) {
    idx = lua_absindex(L, idx);
    float *v = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *v, 0);
    up_lua_read_vector_into(L, idx, n, v, what);
    return v;
}

lua_Integer up_lua_opt_integer(lua_State *L, int t, const char *k, lua_Integer dflt) {
    lua_Integer v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok) luaL_argerror(L, t, lua_pushfstring(L, "%s must be an integer", k));
    }
    lua_pop(L, 1);
    return v;
}

lua_Number up_lua_opt_number(lua_State *L, int t, const char *k, lua_Number dflt) {
    lua_Number v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        int ok;
        v = lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_argerror(L, t, lua_pushfstring(L, "%s must be a number", k));
    }
    lua_pop(L, 1);
    return v;
}

/* A Lua-owned block pushed on the stack (freed by the collector, so a raise leaks nothing).
 * Readers keep one block per list entry or intervention item on the stack until they return,
 * so each push first grows the stack (a C function is only promised LUA_MINSTACK slots) and
 * leaves room for the few values a caller pushes between blocks. */
void *up_lua_scratch(lua_State *L, size_t bytes) {
    luaL_checkstack(L, 8, "too many lists or items for one call");
    return lua_newuserdatauv(L, bytes ? bytes : 1, 0);
}

/* The " (did you mean 'x'?)" tail for name, from upstream.util.suggest; "" when the module
 * is not there. Leaves the stack as it found it but for the one string it pushes. */
static const char *suggestion(lua_State *L, const char *name, const char *const *allowed) {
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "upstream.util");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) goto none;
    if (lua_getfield(L, -1, "suggest") != LUA_TFUNCTION) goto none;
    lua_pushstring(L, name);
    lua_newtable(L);
    for (int i = 0; allowed[i]; i++) lua_pushstring(L, allowed[i]), lua_rawseti(L, -2, i + 1);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK || !lua_isstring(L, -1)) goto none;
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return lua_tostring(L, -1);
none:
    lua_settop(L, top);
    lua_pushliteral(L, "");
    return lua_tostring(L, -1);
}

void up_lua_check_keys(lua_State *L, int idx, const char *const *allowed, const char *what) {
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx)) return;
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            luaL_error(L, "%s: unexpected %s key (fields are named)", what, luaL_typename(L, -2));
        }
        const char *k = lua_tostring(L, -2);
        int known = 0;
        for (int i = 0; allowed[i] && !known; i++) known = strcmp(k, allowed[i]) == 0;
        if (!known) {
            luaL_error(L, "%s: unknown field '%s'%s", what, k, suggestion(L, k, allowed));
        }
    }
}
