/* Lua bindings for training models in memory (the model organism).
 *
 *   upstream.new_model(cfg[, {seed = 1, shared_embedding = 0}])
 *        -> Model with fp32 weights in memory, norms at identity. shared_embedding = s > 0 adds
 *        s·u (u a unit vector drawn from the seed) to every token's embedding row.
 *        cfg: d_model, d_mlp, n_layers, n_heads, n_kv_heads, head_dim, vocab_size (required);
 *        sliding_window (4096), query_pre_attn_scalar (head_dim), attn_softcap (50),
 *        final_softcap (30), rope_theta (10000), rms_norm_eps (1e-6), bos_id (2), eos_id (1),
 *        pad_id (0), max_position_embeddings (8192)
 *   model:train(data, opts)  -> {first_loss, last_loss, heldout_loss, steps_done, resumed_from}
 *        data = {ids = {{...}, ...}, loss_from = {k, ...}} (loss_from 0-based: first predicted
 *        token index); opts: steps, batch, lr, min_lr_frac, weight_decay, beta1, beta2, clip,
 *        warmup_steps, seed, heldout (data), eval_every, checkpoint (path), checkpoint_every,
 *        progress = function(p) ... end (p: step, steps, loss, heldout_loss|nil, lr, grad_norm,
 *        seconds; return true to stop)
 *   model:eval_loss(data[, batch])  -> mean response-token loss
 * The model methods are listed in the Model's method table (lua_model.c, model_methods.h); a
 * trained model is written with model:save(dir) (lua_model.c).
 * Misuse raises with luaL_argerror; failures raise with the core's message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "engine/model.h"
#include "model_methods.h"
#include "train/shared_embedding.h"
#include "train/train.h"

static int req_int(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    if (lua_isnil(L, -1)) luaL_argerror(L, t, lua_pushfstring(L, "cfg.%s is required", k));
    int v = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_new_model(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const cfg_fields[] = {"d_model", "d_mlp", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                                             "vocab_size", "sliding_window", "query_pre_attn_scalar", "attn_softcap",
                                             "final_softcap", "rope_theta", "rms_norm_eps", "bos_id", "eos_id",
                                             "pad_id", "max_position_embeddings", NULL};
    up_lua_check_keys(L, 1, cfg_fields, "cfg");
    up_model_config c = {0};
    c.family = UP_FAMILY_GEMMA2;
    c.d_model = req_int(L, 1, "d_model");
    c.d_mlp = req_int(L, 1, "d_mlp");
    c.n_layers = req_int(L, 1, "n_layers");
    c.n_heads = req_int(L, 1, "n_heads");
    c.n_kv_heads = req_int(L, 1, "n_kv_heads");
    c.head_dim = req_int(L, 1, "head_dim");
    c.vocab_size = req_int(L, 1, "vocab_size");
    c.sliding_window = (int)up_lua_opt_integer(L, 1, "sliding_window", 4096);
    c.query_pre_attn_scalar = (float)up_lua_opt_number(L, 1, "query_pre_attn_scalar", c.head_dim);
    c.attn_softcap = (float)up_lua_opt_number(L, 1, "attn_softcap", 50);
    c.final_softcap = (float)up_lua_opt_number(L, 1, "final_softcap", 30);
    c.rope_theta = (float)up_lua_opt_number(L, 1, "rope_theta", 10000);
    c.rms_norm_eps = (float)up_lua_opt_number(L, 1, "rms_norm_eps", 1e-6);
    c.bos_id = (int)up_lua_opt_integer(L, 1, "bos_id", 2);
    c.eos_id = (int)up_lua_opt_integer(L, 1, "eos_id", 1);
    c.pad_id = (int)up_lua_opt_integer(L, 1, "pad_id", 0);
    c.max_position_embeddings = (int)up_lua_opt_integer(L, 1, "max_position_embeddings", 8192);
    c.activation = UP_ACT_GELU_TANH;
    c.tie_word_embeddings = 1;
    if (c.d_model <= 0 || c.d_mlp <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
        c.n_heads % c.n_kv_heads || c.head_dim <= 0 || c.head_dim % 2 || c.vocab_size <= 0)
        return luaL_argerror(L, 1, "inconsistent shapes (heads must divide by kv heads; head_dim even)");
    uint64_t seed = 1;
    double shared = 0;
    if (lua_istable(L, 2)) {
        static const char *const fields[] = {"seed", "shared_embedding", NULL};
        up_lua_check_keys(L, 2, fields, "opts");
        seed = (uint64_t)up_lua_opt_integer(L, 2, "seed", 1);
        shared = up_lua_opt_number(L, 2, "shared_embedding", 0);
        if (!(shared >= 0)) return luaL_argerror(L, 2, "shared_embedding must be >= 0");
    }
    up_model *m;
    up_error e = {0};
    if (up_model_init_random(&m, &c, UP_DTYPE_F32, seed, &e)) return luaL_error(L, "%s", e.msg);
    float *mats, *norms;
    size_t nm, nn;
    up_model_param_blocks(m, &mats, &nm, &norms, &nn, &e);
    memset(norms, 0, nn * sizeof(float)); /* (1 + w): identity norms at the start */
    if (shared > 0 && up_shared_embedding_add(m, (float)shared, seed, &e)) {
        up_model_free(m);
        return luaL_error(L, "%s", e.msg);
    }
    up_lua_push_model(L, m);
    return 1;
}

/* Reads {ids = {...}, loss_from = {...}} at idx into Lua-owned blocks (pushed: the ids and
 * the loss_from array, so a raise leaks nothing); raises on misuse. */
static up_train_data read_data(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "ids");
    lua_getfield(L, idx, "loss_from");
    if (!lua_istable(L, -2) || !lua_istable(L, -1) || luaL_len(L, -2) != luaL_len(L, -1) || luaL_len(L, -2) == 0)
        luaL_argerror(L, idx, "data needs ids and loss_from lists of the same non-zero length");
    int ids_at = lua_gettop(L) - 1, from_at = lua_gettop(L);
    const int32_t **ids;
    int *lens;
    int n = up_lua_read_id_lists(L, ids_at, "data.ids", &ids, &lens);
    int *from = lua_newuserdatauv(L, (size_t)n * sizeof *from, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, from_at, i + 1);
        from[i] = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    return (up_train_data){(const int32_t *const *)ids, lens, from, n};
}

typedef struct progress_ctx {
    lua_State *L;
    int fn; /* stack index of the Lua function, 0 if none */
    int failed;
} progress_ctx;

static int on_progress(const up_train_progress *p, void *user) {
    progress_ctx *c = user;
    if (!c->fn) return 0;
    lua_State *L = c->L;
    lua_pushvalue(L, c->fn);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, p->step), lua_setfield(L, -2, "step");
    lua_pushinteger(L, p->steps), lua_setfield(L, -2, "steps");
    lua_pushnumber(L, p->loss), lua_setfield(L, -2, "loss");
    if (!isnan(p->heldout_loss)) lua_pushnumber(L, p->heldout_loss), lua_setfield(L, -2, "heldout_loss");
    lua_pushnumber(L, p->lr), lua_setfield(L, -2, "lr");
    lua_pushnumber(L, p->grad_norm), lua_setfield(L, -2, "grad_norm");
    lua_pushnumber(L, p->seconds), lua_setfield(L, -2, "seconds");
    lua_pushinteger(L, p->resumed_from), lua_setfield(L, -2, "resumed_from");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        c->failed = 1; /* the error message stays on the stack for model:train to raise */
        return 1;
    }
    int stop = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return stop;
}

int up_lua_model_train(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    static const char *const fields[] = {"steps", "batch", "seed", "lr", "min_lr_frac", "weight_decay", "beta1", "beta2",
                                         "clip", "warmup_steps", "eval_every", "checkpoint_every", "checkpoint",
                                         "progress", "heldout", NULL};
    up_lua_check_keys(L, 3, fields, "opts");
    up_train_opts o = up_train_opts_default();
    o.steps = (int)up_lua_opt_integer(L, 3, "steps", o.steps);
    o.batch = (int)up_lua_opt_integer(L, 3, "batch", o.batch);
    o.seed = (uint64_t)up_lua_opt_integer(L, 3, "seed", (lua_Integer)o.seed);
    o.lr = (float)up_lua_opt_number(L, 3, "lr", o.lr);
    o.min_lr_frac = (float)up_lua_opt_number(L, 3, "min_lr_frac", o.min_lr_frac);
    o.weight_decay = (float)up_lua_opt_number(L, 3, "weight_decay", o.weight_decay);
    o.beta1 = (float)up_lua_opt_number(L, 3, "beta1", o.beta1);
    o.beta2 = (float)up_lua_opt_number(L, 3, "beta2", o.beta2);
    o.clip = (float)up_lua_opt_number(L, 3, "clip", o.clip);
    o.warmup_steps = (int)up_lua_opt_integer(L, 3, "warmup_steps", o.warmup_steps);
    o.eval_every = (int)up_lua_opt_integer(L, 3, "eval_every", o.eval_every);
    o.checkpoint_every = (int)up_lua_opt_integer(L, 3, "checkpoint_every", o.checkpoint_every);
    lua_getfield(L, 3, "checkpoint"); /* index 4: keeps the string alive */
    o.checkpoint = lua_isnil(L, 4) ? NULL : luaL_checkstring(L, 4);
    lua_getfield(L, 3, "progress"); /* index 5 */
    progress_ctx pc = {L, lua_isfunction(L, 5) ? 5 : 0, 0};
    o.progress = on_progress, o.user = &pc;
    lua_getfield(L, 3, "heldout"); /* index 6 */
    int has_heldout = lua_istable(L, 6);
    up_train_data td = read_data(L, 2), hd = {0};
    if (has_heldout) hd = read_data(L, 6), o.heldout = &hd;
    up_train_report r;
    up_error e = {0};
    up_status st = up_train(m, &td, &o, &r, &e);
    if (pc.failed) return lua_error(L);
    if (st) return luaL_error(L, "%s", e.msg);
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, r.first_loss), lua_setfield(L, -2, "first_loss");
    lua_pushnumber(L, r.last_loss), lua_setfield(L, -2, "last_loss");
    if (!isnan(r.heldout_loss)) lua_pushnumber(L, r.heldout_loss), lua_setfield(L, -2, "heldout_loss");
    lua_pushinteger(L, r.steps_done), lua_setfield(L, -2, "steps_done");
    lua_pushinteger(L, r.resumed_from), lua_setfield(L, -2, "resumed_from");
    return 1;
}

int up_lua_model_eval_loss(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    int batch = (int)luaL_optinteger(L, 3, 16);
    up_train_data td = read_data(L, 2);
    double loss;
    up_error e = {0};
    if (up_train_eval(m, &td, batch, &loss, &e)) return luaL_error(L, "%s", e.msg);
    lua_pushnumber(L, loss);
    return 1;
}

void up_lua_register_train(lua_State *L) {
    lua_pushcfunction(L, l_new_model);
    lua_setfield(L, -2, "new_model");
}
