/* binding — what the Lua bindings (the module upstream.core) share: the userdata types'
 * metatable names, the parts of the module, and the argument readers.
 *
 * Each userdata type has one binding file that owns it, as liolib owns its file handle: the
 * file creates the type's metatable once, with the type's whole method table, and no other
 * file adds to it. A method whose work belongs to another concept (model:attribute,
 * model:train, model:steer) is implemented in that concept's file and declared in
 * model_methods.h, but listed in the owner's one table.
 *
 * Each part of the module (a binding file) has one register function,
 * `void up_lua_register_NAME(lua_State *L)`: it creates its type's metatable (if it owns one)
 * and adds its functions to the module table on top of the stack, leaving the stack as it found
 * it. lua_host.c calls them all from one list; their order does not matter.
 *
 * Ownership: every userdata owns its core object and frees it in an idempotent __gc/__close
 * (a second call, or a use after :close(), finds NULL). Error rule for every binding: misuse
 * (wrong argument types, out-of-range indices) raises via luaL_argerror; expected failures
 * (missing file, corrupt checkpoint) raise with the core message. */
#ifndef UP_BINDING_H
#define UP_BINDING_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

/* The userdata types, by metatable name (the __name scripts see, and check fields against). */
#define UP_TENSOR_MT "upstream.Tensor"       /* lua_tensor.c: up_lua_tensor */
#define UP_MODEL_MT "upstream.Model"         /* lua_model.c */
#define UP_SAE_MT "upstream.Sae"             /* lua_sae.c */
#define UP_GRID_MT "upstream.Grid"           /* lua_steer.c */
#define UP_TOKENIZER_MT "upstream.tokenizer" /* lua_tokenizer.c: its first field is the
                                                up_tokenizer *, NULL once closed */

/* The parts of upstream.core, one per binding file. */
void up_lua_register_tensor(lua_State *L);      /* Tensor, save/load_safetensors */
void up_lua_register_model(lua_State *L);       /* Model, upstream.model */
void up_lua_register_sae(lua_State *L);         /* Sae, upstream.sae */
void up_lua_register_tokenizer(lua_State *L);   /* tokenizer */
void up_lua_register_attribution(lua_State *L); /* rank, load_direction, normalize, prompts */
void up_lua_register_steer(lua_State *L);       /* Grid, grid */
void up_lua_register_metrics(lua_State *L);     /* refusal_score, substring_refusal, repetition, kl */
void up_lua_register_train(lua_State *L);       /* new_model */
void up_lua_register_sae_train(lua_State *L);   /* train_sae, collect_activations, auroc */
void up_lua_register_bpe(lua_State *L);         /* train_bpe */
void up_lua_register_plot(lua_State *L);        /* the table upstream.plot */
void up_lua_register_json(lua_State *L);        /* json_encode / json_decode / json_read */
void up_lua_register_system(lua_State *L);      /* digests, directories, versions, threads, clock */
void up_lua_register_settings(lua_State *L);    /* settings */
void up_lua_register_dist(lua_State *L);        /* dist (rank, size, hosts), dist_share, dist_agree, dist_stats */

/* upstream.Tensor: a float32 n-d array owned by Lua (one malloc, freed by its __gc/__close). */
typedef struct up_lua_tensor {
    float *data; /* (numel) row-major; NULL once freed */
    int ndim;
    int64_t shape[4];
    int64_t numel;
} up_lua_tensor;

/* Pushes a new zero-filled tensor of the given shape and returns it. */
up_lua_tensor *up_lua_tensor_new(lua_State *L, int ndim, const int64_t *shape);
up_lua_tensor *up_lua_tensor_check(lua_State *L, int idx);

struct up_model;
struct up_sae;
/* The model and SAE at idx; raise when it is something else or has been closed. */
struct up_model *up_lua_check_model(lua_State *L, int idx);
struct up_sae *up_lua_check_sae(lua_State *L, int idx);
/* Pushes a Model userdata that owns m (freed by its __gc/__close). */
void up_lua_push_model(lua_State *L, struct up_model *m);
/* Pushes a Sae userdata that holds no SAE yet and returns its slot: the caller loads into it,
 * and the userdata frees whatever the slot holds, so a raise after the load leaks nothing. */
struct up_sae **up_lua_push_sae_slot(lua_State *L);

/* --- argument readers (lua_args.c) ------------------------------------------------------- */

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
/* A Lua-owned scratch block of bytes pushed on the stack (the collector frees it, so a raise
 * leaks nothing); grows the stack first. */
void *up_lua_scratch(lua_State *L, size_t bytes);

/* Reads a list of token id lists at idx (every list non-empty) into one Lua-owned block,
 * pushed on the stack, so a raise leaks nothing: *ids and *lens point into it and live while
 * it stays on the stack. Returns the number of lists. Misuse raises naming what ("harmful")
 * or, when what is NULL, as a bad argument idx. */
int up_lua_read_id_lists(lua_State *L, int idx, const char *what, const int32_t ***ids, int **lens);

/* Field k of the options table at t: dflt when nil, else its value; anything else raises
 * with luaL_argerror naming k ("k must be an integer" / "k must be a number"). */
lua_Integer up_lua_opt_integer(lua_State *L, int t, const char *k, lua_Integer dflt);
lua_Number up_lua_opt_number(lua_State *L, int t, const char *k, lua_Number dflt);

/* Raises when the table at idx has a string key outside allowed (a NULL-terminated list), or
 * a key that is not a string: "<what>: unknown field 'titel' (did you mean 'title'?)". The
 * suggestion is upstream.util.suggest's (one copy of the rule; none when that module cannot
 * be loaded). Every option table a binding reads is checked this way, so a misspelt field
 * never falls back silently to its default. */
void up_lua_check_keys(lua_State *L, int idx, const char *const *allowed, const char *what);

#endif
