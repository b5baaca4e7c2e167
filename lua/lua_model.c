/* upstream.Model: a checkpoint loaded (upstream.model) or built in memory (upstream.new_model,
 * lua_train.c). This file owns the type and its one method table.
 *
 *   upstream.model(dir)              -> Model
 *   model:config()                   -> {d_model, d_mlp, n_layers, n_heads, n_kv_heads, head_dim,
 *                                        vocab_size, sliding_window, bos_id, eos_id, pad_id,
 *                                        rms_norm_eps, rope_theta, query_pre_attn_scalar,
 *                                        attn_softcap, final_softcap}
 *   model:run(ids, {hooks = {names...}, logits = "last"|"all"|"none"})
 *                                    -> {[name] = Tensor(T, d), logits = Tensor(V) | (T, V)}
 *   model:generate(ids, {max_new_tokens = 32, stop = {ids...}}) -> {new ids}
 *   model:save(dir)                  writes config.json + model.safetensors
 *   model:close()                    frees now (also __gc / __close; idempotent)
 * and, implemented beside their concept (model_methods.h; documented in those files' headers):
 *   model:gradient, :attribute(_all), :directions lua_attribution.c
 *   model:train, :eval_loss                       lua_train.c
 *   model:steer, :logprob, :select_direction      lua_steer.c
 * Misuse raises with luaL_argerror; failures raise with the core's message. */
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "dist/dist.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/hooks.h"
#include "engine/model.h"
#include "model_methods.h"

typedef struct lua_model {
    up_model *m;
} lua_model;

up_model *up_lua_check_model(lua_State *L, int idx) {
    lua_model *lm = luaL_checkudata(L, idx, UP_MODEL_MT);
    if (!lm->m) luaL_argerror(L, idx, "model has been closed");
    return lm->m;
}

static int l_model(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    lua_model *lm = lua_newuserdatauv(L, sizeof *lm, 0);
    lm->m = NULL;
    luaL_setmetatable(L, UP_MODEL_MT);
    up_error e = {0};
    /* Every rank of a job loads the model together (dist.h: a collective), so a rank that
     * cannot (a file missing on its host) fails the job before any work, naming host and path. */
    if (up_dist_agree(up_model_load(&lm->m, dir, &e), &e)) return luaL_error(L, "%s", e.msg);
    return 1;
}

void up_lua_push_model(lua_State *L, up_model *m) {
    lua_model *lm = lua_newuserdatauv(L, sizeof *lm, 0);
    lm->m = m;
    luaL_setmetatable(L, UP_MODEL_MT);
}

static int m_gc(lua_State *L) {
    lua_model *lm = luaL_checkudata(L, 1, UP_MODEL_MT);
    up_model_free(lm->m);
    lm->m = NULL;
    return 0;
}

static int m_config(lua_State *L) {
    const up_model_config *c = &up_lua_check_model(L, 1)->cfg;
    lua_newtable(L);
#define SETI(name, v) (lua_pushinteger(L, (v)), lua_setfield(L, -2, name))
#define SETN(name, v) (lua_pushnumber(L, (v)), lua_setfield(L, -2, name))
    SETI("d_model", c->d_model);
    SETI("d_mlp", c->d_mlp);
    SETI("n_layers", c->n_layers);
    SETI("n_heads", c->n_heads);
    SETI("n_kv_heads", c->n_kv_heads);
    SETI("head_dim", c->head_dim);
    SETI("vocab_size", c->vocab_size);
    SETI("sliding_window", c->sliding_window);
    SETI("bos_id", c->bos_id);
    SETI("eos_id", c->eos_id);
    SETI("pad_id", c->pad_id);
    SETN("rms_norm_eps", c->rms_norm_eps);
    SETN("rope_theta", c->rope_theta);
    SETN("query_pre_attn_scalar", c->query_pre_attn_scalar);
    SETN("attn_softcap", c->attn_softcap);
    SETN("final_softcap", c->final_softcap);
#undef SETI
#undef SETN
    return 1;
}

/* model:run(ids, {hooks = {names...}, logits = "last"|"all"|"none"})
 *   -> table name -> Tensor(T, d), plus .logits (Tensor(V) or (T, V)) */
static int m_run(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    const up_model_config *c = &m->cfg;
    lua_settop(L, 3);
    const char *logits_arg = "last";
    int n_names = 0;
    if (lua_istable(L, 3)) {
        static const char *const fields[] = {"hooks", "logits", NULL};
        up_lua_check_keys(L, 3, fields, "opts");
        lua_getfield(L, 3, "logits");
        if (!lua_isnil(L, -1)) logits_arg = luaL_checkstring(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, 3, "hooks");
        if (lua_istable(L, -1)) n_names = (int)luaL_len(L, -1);
        lua_replace(L, 3);
    } else {
        lua_pushnil(L);
        lua_replace(L, 3);
    }
    up_logits_mode mode = UP_LOGITS_LAST;
    if (!strcmp(logits_arg, "all")) mode = UP_LOGITS_ALL;
    else if (!strcmp(logits_arg, "none")) mode = UP_LOGITS_NONE;
    else if (strcmp(logits_arg, "last") != 0) return luaL_argerror(L, 3, "logits must be last, all or none");
    int T;
    int32_t *ids = up_lua_check_ids(L, 2, &T); /* allocated last: nothing above can leak it */
    lua_newtable(L); /* results, index 4 */
    up_hook *hooks = calloc((size_t)n_names + 1, sizeof *hooks);
    up_capture *caps = calloc((size_t)n_names + 1, sizeof *caps);
    int64_t shape[2] = {T, c->d_model};
    for (int i = 0; i < n_names; i++) {
        lua_geti(L, 3, i + 1);
        const char *name = lua_tostring(L, -1);
        up_hook_point p;
        if (!name || up_hook_point_parse(name, c->n_layers, &p)) {
            free(ids), free(hooks), free(caps);
            return luaL_error(L, "unknown hook point '%s' (model has layers 0..%d)", name ? name : "?", c->n_layers - 1);
        }
        up_lua_tensor *t = up_lua_tensor_new(L, 2, shape);
        caps[i] = (up_capture){t->data, (size_t)T * c->d_model};
        hooks[i] = up_hook_capture(p, &caps[i]);
        lua_setfield(L, 4, name);
        lua_pop(L, 1);
    }
    float *logits = NULL;
    if (mode != UP_LOGITS_NONE) {
        int64_t ls[2] = {T, c->vocab_size};
        up_lua_tensor *t = mode == UP_LOGITS_ALL ? up_lua_tensor_new(L, 2, ls) : up_lua_tensor_new(L, 1, ls + 1);
        logits = t->data;
        lua_setfield(L, 4, "logits");
    }
    up_error e = {0};
    up_state *s = NULL;
    up_hooks hk = {hooks, n_names};
    up_status st = up_state_init(&s, m, 1, T, &e);
    if (!st) st = up_forward(s, ids, NULL, NULL, 1, T, &hk, logits, mode, &e);
    up_state_free(s);
    free(ids), free(hooks), free(caps);
    if (st) return luaL_error(L, "%s", e.msg);
    lua_pushvalue(L, 4);
    return 1;
}

/* model:generate(ids, {max_new_tokens = 32, stop = {ids...}}) -> table of new ids */
static int m_generate(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    static const char *const fields[] = {"max_new_tokens", "stop", NULL};
    up_lua_check_keys(L, 3, fields, "opts"); /* before the ids' malloc: a raise leaks nothing */
    int T;
    int32_t *ids = up_lua_check_ids(L, 2, &T);
    int max_new = 32, n_stop = 0;
    int32_t stops[16];
    stops[n_stop++] = m->cfg.eos_id;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "max_new_tokens");
        if (!lua_isnil(L, -1)) max_new = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, 3, "stop");
        if (lua_istable(L, -1)) {
            n_stop = 0;
            for (lua_Integer i = 1; i <= luaL_len(L, -1) && n_stop < 16; i++) {
                lua_geti(L, -1, i);
                stops[n_stop++] = (int32_t)luaL_checkinteger(L, -1);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    if (max_new < 0) {
        free(ids);
        return luaL_argerror(L, 3, "max_new_tokens must be >= 0");
    }
    int32_t *out = malloc((size_t)(max_new + 1) * sizeof *out);
    int n_out = 0;
    up_error e = {0};
    up_state *s = NULL;
    const int32_t *prompts[1] = {ids};
    up_generate_opts opts = {.max_new_tokens = max_new, .stop_ids = stops, .n_stop = n_stop};
    up_status st = up_state_init(&s, m, 1, T + max_new, &e);
    if (!st) st = up_generate(s, prompts, &T, 1, &opts, out, &n_out, &e);
    up_state_free(s);
    free(ids);
    if (st) {
        free(out);
        return luaL_error(L, "%s", e.msg);
    }
    lua_createtable(L, n_out, 0);
    for (int i = 0; i < n_out; i++) {
        lua_pushinteger(L, out[i]);
        lua_rawseti(L, -2, i + 1);
    }
    free(out);
    return 1;
}

static int m_save(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    up_error e = {0};
    if (up_model_save(m, dir, &e)) return luaL_error(L, "%s", e.msg);
    return 0;
}

void up_lua_register_model(lua_State *L) {
    static const luaL_Reg methods[] = {{"config", m_config},
                                       {"run", m_run},
                                       {"generate", m_generate},
                                       {"save", m_save},
                                       {"close", m_gc},
                                       {"gradient", up_lua_model_gradient},
                                       {"attribute", up_lua_model_attribute},
                                       {"attribute_all", up_lua_model_attribute_all},
                                       {"directions", up_lua_model_directions},
                                       {"train", up_lua_model_train},
                                       {"eval_loss", up_lua_model_eval_loss},
                                       {"steer", up_lua_model_steer},
                                       {"logprob", up_lua_model_logprob},
                                       {"select_direction", up_lua_model_select_direction},
                                       {NULL, NULL}};
    if (luaL_newmetatable(L, UP_MODEL_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, m_gc), lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, m_gc), lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_model);
    lua_setfield(L, -2, "model");
}
