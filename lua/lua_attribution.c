/* Lua bindings of the seed method: the refusal gradient, latent scores, directions. The model
 * methods below are listed in the Model's method table (lua_model.c, model_methods.h); the SAE
 * is upstream.Sae (lua_sae.c).
 *
 *   model:gradient(ids, opts)                  -> Tensor(T, d), R
 *        opts = {source = l, target = L, direction = vec, positions = {..}}
 *   model:attribute(ids, sae, opts)            -> {scores = Tensor(d_sae), rg = Tensor(T, d_sae),
 *                                                  acts = Tensor|nil, grad = Tensor(T, d), R = number,
 *                                                  include = {bool...}}
 *        opts as gradient plus score = "gradient"|"cosine"|"activation", include_bos = false,
 *        score_positions = {token indices, negative from the end} (S_k averages over these only)
 *   model:attribute_all({{ids, sae, opts}, ...}[, progress = fn(done, total)]) -> {result, ...}
 *        model:attribute for each, as work units over the job's ranks (core/dist/dist.h); every
 *        rank gets every result, with one process's bits
 *   upstream.rank(scores, k[, "top"|"bottom"]) -> {{latent = k0, score = s}, ...} (0-based latents)
 *   model:directions(harmful, harmless[, {positions = 5, batch = 8, progress = fn(done, total)}])  (lists of id lists;
 *        progress is called after each batch of each set, harmful first)
 *                                              -> Tensor(n_pos, n_layers, d)
 *   upstream.load_direction(spec, d[, pos, layer]) -> Tensor(d)
 *   upstream.normalize(vec)                    -> Tensor(d) (unit), norm
 *   upstream.prompts(path)                     -> {strings}
 * Misuse raises with luaL_argerror; failures raise with the core's message. */
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "engine/model.h"
#include "formats/prompts.h"
#include "method/attribution.h"
#include "method/direction.h"
#include "model_methods.h"
#include "sae/sae.h"

/* Reads {source, target, direction, positions} from the options table at idx; the direction and
 * positions are Lua-owned blocks pushed on the stack, valid while the caller's frame lives. */
typedef struct grad_opts {
    int source;
    up_objective obj;
} grad_opts;

static void read_grad_opts(lua_State *L, int idx, const up_model *m, grad_opts *o) {
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(o, 0, sizeof *o);
    lua_getfield(L, idx, "target");
    if (lua_isnil(L, -1)) luaL_argerror(L, idx, "opts.target (the objective's layer) is required");
    o->obj.layer = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, idx, "source");
    o->source = (int)luaL_optinteger(L, -1, o->obj.layer - 1);
    lua_pop(L, 2);
    /* Lua-owned copies (left on the stack), so a later raise in the caller leaks nothing. */
    if (lua_getfield(L, idx, "positions") != LUA_TNIL) {
        o->obj.positions = up_lua_read_ints(L, lua_gettop(L), "opts.positions", &o->obj.n_positions);
        if (o->obj.n_positions == 0) luaL_argerror(L, idx, "opts.positions must not be empty");
    }
    lua_getfield(L, idx, "direction");
    if (lua_isnil(L, -1)) luaL_argerror(L, idx, "opts.direction is required");
    o->obj.direction = up_lua_read_vector(L, -1, m->cfg.d_model, "opts.direction");
}

int up_lua_model_gradient(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    static const char *const fields[] = {"source", "target", "direction", "positions", NULL};
    up_lua_check_keys(L, 3, fields, "opts");
    grad_opts o;
    read_grad_opts(L, 3, m, &o);
    int T;
    int32_t *ids = up_lua_check_ids(L, 2, &T);
    int64_t shape[2] = {T, m->cfg.d_model};
    up_lua_tensor *g = up_lua_tensor_new(L, 2, shape);
    double R = 0;
    up_error e = {0};
    up_status st = up_gradient(m, ids, NULL, 1, T, o.source, &o.obj, NULL, NULL, g->data, &R, &e);
    free(ids);
    if (st) return luaL_error(L, "%s", e.msg);
    lua_pushnumber(L, R);
    return 2;
}

/* One attribution's request from (ids at ids_idx, Sae at sae_idx, opts at opts_idx); the
 * direction and positions stay on the stack (Lua-owned), the ids are malloc'd (*ids). */
static void read_attribute_request(lua_State *L, const up_model *m, int ids_idx, int sae_idx, int opts_idx,
                                   up_attribute_request *req, up_sae **sae_out, int32_t **ids) {
    luaL_checkstack(L, 12, "attribute: too many requests");
    up_sae *sae = up_lua_check_sae(L, sae_idx);
    luaL_checktype(L, opts_idx, LUA_TTABLE);
    static const char *const fields[] = {"source", "target", "direction", "positions", "score", "include_bos",
                                         "score_positions", NULL};
    up_lua_check_keys(L, opts_idx, fields, "opts");
    lua_getfield(L, opts_idx, "score");
    const char *kind_name = luaL_optstring(L, -1, "gradient");
    up_score_kind kind;
    if (up_score_kind_parse(kind_name, &kind)) luaL_argerror(L, opts_idx, "score must be gradient, cosine or activation");
    lua_getfield(L, opts_idx, "include_bos");
    int include_bos = lua_toboolean(L, -1);
    lua_pop(L, 2);
    int n_score = 0, *score_pos = NULL;
    if (lua_getfield(L, opts_idx, "score_positions") != LUA_TNIL) {
        score_pos = up_lua_read_ints(L, lua_gettop(L), "opts.score_positions", &n_score);
        if (n_score == 0) luaL_argerror(L, opts_idx, "score_positions must not be empty");
    }
    lua_getfield(L, opts_idx, "source");
    int has_source = !lua_isnil(L, -1);
    lua_pop(L, 1);
    grad_opts o;
    read_grad_opts(L, opts_idx, m, &o);
    if (!has_source && sae->layer >= 0) o.source = sae->layer;
    int T;
    *ids = up_lua_check_ids(L, ids_idx, &T);
    *req = (up_attribute_request){*ids, T, o.source, o.obj, kind, include_bos, NULL, score_pos, n_score};
    *sae_out = sae;
}

/* Pushes an attribution's result table (model:attribute's). */
static void push_attribute_result(lua_State *L, const up_attribute_result *r, int T, int K, int d) {
    lua_newtable(L);
    int64_t sk[1] = {K}, srg[2] = {T, K}, sg[2] = {T, d};
    up_lua_tensor *t = up_lua_tensor_new(L, 1, sk);
    for (int k = 0; k < K; k++) t->data[k] = (float)r->scores[k];
    lua_setfield(L, -2, "scores");
    t = up_lua_tensor_new(L, 2, srg);
    memcpy(t->data, r->rg, (size_t)T * K * sizeof(float));
    lua_setfield(L, -2, "rg");
    if (r->acts) {
        t = up_lua_tensor_new(L, 2, srg);
        memcpy(t->data, r->acts, (size_t)T * K * sizeof(float));
        lua_setfield(L, -2, "acts");
    }
    t = up_lua_tensor_new(L, 2, sg);
    memcpy(t->data, r->grad, (size_t)T * d * sizeof(float));
    lua_setfield(L, -2, "grad");
    lua_pushnumber(L, r->R);
    lua_setfield(L, -2, "R");
    lua_createtable(L, T, 0);
    for (int i = 0; i < T; i++) {
        lua_pushboolean(L, r->include[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "include");
}

int up_lua_model_attribute(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    up_attribute_request req;
    up_sae *sae;
    int32_t *ids;
    read_attribute_request(L, m, 2, 3, 4, &req, &sae, &ids);
    up_attribute_result r;
    up_error e = {0};
    up_status st = up_attribute(m, sae, &req, &r, &e);
    free(ids);
    if (st) return luaL_error(L, "%s", e.msg);
    push_attribute_result(L, &r, req.n_tok, sae->d_sae, m->cfg.d_model);
    up_attribute_result_free(&r);
    return 1;
}

typedef struct attr_all_ctx {
    lua_State *L;
    int fn; /* stack index of the progress function, 0: none */
} attr_all_ctx;

static void attr_all_progress(int done, int total, void *user) {
    attr_all_ctx *c = user;
    if (!c->fn) return;
    lua_pushvalue(c->L, c->fn);
    lua_pushinteger(c->L, done);
    lua_pushinteger(c->L, total);
    /* Protected: an error must not jump out of a work-unit map (dist.h) with ranks waiting. A
     * progress display that fails only stops displaying. */
    if (lua_pcall(c->L, 2, 0, 0) != LUA_OK) {
        lua_pop(c->L, 1);
        c->fn = 0;
    }
}

/* model:attribute_all({{ids, sae, opts}, ...}[, progress]) -> {result, ...}: model:attribute for
 * each, spread over the job's ranks (up_attribute_all). */
int up_lua_model_attribute_all(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
    const int n = (int)luaL_len(L, 2);
    /* Buffers as userdata, so an error raised while reading leaks nothing but ids. */
    up_attribute_request *reqs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *reqs, 0);
    const up_sae **saes = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *saes, 0);
    up_attribute_result *out = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *out, 0);
    int32_t **ids = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ids, 0);
    memset(ids, 0, (size_t)(n ? n : 1) * sizeof *ids);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        const int item = lua_gettop(L);
        if (!lua_istable(L, item)) {
            for (int j = 0; j < i; j++) free(ids[j]);
            return luaL_error(L, "attribute_all: item %d must be {ids, sae, opts}", i + 1);
        }
        lua_geti(L, item, 1), lua_geti(L, item, 2), lua_geti(L, item, 3);
        up_sae *sae;
        read_attribute_request(L, m, item + 1, item + 2, item + 3, &reqs[i], &sae, &ids[i]);
        saes[i] = sae;
    }
    attr_all_ctx ctx = {L, lua_isnoneornil(L, 3) ? 0 : 3};
    up_error e = {0};
    up_status st = up_attribute_all(m, saes, reqs, n, out, attr_all_progress, &ctx, &e);
    for (int i = 0; i < n; i++) free(ids[i]);
    if (st) return luaL_error(L, "%s", e.msg);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        push_attribute_result(L, &out[i], reqs[i].n_tok, saes[i]->d_sae, m->cfg.d_model);
        lua_rawseti(L, -2, i + 1);
        up_attribute_result_free(&out[i]);
    }
    return 1;
}

static int l_rank(lua_State *L) {
    const up_lua_tensor *s = up_lua_tensor_check(L, 1);
    int k = (int)luaL_checkinteger(L, 2);
    const char *side = luaL_optstring(L, 3, "top");
    if (strcmp(side, "top") && strcmp(side, "bottom")) return luaL_argerror(L, 3, "side must be \"top\" or \"bottom\"");
    int n = (int)s->numel;
    double *v = malloc((size_t)n * sizeof *v);
    int *idx = malloc((size_t)n * sizeof *idx);
    for (int i = 0; i < n; i++) v[i] = s->data[i];
    int got = up_attribution_rank(v, n, k, !strcmp(side, "top"), idx);
    lua_createtable(L, got, 0);
    for (int i = 0; i < got; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, idx[i]), lua_setfield(L, -2, "latent");
        lua_pushnumber(L, v[idx[i]]), lua_setfield(L, -2, "score");
        lua_rawseti(L, -2, i + 1);
    }
    free(v), free(idx);
    return 1;
}

/* The Lua progress function of model:directions, called from the core between batches (never
 * from a parallel region). An error in it must not unwind through the core, so it is caught
 * here, and raised once the core has returned. */
typedef struct lua_progress {
    lua_State *L;
    int fn;     /* stack index of the function, 0 for none */
    int failed; /* the function raised; its message is on top of the stack */
} lua_progress;

static void call_lua_progress(int done, int total, void *user) {
    lua_progress *p = user;
    if (p->failed) return;
    lua_pushvalue(p->L, p->fn);
    lua_pushinteger(p->L, done);
    lua_pushinteger(p->L, total);
    if (lua_pcall(p->L, 2, 0, 0) != LUA_OK) p->failed = 1;
}

int up_lua_model_directions(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    int n_pos = 5, batch = 8;
    lua_settop(L, 4);
    lua_progress prog = {L, 0, 0};
    if (lua_istable(L, 4)) {
        static const char *const fields[] = {"positions", "batch", "progress", NULL};
        up_lua_check_keys(L, 4, fields, "opts");
        lua_getfield(L, 4, "positions");
        n_pos = (int)luaL_optinteger(L, -1, 5);
        lua_getfield(L, 4, "batch");
        batch = (int)luaL_optinteger(L, -1, 8);
        lua_pop(L, 2);
        lua_getfield(L, 4, "progress");
        if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
            return luaL_argerror(L, 4, "opts.progress must be a function(done, total)");
        lua_replace(L, 4); /* index 4: the progress function or nil */
        if (lua_isfunction(L, 4)) prog.fn = 4;
    }
    const int32_t **h_ids, **l_ids;
    int *h_lens, *l_lens;
    int n_h = up_lua_read_id_lists(L, 2, NULL, &h_ids, &h_lens);
    int n_l = up_lua_read_id_lists(L, 3, NULL, &l_ids, &l_lens);
    int64_t shape[3] = {n_pos, m->cfg.n_layers, m->cfg.d_model};
    up_lua_tensor *t = up_lua_tensor_new(L, 3, shape);
    up_token_lists th = {(const int32_t *const *)h_ids, h_lens, n_h}, tl = {(const int32_t *const *)l_ids, l_lens, n_l};
    up_error e = {0};
    up_status st = up_direction_candidates(m, &th, &tl, n_pos, batch, t->data, prog.fn ? call_lua_progress : NULL,
                                           &prog, &e);
    if (prog.failed) return lua_error(L);
    if (st) return luaL_error(L, "%s", e.msg);
    return 1;
}

static int l_load_direction(lua_State *L) {
    const char *spec = luaL_checkstring(L, 1);
    int d = (int)luaL_checkinteger(L, 2);
    int has_index = !lua_isnoneornil(L, 3);
    int pos = (int)luaL_optinteger(L, 3, 0), layer = (int)luaL_optinteger(L, 4, 0);
    if (d <= 0) return luaL_argerror(L, 2, "d must be positive");
    int64_t shape[1] = {d};
    up_lua_tensor *t = up_lua_tensor_new(L, 1, shape);
    up_error e = {0};
    if (up_direction_load(spec, d, has_index, pos, layer, t->data, &e)) return luaL_error(L, "%s", e.msg);
    return 1;
}

static int l_normalize(lua_State *L) {
    int n = 0;
    up_lua_tensor *src = luaL_testudata(L, 1, UP_TENSOR_MT);
    if (src) n = (int)src->numel;
    else n = (int)luaL_len(L, 1);
    int64_t shape[1] = {n};
    up_lua_tensor *t = up_lua_tensor_new(L, 1, shape);
    up_lua_read_vector_into(L, 1, n, t->data, "vector");
    lua_pushnumber(L, up_direction_normalize(t->data, n));
    return 2;
}

static int l_prompts(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    up_prompts p;
    up_error e = {0};
    if (up_prompts_load(&p, path, &e)) return luaL_error(L, "%s", e.msg);
    lua_createtable(L, p.n, 0);
    for (int i = 0; i < p.n; i++) {
        lua_pushstring(L, p.items[i]);
        lua_rawseti(L, -2, i + 1);
    }
    up_prompts_free(&p);
    return 1;
}

void up_lua_register_attribution(lua_State *L) {
    static const luaL_Reg fns[] = {{"rank", l_rank},
                                   {"load_direction", l_load_direction},
                                   {"normalize", l_normalize},
                                   {"prompts", l_prompts},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
