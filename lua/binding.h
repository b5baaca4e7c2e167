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

struct up_model;
struct up_sae;
/* The model and SAE userdata (lua_model.c, lua_attribution.c); raise on misuse. */
struct up_model *up_lua_check_model(lua_State *L, int idx);
struct up_sae *up_lua_check_sae(lua_State *L, int idx);
void up_lua_register_attribution(lua_State *L);
void up_lua_register_train(lua_State *L);
void up_lua_register_settings(lua_State *L);
void up_lua_register_bpe(lua_State *L); /* upstream.train_bpe (lua_bpe.c) */
void up_lua_register_plot(lua_State *L); /* upstream.plot (lua_plot.c) */
void up_lua_register_steer(lua_State *L); /* upstream.grid, metrics, model:steer/select_direction (lua_steer.c) */
/* upstream.train_sae, collect_activations, auroc, best_auroc, Sae:pre/save_npz
 * (lua_sae_train.c); needs upstream.sae registered first. */
void up_lua_register_sae_train(lua_State *L);
void up_lua_register_system(lua_State *L); /* digests, mkdir, versions, threads (lua_system.c) */
void up_lua_register_json(lua_State *L);   /* upstream.json_encode / json_decode (lua_json.c) */
/* Pushes a Model userdata that owns m (freed by its __gc/__close). */
void up_lua_push_model(lua_State *L, struct up_model *m);

/* A vector argument: an upstream.Tensor or a Lua array of numbers, of length n. Misuse raises
 * naming what ("opts.direction: entry 3 is not a number"). _into copies into the caller's dst;
 * up_lua_read_vector copies into a Lua-owned block pushed on the stack (it lives while that
 * slot does, and a raise leaks nothing). */
void up_lua_read_vector_into(lua_State *L, int idx, int n, float *dst, const char *what);
float *up_lua_read_vector(lua_State *L, int idx, int n, const char *what);

/* Reads a Lua array of integers (token ids) at idx into a malloc'd buffer; raises on misuse. */
int32_t *up_lua_check_ids(lua_State *L, int idx, int *n);

/* Reads a Lua array of integers at idx into a Lua-owned block pushed on the stack (it lives
 * while that slot does, and a raise leaks nothing); *n gets its length, which may be 0.
 * Misuse raises naming what ("spec.latents: entry 2 is not an integer"). */
int *up_lua_read_ints(lua_State *L, int idx, const char *what, int *n);

/* Reads a list of token id lists at idx (every list non-empty) into one Lua-owned block,
 * pushed on the stack, so a raise leaks nothing: *ids and *lens point into it and live while
 * it stays on the stack. Returns the number of lists. Misuse raises naming what ("harmful")
 * or, when what is NULL, as a bad argument idx. */
int up_lua_read_id_lists(lua_State *L, int idx, const char *what, const int32_t ***ids, int **lens);

/* Field k of the options table at t: dflt when nil, else its value; anything else raises
 * with luaL_argerror naming k ("k must be an integer" / "k must be a number"). */
lua_Integer up_lua_opt_integer(lua_State *L, int t, const char *k, lua_Integer dflt);
lua_Number up_lua_opt_number(lua_State *L, int t, const char *k, lua_Number dflt);

#endif
