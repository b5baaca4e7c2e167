/* Lua bindings for steering grids and direction selection (core/method: grid, steer, select);
 * the refusal metrics are in lua_metrics.c.
 *
 *   upstream.grid(spec)                        -> Grid
 *     spec.model          Model (required)
 *     spec.prompts        {ids, ...} or {{ids = {...}, label = "..."}, ...}   (required)
 *     spec.refusal_ids    {id, ...} (required; Gemma: the id of "I")
 *     -- interventions; "none" (unsteered) is always intervention 1. Any mix of:
 *     spec.sae, spec.latents = {k, ...} (0-based), spec.alphas = {a, ...}
 *                         decoder-row sweep at the SAE's hook (or blocks.{spec.layer}.hook_resid_post)
 *     spec.vectors = {vec, ...}, spec.names = {"...", ...}, spec.alphas, and where: spec.point =
 *                         "blocks.6.hook_resid_pre" (a named hook: no doubt which side of a block;
 *                         it wins over layer for the vectors) or spec.layer = l
 *                         (blocks.{l}.hook_resid_post)
 *                         vector sweep (vec: Tensor or table of d numbers, used as given)
 *     spec.where          "all" (default) | "prompt" | "generated": positions of the sweeps
 *     spec.interventions  {{label = "...", latent = k, alpha = a, items = {item, ...}}, ...}, item:
 *                           {kind = "add", point = "blocks.3.hook_resid_pre" | layer = l (resid_post),
 *                            vector = vec, alpha = a, where = "all"|"prompt"|"generated"|{pos, ...}}
 *                           {kind = "ablate", vector = r}
 *                           {kind = "clamp", sae = Sae, latent = k, value = v, where = ...}
 *     -- decoding, metrics, cache
 *     spec.max_new_tokens 0 (scoring only, default) | N | {0, 32, ...}
 *     spec.objective      {layer = L, direction = vec, positions = {...}}: R, dR and predicted_dR
 *     spec.gradients      {{prompt = i, layer = l, grad = Tensor(T, d), objective = {...}}, ...}:
 *                         a gradient the caller holds (an attribution's grad and objective) at
 *                         blocks.{l}.hook_resid_post for prompt i; used for predicted_dR instead
 *                         of a backward pass when its objective is exactly spec.objective (else
 *                         ignored: grid.h's up_grid_set_gradient)
 *     spec.stop           {id, ...} (default: the model's eos)
 *     spec.tokenizer      Tokenizer or path: completions decoded, substring judge applied
 *     spec.substrings     {"I'm sorry", ...} (default: the 12 of docs/method.md §2)
 *     spec.cache          directory of per-cell files (resumable); spec.identity = {name = value}
 *                         adds to every key (a model built in memory needs identity.model)
 *     spec.batch = 16, spec.coherence = true, spec.rep_n = 3, spec.predict = true
 *     spec.progress       true: a bar on stderr (a line every 5 s when stderr is not a terminal);
 *                         function(p) ... end: p = {done, total, cached, computed, batch,
 *                         n_batches, step, steps, elapsed, rate, eta, line}; return true or
 *                         "stop" to stop (finished cells stay cached)
 *   grid:run()          -> rows, or nil, message when the progress function stopped it.
 *                          rows[i] = {prompt, prompt_label, intervention, label, latent, alpha,
 *                          max_new_tokens, score, p_refusal, dscore, R, dR, predicted_dR, tokens,
 *                          text, refused, refusal_match, logprob, repetition, cached, key}
 *                          (prompt and intervention 1-based; unmeasured numbers are nil)
 *   grid:rows()         -> the rows of the last run
 *   grid:totals()       -> {cells, unique, cached, computed, batches, seconds}
 *   grid:set_prediction(prompt, intervention, value)   fills predicted_dR (1-based indices)
 *   grid:close()        frees now (also __close / __gc; idempotent)
 *   model:steer(prompts, spec) -> rows   (upstream.grid with spec.model and spec.prompts, run once)
 *
 *   model:select_direction(candidates, harmful, harmless, opts)
 *        candidates Tensor(n_pos, n_layers, d) from model:directions; harmful/harmless lists of
 *        id lists; opts = {refusal_ids = {...} (required), max_layer_frac = 0.8, max_kl = 0.1,
 *        min_induce = 0, batch = 8, layers = {l, ...}, positions = {-1, ...} (score only these;
 *        default all), mode = "lazy" | "full" (select.h: lazy never runs the layers the cut
 *        drops and stops induce/KL at the first candidate, in bypass order, that passes; full
 *        scores everything, the same winner), skip_late_layers = false (full: true does not
 *        score layers max_layer_frac drops), progress = function(p) after each candidate a
 *        pass finishes, p = {pass = "all" | "bypass" | "filters", done, total, pos, layer,
 *        passed, n_passed, batch} (select.h's up_select_progress; an error it raises stops the
 *        selection and is raised again)}
 *        -> {best = {index, pos, layer} | nil, direction = Tensor(d) | nil, n_kept, mode, batch,
 *            base_harmful, base_harmless, scores = {{pos, layer, bypass, induce, kl, dropped}}}
 *        (pos counts from the end, -1 = last token; dropped = "kept" or "layer,kl,..."; a
 *        candidate never run has no bypass, induce or kl and says "unscored"; one whose induce
 *        and kl lazy mode did not need has bypass only and says "bypass_only")
 *
 * The model methods are listed in the Model's method table (lua_model.c, model_methods.h).
 *
 * Error rule: misuse (a wrong type, a missing spec field, an index out of range) raises with
 * luaL_argerror naming the field; failures (unreadable cache, a closed model, a core error)
 * raise with the core's message. Only a stop asked for by the progress function comes back as
 * nil, message, since a script that stops a grid expects to resume it. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "binding.h"
#include "dist/dist.h"
#include "method/grid.h"
#include "method/metrics.h"
#include "engine/model.h"
#include "method/select.h"
#include "model_methods.h"
#include "text/tokenizer.h"

typedef struct lua_grid {
    up_grid *g;
    int32_t refusal[64], stop[64];
    int n_refusal, n_stop;
    char **subs; /* (n_subs) malloc'd */
    int n_subs;
    char *cache;
    int batch, coherence, rep_n, predict;
    int progress;         /* 0 none, 1 the built-in bar, 2 a function (in the uservalue) */
    up_tokenizer *own_tok; /* loaded from a path */
} lua_grid;

/* ---- small readers that leave nothing to leak when they raise ---------------------------- */


/* The grid takes token ids and latent indices as int32_t and positions as int: one reader. */
_Static_assert(sizeof(int) == sizeof(int32_t), "int and int32_t must agree");

/* Lists of id lists in one Lua-owned block (pushed); misuse raises naming what. */
static up_token_lists read_lists(lua_State *L, int idx, const char *what) {
    const int32_t **ids;
    int *lens;
    int n = up_lua_read_id_lists(L, idx, what, &ids, &lens);
    return (up_token_lists){(const int32_t *const *)ids, lens, n};
}

static int field(lua_State *L, int t, const char *k) { return lua_getfield(L, t, k); }

static int bool_field(lua_State *L, int t, const char *k, int dflt) {
    int type = field(L, t, k), v = type == LUA_TNIL ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* ---- the grid userdata --------------------------------------------------------------------- */

static lua_grid *check_grid(lua_State *L, int idx) {
    lua_grid *lg = luaL_checkudata(L, idx, UP_GRID_MT);
    if (!lg->g) luaL_argerror(L, idx, "grid has been closed");
    return lg;
}

static int g_gc(lua_State *L) {
    lua_grid *lg = luaL_checkudata(L, 1, UP_GRID_MT);
    up_grid_free(lg->g);
    lg->g = NULL;
    for (int i = 0; i < lg->n_subs; i++) free(lg->subs[i]);
    free(lg->subs), free(lg->cache);
    lg->subs = NULL, lg->cache = NULL, lg->n_subs = 0;
    up_tokenizer_free(lg->own_tok);
    lg->own_tok = NULL;
    return 0;
}

static up_steer_where parse_where(lua_State *L, int t, const char *what, int **list, int *n_list) {
    up_steer_where w = UP_STEER_POS_ALL;
    int type = field(L, t, "where");
    *list = NULL, *n_list = 0;
    if (type == LUA_TTABLE) {
        w = UP_STEER_POS_LIST;
        *list = up_lua_read_ints(L, lua_gettop(L), what, n_list);
        lua_remove(L, -2); /* keep the scratch block, drop the table */
        return w;
    }
    if (type != LUA_TNIL && (type != LUA_TSTRING || up_steer_where_parse(lua_tostring(L, -1), &w) || w == UP_STEER_POS_LIST))
        luaL_error(L, "%s: where must be \"all\", \"prompt\", \"generated\" or a list of positions", what);
    lua_pop(L, 1);
    return w;
}

/* One intervention table at idx (stack index of the table); items go into scratch. */
static void add_intervention(lua_State *L, int idx, int n, lua_grid *lg, const up_model *m, int refs) {
    const int d = m->cfg.d_model, top = lua_gettop(L);
    char what[96];
    snprintf(what, sizeof what, "spec.interventions[%d]", n);
    luaL_checktype(L, idx, LUA_TTABLE);
    static const char *const fields[] = {"label", "latent", "alpha", "items", NULL};
    up_lua_check_keys(L, idx, fields, what);
    field(L, idx, "items");
    const int items_t = lua_gettop(L);
    if (!lua_istable(L, items_t)) luaL_error(L, "%s.items must be a list of items", what);
    const int n_items = (int)luaL_len(L, items_t);
    up_steer *items = up_lua_scratch(L, (size_t)n_items * sizeof *items);
    for (int j = 0; j < n_items; j++) {
        char iw[128];
        snprintf(iw, sizeof iw, "%s.items[%d]", what, j + 1);
        lua_geti(L, items_t, j + 1);
        const int it = lua_gettop(L);
        if (!lua_istable(L, it)) luaL_error(L, "%s must be a table", iw);
        static const char *const item_fields[] = {"kind", "sae", "latent", "value", "vector", "layer", "point",
                                                  "alpha", "where", NULL};
        up_lua_check_keys(L, it, item_fields, iw);
        field(L, it, "kind");
        up_steer_kind kind;
        if (!lua_isstring(L, -1) || up_steer_kind_parse(lua_tostring(L, -1), &kind))
            luaL_error(L, "%s.kind must be \"add\", \"ablate\" or \"clamp\"", iw);
        lua_pop(L, 1);
        up_steer s;
        memset(&s, 0, sizeof s);
        if (kind == UP_STEER_CLAMP) {
            field(L, it, "sae");
            up_sae *sae = luaL_testudata(L, -1, UP_SAE_MT) ? up_lua_check_sae(L, lua_gettop(L)) : NULL;
            if (!sae) luaL_error(L, "%s.sae must be an SAE", iw);
            /* Keep the SAE alive as long as the grid borrows it. */
            lua_rawseti(L, refs, (lua_Integer)luaL_len(L, refs) + 1);
            s = up_steer_clamp(sae, (int)up_lua_opt_integer(L, it, "latent", -1),
                               (float)up_lua_opt_number(L, it, "value", NAN));
        } else {
            float *v = up_lua_scratch(L, (size_t)d * sizeof *v);
            field(L, it, "vector");
            if (lua_isnil(L, -1)) luaL_error(L, "%s.vector is required", iw);
            up_lua_read_vector_into(L, lua_gettop(L), d, v, iw);
            lua_pop(L, 1);
            if (kind == UP_STEER_ABLATE) {
                s = up_steer_ablate(v);
            } else {
                up_hook_point p = {UP_HOOK_RESID_POST, (int)up_lua_opt_integer(L, it, "layer", -1)};
                if (field(L, it, "point") == LUA_TSTRING &&
                    up_hook_point_parse(lua_tostring(L, -1), m->cfg.n_layers, &p))
                    luaL_error(L, "%s.point '%s' is not a hook point of this model", iw, lua_tostring(L, -1));
                lua_pop(L, 1);
                s = up_steer_add(p, v, (float)up_lua_opt_number(L, it, "alpha", 1));
            }
        }
        if (kind != UP_STEER_ABLATE) s.where = parse_where(L, it, iw, (int **)&s.positions, &s.n_positions);
        items[j] = s;
        /* the scratch blocks stay on the stack until this intervention is added */
    }
    field(L, idx, "label");
    const char *label = lua_tostring(L, -1);
    up_grid_intervention iv = {label, items, n_items, (int)up_lua_opt_integer(L, idx, "latent", -1),
                               (float)up_lua_opt_number(L, idx, "alpha", NAN)};
    up_error e = {0};
    if (up_grid_add_intervention(lg->g, &iv, &e) < 0) luaL_error(L, "%s", e.msg);
    lua_settop(L, top);
}

/* {layer =, direction =, positions =} at idx (a table) into o; the direction and positions are
 * Lua-owned blocks left on the stack. `what` names the table in errors. */
static void read_objective(lua_State *L, int idx, int d, const char *what, up_objective *o) {
    char name[96];
    static const char *const fields[] = {"layer", "direction", "positions", NULL};
    up_lua_check_keys(L, idx, fields, what);
    o->layer = (int)up_lua_opt_integer(L, idx, "layer", -1);
    float *r = up_lua_scratch(L, (size_t)d * sizeof *r);
    snprintf(name, sizeof name, "%s.direction", what);
    if (field(L, idx, "direction") == LUA_TNIL) luaL_argerror(L, 1, lua_pushfstring(L, "%s is required", name));
    up_lua_read_vector_into(L, lua_gettop(L), d, r, name);
    o->direction = r;
    o->positions = NULL, o->n_positions = 0;
    snprintf(name, sizeof name, "%s.positions", what);
    if (field(L, idx, "positions") != LUA_TNIL) o->positions = up_lua_read_ints(L, lua_gettop(L), name, &o->n_positions);
}

static float *read_alphas(lua_State *L, int spec, int *n) {
    field(L, spec, "alphas");
    if (!lua_istable(L, -1)) luaL_argerror(L, 1, "spec.alphas (a list of coefficients) is required with latents or vectors");
    *n = (int)luaL_len(L, -1);
    if (*n <= 0) luaL_argerror(L, 1, "spec.alphas is empty");
    float *a = up_lua_scratch(L, (size_t)*n * sizeof *a);
    for (int i = 0; i < *n; i++) {
        lua_geti(L, -2, i + 1);
        int ok;
        a[i] = (float)lua_tonumberx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok) luaL_argerror(L, 1, "spec.alphas must hold numbers");
    }
    lua_remove(L, -2);
    return a;
}

/* upstream.grid(spec) */
static int l_grid(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    static const char *const fields[] = {"model", "prompts", "refusal_ids", "sae", "latents", "alphas", "vectors",
                                         "names", "layer", "point", "where", "interventions", "max_new_tokens", "objective",
                                         "gradients", "stop", "tokenizer", "substrings", "cache", "identity",
                                         "batch", "coherence", "rep_n", "predict", "progress", NULL};
    up_lua_check_keys(L, 1, fields, "spec");
    field(L, 1, "model");
    if (!luaL_testudata(L, 2, UP_MODEL_MT)) return luaL_argerror(L, 1, "spec.model must be a Model");
    up_model *m = up_lua_check_model(L, 2);
    const int d = m->cfg.d_model;
    lua_grid *lg = lua_newuserdatauv(L, sizeof *lg, 1); /* 3 */
    memset(lg, 0, sizeof *lg);
    luaL_setmetatable(L, UP_GRID_MT);
    lua_createtable(L, 0, 4); /* 4: refs {model, tokenizer, progress, [i] = SAEs} */
    lua_pushvalue(L, 2), lua_setfield(L, 4, "model");
    lua_pushvalue(L, 4), lua_setiuservalue(L, 3, 1);
    up_error e = {0};
    if (up_grid_init(&lg->g, m, &e)) return luaL_error(L, "%s", e.msg);

    /* prompts */
    field(L, 1, "prompts");
    if (!lua_istable(L, -1) || luaL_len(L, -1) == 0) return luaL_argerror(L, 1, "spec.prompts must be a non-empty list");
    const int pt = lua_gettop(L);
    for (lua_Integer i = 1; i <= luaL_len(L, pt); i++) {
        char what[64];
        snprintf(what, sizeof what, "spec.prompts[%d]", (int)i);
        lua_geti(L, pt, i);
        const int entry = lua_gettop(L);
        if (!lua_istable(L, entry)) return luaL_argerror(L, 1, lua_pushfstring(L, "%s must be a list of ids", what));
        const char *label = NULL;
        int ids_at = entry;
        if (field(L, entry, "ids") != LUA_TNIL) {
            ids_at = lua_gettop(L);
            field(L, entry, "label");
            label = lua_tostring(L, -1);
        }
        int n;
        int32_t *ids = (int32_t *)up_lua_read_ints(L, ids_at, what, &n);
        if (up_grid_add_prompt(lg->g, label, ids, n, &e) < 0) return luaL_error(L, "%s: %s", what, e.msg);
        lua_settop(L, pt);
    }
    lua_settop(L, 4);

    /* sweeps, then explicit interventions */
    up_steer_where where = UP_STEER_POS_ALL;
    if (field(L, 1, "where") != LUA_TNIL &&
        (!lua_isstring(L, -1) || up_steer_where_parse(lua_tostring(L, -1), &where) || where == UP_STEER_POS_LIST))
        return luaL_argerror(L, 1, "spec.where must be \"all\", \"prompt\" or \"generated\"");
    lua_settop(L, 4);
    const lua_Integer layer = up_lua_opt_integer(L, 1, "layer", -1);
    if (field(L, 1, "latents") != LUA_TNIL) {
        int n_lat, n_alpha;
        int32_t *lat = (int32_t *)up_lua_read_ints(L, 5, "spec.latents", &n_lat);
        float *alphas = read_alphas(L, 1, &n_alpha);
        field(L, 1, "sae");
        if (!luaL_testudata(L, -1, UP_SAE_MT)) return luaL_argerror(L, 1, "spec.latents needs spec.sae");
        up_sae *sae = up_lua_check_sae(L, lua_gettop(L));
        lua_rawseti(L, 4, (lua_Integer)luaL_len(L, 4) + 1);
        up_status st;
        if (layer < 0) {
            st = up_grid_add_latent_sweep(lg->g, sae, (const int *)lat, n_lat, alphas, n_alpha, where, &e);
        } else {
            if (!sae->W_dec || sae->d_in != d) return luaL_error(L, "spec.sae: no decoder of width %d", d);
            float *rows = up_lua_scratch(L, (size_t)n_lat * d * sizeof *rows);
            for (int i = 0; i < n_lat; i++) {
                if (lat[i] < 0 || lat[i] >= sae->d_sae)
                    return luaL_argerror(L, 1, lua_pushfstring(L, "spec.latents[%d] = %d is past the SAE's width: %d latents, "
                                                                  "indices 0-%d (0-based)", i + 1, (int)lat[i],
                                                               sae->d_sae, sae->d_sae - 1));
                memcpy(rows + (size_t)i * d, sae->W_dec + (size_t)lat[i] * d, (size_t)d * sizeof *rows);
            }
            st = up_grid_add_sweep(lg->g, (up_hook_point){UP_HOOK_RESID_POST, (int)layer}, where, rows, NULL,
                                   (const int *)lat, n_lat, alphas, n_alpha, &e);
        }
        if (st) return luaL_error(L, "%s", e.msg);
    }
    lua_settop(L, 4);
    if (field(L, 1, "vectors") != LUA_TNIL) {
        if (!lua_istable(L, 5) || luaL_testudata(L, 5, UP_TENSOR_MT)) return luaL_argerror(L, 1, "spec.vectors must be a list of vectors");
        up_hook_point at = {UP_HOOK_RESID_POST, (int)layer};
        if (field(L, 1, "point") != LUA_TNIL) {
            if (!lua_isstring(L, -1) || up_hook_point_parse(lua_tostring(L, -1), m->cfg.n_layers, &at))
                return luaL_argerror(L, 1, lua_pushfstring(L, "spec.point '%s' is not a hook point of this model (%d layers)",
                                                           luaL_tolstring(L, -1, NULL), m->cfg.n_layers));
        } else if (layer < 0) {
            return luaL_argerror(L, 1, "spec.vectors needs spec.point (\"blocks.N.hook_resid_pre\" or _post) or spec.layer "
                                       "(blocks.{layer}.hook_resid_post)");
        }
        lua_pop(L, 1);
        const int n_vec = (int)luaL_len(L, 5);
        float *vecs = up_lua_scratch(L, (size_t)n_vec * d * sizeof *vecs);
        const char **names = up_lua_scratch(L, (size_t)n_vec * sizeof *names);
        field(L, 1, "names");
        const int names_t = lua_gettop(L);
        for (int i = 0; i < n_vec; i++) {
            lua_geti(L, 5, i + 1);
            up_lua_read_vector_into(L, lua_gettop(L), d, vecs + (size_t)i * d, "spec.vectors[i]");
            lua_pop(L, 1);
            names[i] = NULL;
            if (lua_istable(L, names_t)) {
                lua_geti(L, names_t, i + 1);
                names[i] = lua_tostring(L, -1); /* the names table keeps the string alive */
                lua_pop(L, 1);
            }
        }
        int n_alpha;
        float *alphas = read_alphas(L, 1, &n_alpha);
        if (up_grid_add_sweep(lg->g, at, where, vecs, names, NULL, n_vec,
                              alphas, n_alpha, &e))
            return luaL_error(L, "%s", e.msg);
    }
    lua_settop(L, 4);
    if (field(L, 1, "interventions") != LUA_TNIL) {
        if (!lua_istable(L, 5)) return luaL_argerror(L, 1, "spec.interventions must be a list");
        for (lua_Integer i = 1; i <= luaL_len(L, 5); i++) {
            lua_geti(L, 5, i);
            add_intervention(L, lua_gettop(L), (int)i, lg, m, 4);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 4);

    /* decodings and objective */
    int type = field(L, 1, "max_new_tokens");
    if (type == LUA_TNUMBER || type == LUA_TTABLE) {
        int n = 1;
        int32_t one, *v = &one;
        if (type == LUA_TNUMBER) one = (int32_t)luaL_checkinteger(L, 5);
        else v = (int32_t *)up_lua_read_ints(L, 5, "spec.max_new_tokens", &n);
        for (int i = 0; i < n; i++)
            if (up_grid_add_decoding(lg->g, v[i], &e) < 0) return luaL_argerror(L, 1, e.msg);
    } else if (type != LUA_TNIL) {
        return luaL_argerror(L, 1, "spec.max_new_tokens must be a number or a list");
    }
    lua_settop(L, 4);
    if (field(L, 1, "objective") != LUA_TNIL) {
        if (!lua_istable(L, 5)) return luaL_argerror(L, 1, "spec.objective must be {layer =, direction =, positions =}");
        up_objective obj;
        read_objective(L, 5, d, "spec.objective", &obj);
        if (up_grid_set_objective(lg->g, obj.layer, obj.direction, obj.positions, obj.n_positions, &e))
            return luaL_error(L, "%s", e.msg);
    }
    lua_settop(L, 4);
    if (field(L, 1, "gradients") != LUA_TNIL) {
        if (!lua_istable(L, 5))
            return luaL_argerror(L, 1, "spec.gradients must be a list of {prompt =, layer =, grad =, objective =}");
        for (lua_Integer i = 1; i <= luaL_len(L, 5); i++) {
            lua_geti(L, 5, i);
            const int entry = lua_gettop(L);
            if (!lua_istable(L, entry) || field(L, entry, "grad") == LUA_TNIL || !luaL_testudata(L, -1, UP_TENSOR_MT))
                return luaL_argerror(L, 1, "spec.gradients[i].grad must be a Tensor (T, d)");
            const up_lua_tensor *t = up_lua_tensor_check(L, -1);
            if (t->ndim != 2 || t->shape[1] != d) return luaL_argerror(L, 1, "spec.gradients[i].grad must be a Tensor (T, d)");
            const lua_Integer p = up_lua_opt_integer(L, entry, "prompt", 0);
            if (p < 1 || p > up_grid_n_prompts(lg->g))
                return luaL_argerror(L, 1, "spec.gradients[i].prompt must be a prompt's index (1-based)");
            if (field(L, entry, "layer") != LUA_TNUMBER) return luaL_argerror(L, 1, "spec.gradients[i].layer is required");
            const int l = (int)up_lua_opt_integer(L, entry, "layer", 0);
            if (field(L, entry, "objective") != LUA_TTABLE) return luaL_argerror(L, 1, "spec.gradients[i].objective is required");
            up_objective obj;
            read_objective(L, lua_gettop(L), d, "spec.gradients[i].objective", &obj);
            if (up_grid_set_gradient(lg->g, (int)p - 1, l, &obj, t->data, (int)t->shape[0], &e)) return luaL_error(L, "%s", e.msg);
            lua_settop(L, 5);
        }
    }
    lua_settop(L, 4);

    /* run settings */
    if (field(L, 1, "refusal_ids") == LUA_TNIL) return luaL_argerror(L, 1, "spec.refusal_ids is required (Gemma: the id of \"I\")");
    int n;
    int32_t *ids = (int32_t *)up_lua_read_ints(L, 5, "spec.refusal_ids", &n);
    if (n <= 0 || n > 64) return luaL_argerror(L, 1, "spec.refusal_ids must hold 1 to 64 ids");
    memcpy(lg->refusal, ids, (size_t)n * sizeof *ids), lg->n_refusal = n;
    lua_settop(L, 4);
    if (field(L, 1, "stop") != LUA_TNIL) {
        ids = (int32_t *)up_lua_read_ints(L, 5, "spec.stop", &n);
        if (n > 64) return luaL_argerror(L, 1, "spec.stop holds more than 64 ids");
        memcpy(lg->stop, ids, (size_t)n * sizeof *ids), lg->n_stop = n;
    } else {
        lg->stop[0] = m->cfg.eos_id, lg->n_stop = 1;
    }
    lua_settop(L, 4);
    type = field(L, 1, "tokenizer");
    if (type == LUA_TSTRING) {
        if (up_tokenizer_load(&lg->own_tok, lua_tostring(L, 5), &e)) return luaL_error(L, "%s", e.msg);
    } else if (type != LUA_TNIL) {
        if (!luaL_testudata(L, 5, UP_TOKENIZER_MT)) return luaL_argerror(L, 1, "spec.tokenizer must be a Tokenizer or a path");
        lua_setfield(L, 4, "tokenizer");
    }
    lua_settop(L, 4);
    if (field(L, 1, "substrings") != LUA_TNIL) {
        if (!lua_istable(L, 5) || luaL_len(L, 5) <= 0) return luaL_argerror(L, 1, "spec.substrings must be a non-empty list");
        n = (int)luaL_len(L, 5);
        if (!(lg->subs = calloc((size_t)n, sizeof *lg->subs))) return luaL_error(L, "out of memory");
        lg->n_subs = n;
        for (int i = 0; i < n; i++) {
            lua_geti(L, 5, i + 1);
            const char *s = lua_tostring(L, -1);
            if (!s) return luaL_argerror(L, 1, "spec.substrings must hold strings");
            lg->subs[i] = strdup(s);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 4);
    if (field(L, 1, "cache") != LUA_TNIL) {
        if (!lua_isstring(L, 5)) return luaL_argerror(L, 1, "spec.cache must be a directory path");
        lg->cache = strdup(lua_tostring(L, 5));
    }
    lua_settop(L, 4);
    if (field(L, 1, "identity") != LUA_TNIL) {
        if (!lua_istable(L, 5)) return luaL_argerror(L, 1, "spec.identity must be a table of name = value");
        for (lua_pushnil(L); lua_next(L, 5); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                return luaL_argerror(L, 1, "spec.identity must map names to strings");
            if (up_grid_identity(lg->g, lua_tostring(L, -2), lua_tostring(L, -1), &e)) return luaL_error(L, "%s", e.msg);
        }
    }
    lua_settop(L, 4);
    up_grid_opts dflt = up_grid_opts_default();
    lg->batch = (int)up_lua_opt_integer(L, 1, "batch", dflt.batch);
    lg->rep_n = (int)up_lua_opt_integer(L, 1, "rep_n", dflt.rep_n);
    if (lg->batch <= 0 || lg->rep_n <= 0) return luaL_argerror(L, 1, "spec.batch and spec.rep_n must be positive");
    lg->coherence = bool_field(L, 1, "coherence", 1);
    lg->predict = bool_field(L, 1, "predict", 1);
    type = field(L, 1, "progress");
    if (type == LUA_TFUNCTION) {
        lg->progress = 2;
        lua_setfield(L, 4, "progress");
    } else if (type != LUA_TNIL && type != LUA_TBOOLEAN) {
        return luaL_argerror(L, 1, "spec.progress must be true or a function");
    } else {
        lg->progress = lua_toboolean(L, 5);
    }
    lua_settop(L, 3);
    return 1;
}

/* ---- running --------------------------------------------------------------------------------- */

typedef struct progress_ctx {
    lua_State *L;
    int fn;         /* stack index of the Lua function, or 0 for the built-in bar */
    int tty;
    double last;
    int drawn;
    int error;      /* the Lua function raised: its message is on the stack top */
} progress_ctx;

static void set_num(lua_State *L, const char *k, double v) {
    if (isnan(v)) return; /* absent rather than NaN, which compares unequal to itself */
    lua_pushnumber(L, v), lua_setfield(L, -2, k);
}

static int on_progress(const up_grid_progress *p, void *user) {
    progress_ctx *c = user;
    char line[256];
    if (!c->fn) {
        const double t = up_clock_seconds();
        const int final = p->done == p->total;
        if (c->tty) {
            if (!final && t - c->last < 0.1) return 0;
            fprintf(stderr, "\r%s\033[K%s", up_grid_progress_format(p, 30, line, sizeof line), final ? "\n" : "");
            c->drawn = !final;
        } else {
            if (final || t - c->last < 5) return 0;
            fprintf(stderr, "grid: %s\n", up_grid_progress_format(p, 0, line, sizeof line));
        }
        fflush(stderr);
        c->last = t;
        return 0;
    }
    /* A raise must not unwind through core, so the function runs protected. */
    lua_State *L = c->L;
    lua_pushvalue(L, c->fn);
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, p->done), lua_setfield(L, -2, "done");
    lua_pushinteger(L, p->total), lua_setfield(L, -2, "total");
    lua_pushinteger(L, p->cached), lua_setfield(L, -2, "cached");
    lua_pushinteger(L, p->computed), lua_setfield(L, -2, "computed");
    lua_pushinteger(L, p->batch), lua_setfield(L, -2, "batch");
    lua_pushinteger(L, p->n_batches), lua_setfield(L, -2, "n_batches");
    lua_pushinteger(L, p->step), lua_setfield(L, -2, "step");
    lua_pushinteger(L, p->steps), lua_setfield(L, -2, "steps");
    set_num(L, "elapsed", p->elapsed);
    set_num(L, "rate", p->rate);
    set_num(L, "eta", p->eta);
    lua_pushstring(L, up_grid_progress_format(p, 30, line, sizeof line)), lua_setfield(L, -2, "line");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        c->error = 1;
        return 1;
    }
    const int stop = lua_toboolean(L, -1) && !(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "stop"));
    lua_pop(L, 1);
    return stop;
}

static void push_rows(lua_State *L, const up_grid *g) {
    const int n = up_grid_n_cells(g);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const up_grid_cell *c = up_grid_cell_at(g, i);
        if (!c) break;
        lua_createtable(L, 0, 22);
        lua_pushinteger(L, c->prompt + 1), lua_setfield(L, -2, "prompt");
        lua_pushstring(L, c->prompt_label), lua_setfield(L, -2, "prompt_label");
        lua_pushinteger(L, c->intervention + 1), lua_setfield(L, -2, "intervention");
        lua_pushstring(L, c->label), lua_setfield(L, -2, "label");
        if (c->latent >= 0) lua_pushinteger(L, c->latent), lua_setfield(L, -2, "latent");
        set_num(L, "alpha", c->alpha);
        lua_pushinteger(L, c->max_new_tokens), lua_setfield(L, -2, "max_new_tokens");
        set_num(L, "score", c->score);
        set_num(L, "p_refusal", c->p_refusal);
        set_num(L, "dscore", c->dscore);
        set_num(L, "R", c->R);
        set_num(L, "dR", c->dR);
        set_num(L, "predicted_dR", c->predicted_dR);
        lua_createtable(L, c->n_tokens, 0);
        for (int t = 0; t < c->n_tokens; t++) lua_pushinteger(L, c->tokens[t]), lua_rawseti(L, -2, t + 1);
        lua_setfield(L, -2, "tokens");
        if (c->text) lua_pushstring(L, c->text), lua_setfield(L, -2, "text");
        if (c->refusal_match != -2) lua_pushboolean(L, c->refusal_match >= 0), lua_setfield(L, -2, "refused");
        const char *match = up_grid_match_text(g, c);
        if (match) lua_pushstring(L, match), lua_setfield(L, -2, "refusal_match");
        set_num(L, "logprob", c->logprob);
        set_num(L, "repetition", c->repetition);
        lua_pushboolean(L, c->state == UP_GRID_CACHED), lua_setfield(L, -2, "cached");
        lua_pushstring(L, c->key), lua_setfield(L, -2, "key");
        lua_rawseti(L, -2, i + 1);
    }
}

static int g_run(lua_State *L) {
    lua_grid *lg = check_grid(L, 1);
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1); /* 2: refs */
    lua_getfield(L, 2, "model");
    up_lua_check_model(L, 3); /* raises if it was closed since */
    for (lua_Integer i = 1; i <= luaL_len(L, 2); i++) {
        lua_geti(L, 2, i);
        up_lua_check_sae(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    const up_tokenizer *tok = lg->own_tok;
    lua_getfield(L, 2, "tokenizer"); /* 4 */
    if (!tok && !lua_isnil(L, 4)) {
        tok = *(up_tokenizer **)lua_touserdata(L, 4);
        if (!tok) return luaL_error(L, "spec.tokenizer has been closed");
    }
    lua_getfield(L, 2, "progress"); /* 5 */
    progress_ctx pc = {L, lg->progress == 2 ? 5 : 0, isatty(2), up_clock_seconds(), 0, 0};
    up_grid_opts o = up_grid_opts_default();
    o.batch = lg->batch, o.rep_n = lg->rep_n, o.coherence = lg->coherence, o.predict = lg->predict;
    o.cache_dir = lg->cache;
    o.refusal_ids = lg->refusal, o.n_refusal = lg->n_refusal;
    o.stop_ids = lg->stop, o.n_stop = lg->n_stop;
    o.tok = tok;
    o.substrings = (const char *const *)lg->subs, o.n_substrings = lg->n_subs;
    /* The built-in bar is rank 0's alone in a job of several (dist.h). */
    if (lg->progress == 2 || (lg->progress == 1 && up_dist_rank() == 0)) o.progress = on_progress, o.user = &pc;
    up_error e = {0};
    up_status st = up_grid_run(lg->g, &o, &e);
    if (pc.drawn) fputc('\n', stderr);
    if (pc.error) return lua_error(L); /* the progress function's own error, unchanged */
    if (st == UP_ERR_ABORTED) {
        lua_pushnil(L);
        lua_pushstring(L, e.msg);
        return 2;
    }
    if (st) return luaL_error(L, "%s", e.msg);
    push_rows(L, lg->g);
    return 1;
}

static int g_rows(lua_State *L) {
    push_rows(L, check_grid(L, 1)->g);
    return 1;
}

static int g_totals(lua_State *L) {
    up_grid_totals t = up_grid_get_totals(check_grid(L, 1)->g);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, t.cells), lua_setfield(L, -2, "cells");
    lua_pushinteger(L, t.unique), lua_setfield(L, -2, "unique");
    lua_pushinteger(L, t.cached), lua_setfield(L, -2, "cached");
    lua_pushinteger(L, t.computed), lua_setfield(L, -2, "computed");
    lua_pushinteger(L, t.batches), lua_setfield(L, -2, "batches");
    lua_pushnumber(L, t.seconds), lua_setfield(L, -2, "seconds");
    return 1;
}

static int g_set_prediction(lua_State *L) {
    lua_grid *lg = check_grid(L, 1);
    const lua_Integer p = luaL_checkinteger(L, 2), i = luaL_checkinteger(L, 3);
    const double v = luaL_checknumber(L, 4);
    if (p < 1 || p > up_grid_n_prompts(lg->g)) return luaL_argerror(L, 2, "prompt index out of range (1-based)");
    if (i < 1 || i > up_grid_n_interventions(lg->g)) return luaL_argerror(L, 3, "intervention index out of range (1-based)");
    up_error e = {0};
    if (up_grid_set_prediction(lg->g, (int)p - 1, (int)i - 1, v, &e)) return luaL_error(L, "%s", e.msg);
    return 0;
}

/* model:steer(prompts, spec) */
int up_lua_model_steer(lua_State *L) {
    up_lua_check_model(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 3);
    lua_newtable(L); /* 4: a copy of spec with model and prompts */
    if (lua_istable(L, 3))
        for (lua_pushnil(L); lua_next(L, 3);) lua_pushvalue(L, -2), lua_insert(L, -2), lua_settable(L, 4);
    lua_pushvalue(L, 1), lua_setfield(L, 4, "model");
    lua_pushvalue(L, 2), lua_setfield(L, 4, "prompts");
    lua_pushcfunction(L, l_grid);
    lua_pushvalue(L, 4);
    lua_call(L, 1, 1); /* 5: the grid */
    lua_pushcfunction(L, g_run);
    lua_pushvalue(L, 5);
    lua_call(L, 1, 2);
    return 2;
}

/* Calls the Lua progress function at stack index fn with the report; a raise stays on the
 * stack top and stops the selection (it must not unwind through core). */
typedef struct select_progress_ctx {
    lua_State *L;
    int fn;
    int error;
} select_progress_ctx;

static int on_select_progress(const up_select_progress *p, void *user) {
    static const char *const passes[3] = {"all", "bypass", "filters"};
    select_progress_ctx *c = user;
    lua_State *L = c->L;
    luaL_checkstack(L, 4, "select_direction progress");
    lua_pushvalue(L, c->fn);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, passes[p->pass]), lua_setfield(L, -2, "pass");
    lua_pushinteger(L, p->done), lua_setfield(L, -2, "done");
    lua_pushinteger(L, p->total), lua_setfield(L, -2, "total");
    lua_pushinteger(L, p->pos), lua_setfield(L, -2, "pos");
    lua_pushinteger(L, p->layer), lua_setfield(L, -2, "layer");
    lua_pushboolean(L, p->passed), lua_setfield(L, -2, "passed");
    lua_pushinteger(L, p->n_passed), lua_setfield(L, -2, "n_passed");
    lua_pushinteger(L, p->batch), lua_setfield(L, -2, "batch");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        c->error = 1;
        return 1;
    }
    return 0;
}

/* model:select_direction(candidates, harmful, harmless, opts) */
int up_lua_model_select_direction(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    const up_lua_tensor *cand = up_lua_tensor_check(L, 2);
    const int d = m->cfg.d_model, nl = m->cfg.n_layers;
    if (cand->ndim != 3 || cand->shape[1] != nl || cand->shape[2] != d)
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected candidates of shape (n_pos, %d, %d)", nl, d));
    luaL_checktype(L, 5, LUA_TTABLE);
    lua_settop(L, 5);
    static const char *const fields[] = {"refusal_ids", "max_layer_frac", "max_kl", "min_induce", "batch", "layers",
                                         "positions", "mode", "skip_late_layers", "progress", NULL};
    up_lua_check_keys(L, 5, fields, "opts");
    up_select_opts o = up_select_opts_default();
    o.max_layer_frac = up_lua_opt_number(L, 5, "max_layer_frac", o.max_layer_frac);
    o.max_kl = up_lua_opt_number(L, 5, "max_kl", o.max_kl);
    o.min_induce = up_lua_opt_number(L, 5, "min_induce", o.min_induce);
    o.batch = (int)up_lua_opt_integer(L, 5, "batch", o.batch);
    if (o.batch <= 0) return luaL_argerror(L, 5, "batch must be positive");
    if (field(L, 5, "refusal_ids") == LUA_TNIL) return luaL_argerror(L, 5, "opts.refusal_ids is required");
    int n_ref;
    const int32_t *ref = (int32_t *)up_lua_read_ints(L, 6, "opts.refusal_ids", &n_ref);
    /* Lua-owned lists, left on the stack while the selection runs. */
    if (field(L, 5, "layers") != LUA_TNIL) o.layers = up_lua_read_ints(L, -1, "opts.layers", &o.n_layers_scored);
    if (field(L, 5, "positions") != LUA_TNIL)
        o.positions = up_lua_read_ints(L, -1, "opts.positions", &o.n_positions_scored);
    o.skip_late_layers = bool_field(L, 5, "skip_late_layers", 0);
    static const char *const modes[] = {"full", "lazy"}; /* indexed by up_select_mode */
    o.mode = UP_SELECT_LAZY;
    if (field(L, 5, "mode") != LUA_TNIL) {
        const char *mode = lua_tostring(L, -1);
        if (!mode || (strcmp(mode, "lazy") && strcmp(mode, "full")))
            return luaL_argerror(L, 5, "opts.mode must be \"lazy\" or \"full\"");
        o.mode = strcmp(mode, "full") ? UP_SELECT_LAZY : UP_SELECT_FULL;
    }
    select_progress_ctx pc = {L, 0, 0};
    const int fn_type = field(L, 5, "progress");
    if (fn_type == LUA_TFUNCTION) pc.fn = lua_gettop(L), o.progress = on_select_progress, o.user = &pc;
    else if (fn_type != LUA_TNIL) return luaL_argerror(L, 5, "opts.progress must be a function");
    const up_token_lists harmful = read_lists(L, 3, "harmful"), harmless = read_lists(L, 4, "harmless");
    const int n_pos = (int)cand->shape[0];
    up_select_result r = {0};
    up_error e = {0};
    if (up_select_direction(m, cand->data, n_pos, &harmful, &harmless, ref, n_ref, &o, &r, &e)) {
        if (pc.error) return lua_error(L); /* the progress function's own error, unchanged */
        return luaL_error(L, "%s", e.msg);
    }
    lua_createtable(L, 0, 8);
    lua_pushstring(L, modes[o.mode]), lua_setfield(L, -2, "mode");
    lua_pushinteger(L, o.batch), lua_setfield(L, -2, "batch");
    if (r.best >= 0) {
        const up_select_score *b = &r.scores[r.best];
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, r.best + 1), lua_setfield(L, -2, "index");
        lua_pushinteger(L, b->pos - n_pos), lua_setfield(L, -2, "pos");
        lua_pushinteger(L, b->layer), lua_setfield(L, -2, "layer");
        lua_setfield(L, -2, "best");
        int64_t shape[1] = {d};
        up_lua_tensor *t = up_lua_tensor_new(L, 1, shape);
        memcpy(t->data, cand->data + ((size_t)b->pos * nl + b->layer) * d, (size_t)d * sizeof(float));
        lua_setfield(L, -2, "direction");
    }
    lua_pushinteger(L, r.n_kept), lua_setfield(L, -2, "n_kept");
    lua_pushnumber(L, r.base_harmful), lua_setfield(L, -2, "base_harmful");
    lua_pushnumber(L, r.base_harmless), lua_setfield(L, -2, "base_harmless");
    lua_createtable(L, n_pos * nl, 0);
    for (int i = 0; i < n_pos * nl; i++) {
        const up_select_score *s = &r.scores[i];
        char buf[64];
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, s->pos - n_pos), lua_setfield(L, -2, "pos");
        lua_pushinteger(L, s->layer), lua_setfield(L, -2, "layer");
        set_num(L, "bypass", s->bypass);
        set_num(L, "induce", s->induce);
        set_num(L, "kl", s->kl);
        lua_pushstring(L, up_select_dropped_names(s->dropped, buf, sizeof buf)), lua_setfield(L, -2, "dropped");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "scores");
    up_select_result_free(&r);
    return 1;
}

void up_lua_register_steer(lua_State *L) {
    static const luaL_Reg grid_methods[] = {{"run", g_run},       {"rows", g_rows}, {"totals", g_totals},
                                            {"set_prediction", g_set_prediction}, {"close", g_gc}, {NULL, NULL}};
    if (luaL_newmetatable(L, UP_GRID_MT)) {
        luaL_newlib(L, grid_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, g_gc), lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, g_gc), lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"grid", l_grid},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
