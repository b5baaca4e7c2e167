/* upstream.Tensor: float32 arrays handed between core and scripts (the type is in binding.h).
 *
 *   t:shape() -> {n, ...}   t:at(i, ...) -> number   t:set(i, ..., v)   (1-based indices)
 *   t:totable() -> nested tables   t:rows({i, ...}) -> Tensor   #t -> numel   tostring(t)
 *   t:group_reduce(groups, n_groups[, "sum"|"max"]) -> Tensor(n_groups, cols)
 *   t:free()                 frees now (also __gc / __close; idempotent)
 *   upstream.save_safetensors(path, {name = Tensor, ...}[, metadata])
 *   upstream.load_safetensors(path) -> {name = Tensor}, metadata */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "formats/safetensors.h"

up_lua_tensor *up_lua_tensor_new(lua_State *L, int ndim, const int64_t *shape) {
    up_lua_tensor *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, UP_TENSOR_MT);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= t->shape[i] = shape[i];
    t->ndim = ndim;
    t->numel = n;
    t->data = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!t->data) luaL_error(L, "out of memory for a tensor of %lld floats", (long long)n);
    return t;
}

up_lua_tensor *up_lua_tensor_check(lua_State *L, int idx) {
    up_lua_tensor *t = luaL_checkudata(L, idx, UP_TENSOR_MT);
    if (!t->data) luaL_argerror(L, idx, "tensor has been freed");
    return t;
}

static int t_gc(lua_State *L) {
    up_lua_tensor *t = luaL_checkudata(L, 1, UP_TENSOR_MT);
    free(t->data);
    t->data = NULL;
    return 0;
}

static int t_shape(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* Flat offset of 1-based indices at stack positions 2..; raises when out of range. */
static int64_t t_offset(lua_State *L, up_lua_tensor *t) {
    int nargs = lua_gettop(L) - 1;
    if (nargs != t->ndim) luaL_error(L, "tensor has %d dimensions, got %d indices", t->ndim, nargs);
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) {
        lua_Integer k = luaL_checkinteger(L, i + 2);
        if (k < 1 || k > t->shape[i]) luaL_argerror(L, i + 2, "index out of range");
        off = off * t->shape[i] + (k - 1);
    }
    return off;
}

static int t_at(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    lua_pushnumber(L, t->data[t_offset(L, t)]);
    return 1;
}

static int t_set(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    lua_Number v = luaL_checknumber(L, lua_gettop(L));
    lua_pop(L, 1);
    t->data[t_offset(L, t)] = (float)v;
    return 0;
}

/* Nested Lua tables, outermost dimension first. */
static void push_table(lua_State *L, const float *p, const int64_t *shape, int ndim) {
    lua_createtable(L, (int)shape[0], 0);
    int64_t inner = 1;
    for (int i = 1; i < ndim; i++) inner *= shape[i];
    for (int64_t i = 0; i < shape[0]; i++) {
        if (ndim == 1) lua_pushnumber(L, p[i]);
        else push_table(L, p + i * inner, shape + 1, ndim - 1);
        lua_rawseti(L, -2, i + 1);
    }
}

/* t:rows({i, ...}) -> a new Tensor of the listed 1-based rows (first dimension), in order. */
static int t_rows(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (t->ndim < 1) return luaL_argerror(L, 1, "a scalar tensor has no rows");
    lua_Integer n = luaL_len(L, 2);
    int64_t row = t->numel / (t->shape[0] > 0 ? t->shape[0] : 1);
    int64_t shape[4];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = n;
    up_lua_tensor *out = up_lua_tensor_new(L, t->ndim, shape);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        int ok;
        lua_Integer r = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || r < 1 || r > t->shape[0])
            return luaL_argerror(L, 2, lua_pushfstring(L, "row %d is not an integer in [1, %d]", (int)i,
                                                       (int)t->shape[0]));
        memcpy(out->data + (i - 1) * row, t->data + (r - 1) * row, (size_t)row * sizeof(float));
    }
    return 1;
}

/* t:group_reduce(groups, n_groups[, "sum"|"max"]) -> Tensor(n_groups, cols): for a 2-d t
 * (rows, cols), row i goes to group groups[i] (1..n_groups; 0 leaves it out); each group's
 * rows are summed (default) or maxed (-inf for an empty group). Labels latents by the tokens
 * and concepts they fire on without a Lua loop over every activation. */
static int t_group_reduce(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    if (t->ndim != 2) return luaL_argerror(L, 1, "group_reduce needs a 2-d tensor");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n_groups = luaL_checkinteger(L, 3);
    static const char *const ops[] = {"sum", "max", NULL};
    int op = luaL_checkoption(L, 4, "sum", ops);
    const int64_t rows = t->shape[0], cols = t->shape[1];
    if (luaL_len(L, 2) != rows) return luaL_argerror(L, 2, "one group per row");
    if (n_groups < 1) return luaL_argerror(L, 3, "n_groups must be positive");
    int64_t shape[2] = {n_groups, cols};
    up_lua_tensor *out = up_lua_tensor_new(L, 2, shape);
    if (op == 1)
        for (int64_t k = 0; k < out->numel; k++) out->data[k] = -INFINITY;
    for (int64_t i = 0; i < rows; i++) {
        lua_geti(L, 2, i + 1);
        int ok;
        lua_Integer g = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || g < 0 || g > n_groups)
            return luaL_argerror(L, 2, lua_pushfstring(L, "group of row %d is not an integer in [0, %d]", (int)i + 1,
                                                       (int)n_groups));
        if (g == 0) continue;
        float *dst = out->data + (g - 1) * cols;
        const float *src = t->data + i * cols;
        if (op == 0)
            for (int64_t k = 0; k < cols; k++) dst[k] += src[k];
        else
            for (int64_t k = 0; k < cols; k++) dst[k] = src[k] > dst[k] ? src[k] : dst[k];
    }
    return 1;
}

static int t_totable(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    if (t->ndim == 0) lua_pushnumber(L, t->data[0]);
    else push_table(L, t->data, t->shape, t->ndim);
    return 1;
}

static int t_len(lua_State *L) {
    up_lua_tensor *t = up_lua_tensor_check(L, 1);
    lua_pushinteger(L, t->ndim ? t->shape[0] : 1);
    return 1;
}

static int t_tostring(lua_State *L) {
    up_lua_tensor *t = luaL_checkudata(L, 1, UP_TENSOR_MT);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "Tensor(");
    for (int i = 0; i < t->ndim; i++) {
        lua_pushfstring(L, "%s%I", i ? ", " : "", (lua_Integer)t->shape[i]);
        luaL_addvalue(&b);
    }
    luaL_addstring(&b, t->data ? ")" : ", freed)");
    luaL_pushresult(&b);
    return 1;
}

/* Orders (key, value) pairs of strings by key. */
static int compare_first_string(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* upstream.save_safetensors(path, {name = tensor, ...}[, {key = value} metadata]); metadata is
 * written in key order. */
static int l_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    up_error e = {0};
    up_safetensors_writer *w = NULL;
    if (up_safetensors_writer_open(&w, path, &e)) return luaL_error(L, "%s", e.msg);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            up_safetensors_writer_abort(w);
            return luaL_argerror(L, 2, "tensor names must be strings");
        }
        up_lua_tensor *t = luaL_testudata(L, -1, UP_TENSOR_MT);
        if (!t || !t->data) {
            up_safetensors_writer_abort(w);
            return luaL_argerror(L, 2, "values must be live upstream tensors");
        }
        if (up_safetensors_writer_add(w, lua_tostring(L, -2), UP_DTYPE_F32, t->ndim, t->shape, t->data, &e)) {
            up_safetensors_writer_abort(w);
            return luaL_error(L, "%s", e.msg);
        }
        lua_pop(L, 1);
    }
    if (lua_istable(L, 3)) {
        /* Metadata in key order, so the same table always gives the same file (pairs() order
         * changes from run to run). The key and value strings live in table 4 until written. */
        lua_newtable(L); /* 4: {i = {key string, value string}} */
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_createtable(L, 2, 0);
            luaL_tolstring(L, -3, NULL);
            lua_rawseti(L, -2, 1);
            luaL_tolstring(L, -2, NULL);
            lua_rawseti(L, -2, 2);
            lua_rawseti(L, 4, ++n);
            lua_pop(L, 1);
        }
        const char **keys = malloc((size_t)(n ? n : 1) * 2 * sizeof *keys);
        if (!keys) {
            up_safetensors_writer_abort(w);
            return luaL_error(L, "save_safetensors: out of memory");
        }
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, 4, i + 1);
            lua_rawgeti(L, -1, 1);
            keys[2 * i] = lua_tostring(L, -1);
            lua_rawgeti(L, -2, 2);
            keys[2 * i + 1] = lua_tostring(L, -1);
            lua_pop(L, 3); /* the strings stay alive in table 4 */
        }
        qsort(keys, (size_t)n, 2 * sizeof *keys, compare_first_string);
        for (int i = 0; i < n; i++) {
            if (up_safetensors_writer_metadata(w, keys[2 * i], keys[2 * i + 1], &e)) {
                free(keys);
                up_safetensors_writer_abort(w);
                return luaL_error(L, "%s", e.msg);
            }
        }
        free(keys);
    }
    if (up_safetensors_writer_close(w, &e)) return luaL_error(L, "%s", e.msg);
    return 0;
}

/* upstream.load_safetensors(path) -> {name = Tensor}, {metadata key = value}; integer tensors
 * become float tensors (exact below 2^24, ample for token ids). */
static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    up_safetensors *st = NULL;
    up_error e = {0};
    if (up_safetensors_open_file(&st, path, &e)) return luaL_error(L, "%s", e.msg);
    lua_newtable(L);
    for (int i = 0; i < up_safetensors_count(st); i++) {
        const char *name = up_safetensors_name(st, i);
        up_tensor t;
        if (up_safetensors_find(st, name, &t, &e)) continue; /* dtypes we cannot represent */
        if (t.ndim > 4) continue;
        up_lua_tensor *out = up_lua_tensor_new(L, t.ndim, t.shape);
        if (t.dtype == UP_DTYPE_I32)
            for (int64_t k = 0; k < out->numel; k++) out->data[k] = (float)((const int32_t *)t.data)[k];
        else if (t.dtype == UP_DTYPE_I64)
            for (int64_t k = 0; k < out->numel; k++) out->data[k] = (float)((const int64_t *)t.data)[k];
        else up_convert_to_f32(out->data, t.data, t.dtype, (size_t)out->numel);
        lua_setfield(L, -2, name);
    }
    lua_newtable(L);
    const char *key;
    for (int i = 0; (key = up_safetensors_metadata_key(st, i)); i++) {
        lua_pushstring(L, up_safetensors_metadata(st, key));
        lua_setfield(L, -2, key);
    }
    up_safetensors_close(st);
    return 2;
}

void up_lua_register_tensor(lua_State *L) {
    static const luaL_Reg methods[] = {{"shape", t_shape}, {"at", t_at}, {"set", t_set},
                                       {"totable", t_totable}, {"rows", t_rows}, {"group_reduce", t_group_reduce}, {"free", t_gc}, {NULL, NULL}};
    if (luaL_newmetatable(L, UP_TENSOR_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, t_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, t_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, t_len);
        lua_setfield(L, -2, "__len");
        lua_pushcfunction(L, t_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_save);
    lua_setfield(L, -2, "save_safetensors");
    lua_pushcfunction(L, l_load);
    lua_setfield(L, -2, "load_safetensors");
}
