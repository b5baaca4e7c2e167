/* binding — helpers shared by the Lua bindings.
 *
 * upstream.Tensor is a float32 n-d array owned by Lua (one malloc, freed by an
 * idempotent __gc/__close). Error rule for every binding: misuse (wrong
 * argument types, out-of-range indices) raises via luaL_argerror; expected
 * failures (missing file, corrupt checkpoint) raise with the core message. */
#ifndef UP_BINDING_H
#define UP_BINDING_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#define UP_TENSOR_MT "upstream.Tensor"

typedef struct up_lua_tensor {
    float *data; /* (numel) row-major */
    int ndim;
    int64_t shape[4];
    int64_t numel;
} up_lua_tensor;

/* Pushes a new zero-filled tensor of the given shape and returns it. */
up_lua_tensor *up_lua_tensor_new(lua_State *L, int ndim, const int64_t *shape);
up_lua_tensor *up_lua_tensor_check(lua_State *L, int idx);
void up_lua_register_tensor(lua_State *L);

/* Reads a Lua array of integers (token ids) at idx into a malloc'd buffer; raises on misuse. */
int32_t *up_lua_check_ids(lua_State *L, int idx, int *n);

#endif
