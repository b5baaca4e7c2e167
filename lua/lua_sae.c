/* upstream.Sae: a sparse autoencoder dictionary (sae/sae.h) loaded from GemmaScope or SAELens
 * files.
 *
 *   upstream.sae(path[, "decoder"|"all" | opts]) -> Sae
 *        opts = {parts = "decoder"|"all", layer = l | "any"}: layer l reads the dictionary at
 *        blocks.{l}.hook_resid_post whatever the file says; "any" forgets the layer, so
 *        attribute takes it at every source layer (one dictionary swept across layers)
 *   sae:info()                 -> {architecture, d_in, d_sae, layer, hook, path, k, has_encoder}
 *   sae:encode(X)              -> Tensor (n, d_sae)   X: Tensor (n, d_in) or (d_in)
 *   sae:pre(X)                 -> Tensor (n, d_sae) of pre-activations
 *   sae:decode(A)              -> Tensor (n, d_in)    A: Tensor (n, d_sae) or (d_sae)
 *   sae:decoder_row(k)         -> Tensor (d_in)       (0-based latent)
 *   sae:stats(X)               -> {fvu, mse, mean_l0}
 *   sae:save_npz(path[, compress])   writes a GemmaScope params.npz
 *   sae:close()                frees now (also __gc / __close; idempotent)
 * Misuse raises with luaL_argerror; failures raise with the core's message. */
#include <limits.h>
#include <string.h>

#include "binding.h"
#include "dist/dist.h"
#include "sae/sae.h"
#include "train/sae_train.h" /* up_sae_pre_activations, up_sae_save_npz */

typedef struct lua_sae {
    up_sae *sae; /* NULL once closed */
} lua_sae;

up_sae *up_lua_check_sae(lua_State *L, int idx) {
    lua_sae *ls = luaL_checkudata(L, idx, UP_SAE_MT);
    if (!ls->sae) luaL_argerror(L, idx, "SAE has been closed");
    return ls->sae;
}

up_sae **up_lua_push_sae_slot(lua_State *L) {
    lua_sae *ls = lua_newuserdatauv(L, sizeof *ls, 0);
    ls->sae = NULL;
    luaL_setmetatable(L, UP_SAE_MT);
    return &ls->sae;
}

static int l_sae(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const char *parts = "all";
    int layer = -2; /* -2: as the file says; -1: any layer */
    if (lua_istable(L, 2)) {
        static const char *const fields[] = {"parts", "layer", NULL};
        up_lua_check_keys(L, 2, fields, "opts");
        if (lua_getfield(L, 2, "parts") != LUA_TNIL) {
            if (!lua_isstring(L, -1)) return luaL_argerror(L, 2, "opts.parts must be \"decoder\" or \"all\"");
            parts = lua_tostring(L, -1);
        }
        int ok;
        if (lua_getfield(L, 2, "layer") == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "any")) {
            layer = -1;
        } else if (!lua_isnil(L, -1)) {
            lua_Integer l = lua_tointegerx(L, -1, &ok);
            if (!ok || l < 0 || l > INT_MAX) return luaL_argerror(L, 2, "opts.layer must be a layer index (>= 0) or \"any\"");
            layer = (int)l;
        }
    } else {
        parts = luaL_optstring(L, 2, "all");
    }
    unsigned mask = !strcmp(parts, "decoder") ? UP_SAE_DECODER : !strcmp(parts, "all") ? UP_SAE_ALL : 0;
    if (!mask) return luaL_argerror(L, 2, "parts must be \"decoder\" or \"all\"");
    up_sae **slot = up_lua_push_sae_slot(L);
    up_error e = {0};
    /* Loaded by every rank together, as models are (lua_model.c). */
    if (up_dist_agree(up_sae_load(slot, path, mask, &e), &e)) return luaL_error(L, "%s", e.msg);
    if (layer == -1) up_sae_forget_hook(*slot);
    else if (layer >= 0 && up_sae_set_hook(*slot, layer, &e)) return luaL_error(L, "%s", e.msg);
    return 1;
}

static int s_gc(lua_State *L) {
    lua_sae *ls = luaL_checkudata(L, 1, UP_SAE_MT);
    up_sae_free(ls->sae);
    ls->sae = NULL;
    return 0;
}

static int s_info(lua_State *L) {
    up_sae *s = up_lua_check_sae(L, 1);
    lua_newtable(L);
    lua_pushstring(L, up_sae_arch_name(s->arch)), lua_setfield(L, -2, "architecture");
    lua_pushinteger(L, s->d_in), lua_setfield(L, -2, "d_in");
    lua_pushinteger(L, s->d_sae), lua_setfield(L, -2, "d_sae");
    lua_pushinteger(L, s->layer), lua_setfield(L, -2, "layer");
    lua_pushstring(L, s->hook), lua_setfield(L, -2, "hook");
    lua_pushstring(L, s->path), lua_setfield(L, -2, "path");
    lua_pushinteger(L, s->k), lua_setfield(L, -2, "k");
    lua_pushboolean(L, s->W_enc != NULL), lua_setfield(L, -2, "has_encoder");
    return 1;
}

/* x: Tensor (n, width) or (width) */
static const up_lua_tensor *check_rows(lua_State *L, int idx, int width, int *n) {
    const up_lua_tensor *t = up_lua_tensor_check(L, idx);
    if (t->ndim < 1 || t->shape[t->ndim - 1] != width)
        luaL_argerror(L, idx, lua_pushfstring(L, "expected a tensor whose last dimension is %d", width));
    *n = (int)(t->numel / width);
    return t;
}

/* encode, pre and decode map rows of one width to rows of the other through one core call. */
typedef up_status (*sae_rows_fn)(const up_sae *, const float *, int, float *, up_error *);

static int map_rows(lua_State *L, sae_rows_fn fn, int from_latents) {
    up_sae *s = up_lua_check_sae(L, 1);
    const int in = from_latents ? s->d_sae : s->d_in, out_width = from_latents ? s->d_in : s->d_sae;
    int n;
    const up_lua_tensor *x = check_rows(L, 2, in, &n);
    int64_t shape[2] = {n, out_width};
    up_lua_tensor *out = up_lua_tensor_new(L, 2, shape);
    up_error e = {0};
    if (fn(s, x->data, n, out->data, &e)) return luaL_error(L, "%s", e.msg);
    return 1;
}

static int s_encode(lua_State *L) { return map_rows(L, up_sae_encode, 0); }
static int s_pre(lua_State *L) { return map_rows(L, up_sae_pre_activations, 0); }
static int s_decode(lua_State *L) { return map_rows(L, up_sae_decode, 1); }

static int s_decoder_row(lua_State *L) {
    up_sae *s = up_lua_check_sae(L, 1);
    lua_Integer k = luaL_checkinteger(L, 2);
    if (k < 0 || k >= s->d_sae) return luaL_argerror(L, 2, "latent index out of range (0-based)");
    if (!s->W_dec) return luaL_error(L, "%s: decoder not loaded", s->path);
    int64_t shape[1] = {s->d_in};
    up_lua_tensor *out = up_lua_tensor_new(L, 1, shape);
    memcpy(out->data, s->W_dec + (size_t)k * s->d_in, (size_t)s->d_in * sizeof(float));
    return 1;
}

static int s_stats(lua_State *L) {
    up_sae *s = up_lua_check_sae(L, 1);
    int n;
    const up_lua_tensor *x = check_rows(L, 2, s->d_in, &n);
    up_sae_metrics mt;
    up_error e = {0};
    if (up_sae_stats(s, x->data, n, &mt, &e)) return luaL_error(L, "%s", e.msg);
    lua_newtable(L);
    lua_pushnumber(L, mt.fvu), lua_setfield(L, -2, "fvu");
    lua_pushnumber(L, mt.mse), lua_setfield(L, -2, "mse");
    lua_pushnumber(L, mt.mean_l0), lua_setfield(L, -2, "mean_l0");
    return 1;
}

static int s_save_npz(lua_State *L) {
    up_sae *s = up_lua_check_sae(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int compress = lua_toboolean(L, 3);
    up_error e = {0};
    if (up_sae_save_npz(s, path, compress ? UP_NPZ_DEFLATED : UP_NPZ_STORED, &e)) return luaL_error(L, "%s", e.msg);
    return 0;
}

void up_lua_register_sae(lua_State *L) {
    static const luaL_Reg methods[] = {{"info", s_info},
                                       {"encode", s_encode},
                                       {"pre", s_pre},
                                       {"decode", s_decode},
                                       {"decoder_row", s_decoder_row},
                                       {"stats", s_stats},
                                       {"save_npz", s_save_npz},
                                       {"close", s_gc},
                                       {NULL, NULL}};
    if (luaL_newmetatable(L, UP_SAE_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, s_gc), lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, s_gc), lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_sae);
    lua_setfield(L, -2, "sae");
}
