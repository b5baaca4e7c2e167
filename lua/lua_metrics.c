/* Lua bindings of refusal and coherence metrics (core/method/metrics.h, docs/method.md §2).
 *
 *   upstream.refusal_score(logits, ids)        -> score, p   (logits: Tensor (V) or (T, V): last row)
 *   upstream.substring_refusal(text[, list])   -> matched substring, 1-based index | nil
 *   upstream.repetition(ids[, n = 3])          -> fraction of repeated n-grams
 *   upstream.kl(p_logits, q_logits)            -> KL(P || Q) in nats
 *   model:logprob(prompt_ids, completion_ids)  -> mean log-prob of the completion (NaN if empty;
 *                                                 listed in the Model's method table, lua_model.c)
 *
 * Error rule: misuse raises with luaL_argerror naming the argument; a core failure raises with
 * the core's message. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>

#include "binding.h"
#include "engine/forward.h"
#include "method/metrics.h"
#include "model_methods.h"

static int l_refusal_score(lua_State *L) {
    const up_lua_tensor *t = up_lua_tensor_check(L, 1);
    if (t->ndim < 1) return luaL_argerror(L, 1, "expected logits (V) or (T, V)");
    const int V = (int)t->shape[t->ndim - 1];
    int n;
    const int32_t *ids = (int32_t *)up_lua_read_ints(L, 2, "ids", &n);
    double p;
    const double s = up_metrics_refusal_score(t->data + (t->numel - V), V, ids, n, &p);
    lua_pushnumber(L, s);
    lua_pushnumber(L, p);
    return 2;
}

static int l_substring_refusal(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char **list = NULL;
    int n = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        n = (int)luaL_len(L, 2);
        if (n <= 0) return luaL_argerror(L, 2, "expected a non-empty list of strings");
        list = up_lua_scratch(L, (size_t)n * sizeof *list);
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            if (!(list[i] = lua_tostring(L, -1))) return luaL_argerror(L, 2, "the list must hold strings");
            lua_pop(L, 1); /* the list table keeps the string alive */
        }
    }
    const int k = up_metrics_refusal_match(text, len, list, n);
    if (k < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, list ? list[k] : up_metrics_refusal_substrings[k]);
    lua_pushinteger(L, k + 1);
    return 2;
}

static int l_repetition(lua_State *L) {
    int n;
    const int32_t *ids = (int32_t *)up_lua_read_ints(L, 1, "ids", &n);
    const lua_Integer k = luaL_optinteger(L, 2, 3);
    if (k < 1) return luaL_argerror(L, 2, "n must be >= 1");
    lua_pushnumber(L, up_metrics_repetition(ids, n, (int)k));
    return 1;
}

static int l_kl(lua_State *L) {
    const up_lua_tensor *p = up_lua_tensor_check(L, 1), *q = up_lua_tensor_check(L, 2);
    if (p->numel != q->numel || p->numel <= 0) return luaL_argerror(L, 2, "the two logit vectors differ in length");
    lua_pushnumber(L, up_metrics_kl(p->data, q->data, (int)p->numel));
    return 1;
}

int up_lua_model_logprob(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    int np, nc;
    const int32_t *prompt = (int32_t *)up_lua_read_ints(L, 2, "prompt_ids", &np);
    const int32_t *comp = (int32_t *)up_lua_read_ints(L, 3, "completion_ids", &nc);
    if (np <= 0) return luaL_argerror(L, 2, "the prompt is empty");
    up_state *s = NULL;
    up_error e = {0};
    double lp = NAN;
    up_status st = up_state_init(&s, m, 1, np + (nc > 0 ? nc : 1), &e);
    if (!st) st = up_metrics_logprob(s, &prompt, &np, &comp, &nc, 1, 0, NULL, &lp, &e);
    up_state_free(s);
    if (st) return luaL_error(L, "%s", e.msg);
    lua_pushnumber(L, lp);
    return 1;
}

void up_lua_register_metrics(lua_State *L) {
    static const luaL_Reg fns[] = {{"refusal_score", l_refusal_score},
                                   {"substring_refusal", l_substring_refusal},
                                   {"repetition", l_repetition},
                                   {"kl", l_kl},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
