/* Lua binding for core/bpe: train a Gemma-shaped BPE tokenizer from Lua.
 *
 *   local info = upstream.train_bpe(texts, {vocab_size = 1024, out = "tokenizer.json"})
 *
 * texts: an array of strings (each counted on its own; newlines and special-token strings
 * inside them are separators) or the path of a text file. Options: vocab_size (required),
 * out (path to write; without it the JSON text comes back as info.json), min_frequency
 * (default 2), max_piece_chars (default 16, -1: no limit), required (array of words that
 * must be single pieces; default {"user", "model"}).
 * info: {vocab_size, n_chars, n_merges, n_words, n_tokens, seconds, path | json}.
 *
 * Error rule (as the tokenizer family): everything raises — misuse with luaL_argerror,
 * failures (unreadable file, vocab_size too small, unwritable out) with the core's
 * message; a script that wants to recover uses pcall. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binding.h"
#include "text/bpe.h"

typedef struct {
    up_bpe *b;
    const char **required; /* (n + 1) NULL-terminated, strings owned by Lua */
} bpe_job;

/* Frees the trainer however the binding leaves (a raise included): the job lives in a
 * to-be-closed userdata. */
static int job_close(lua_State *L) {
    bpe_job *j = lua_touserdata(L, 1);
    up_bpe_free(j->b);
    j->b = NULL;
    free(j->required);
    j->required = NULL;
    return 0;
}

static int opt_int(lua_State *L, int opts, const char *key, int dflt, int required) {
    lua_getfield(L, opts, key);
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    int isnil = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (isnil && !required) return dflt;
    if (!ok || v < -1 || v > 1 << 30)
        return luaL_argerror(L, opts, lua_pushfstring(L, "%s must be an integer in [-1, 2^30]", key));
    return (int)v;
}

static int l_train_bpe(lua_State *L) {
    int is_path = lua_type(L, 1) == LUA_TSTRING;
    if (!is_path) luaL_argexpected(L, lua_istable(L, 1), 1, "array of strings or file path");
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const fields[] = {"vocab_size", "min_frequency", "max_piece_chars", "out", "required", NULL};
    up_lua_check_keys(L, 2, fields, "opts");
    up_bpe_options opt = {0};
    opt.vocab_size = opt_int(L, 2, "vocab_size", 0, 1);
    if (opt.vocab_size <= 0) return luaL_argerror(L, 2, "vocab_size must be positive");
    opt.min_frequency = opt_int(L, 2, "min_frequency", 0, 0);
    opt.max_piece_chars = opt_int(L, 2, "max_piece_chars", 0, 0);
    lua_getfield(L, 2, "out");
    const char *out = luaL_optstring(L, -1, NULL);
    int out_idx = lua_gettop(L);

    bpe_job *j = lua_newuserdatauv(L, sizeof *j, 0);
    j->b = NULL, j->required = NULL;
    lua_newtable(L);
    lua_pushcfunction(L, job_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, job_close);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_toclose(L, -1);

    lua_getfield(L, 2, "required");
    if (!lua_isnil(L, -1)) {
        luaL_argexpected(L, lua_istable(L, -1), 2, "required as an array of strings");
        lua_Integer n = luaL_len(L, -1);
        j->required = calloc((size_t)n + 1, sizeof *j->required);
        if (!j->required) return luaL_error(L, "out of memory");
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_geti(L, -1, i) != LUA_TSTRING)
                return luaL_argerror(L, 2, lua_pushfstring(L, "required[%d] is not a string", (int)i));
            /* The string stays referenced by the options table for the whole call. */
            j->required[i - 1] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        opt.required = j->required;
    }
    lua_pop(L, 1);

    up_error err = {0};
    if (up_bpe_init(&j->b, &err)) return luaL_error(L, "upstream.train_bpe: %s", err.msg);
    clock_t t0 = clock();
    if (is_path) {
        if (up_bpe_add_file(j->b, lua_tostring(L, 1), &err)) return luaL_error(L, "upstream.train_bpe: %s", err.msg);
    } else {
        lua_Integer n = luaL_len(L, 1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_geti(L, 1, i) != LUA_TSTRING)
                return luaL_argerror(L, 1, lua_pushfstring(L, "texts[%d] is not a string", (int)i));
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            if (up_bpe_add_text(j->b, s, len, &err)) return luaL_error(L, "upstream.train_bpe: %s", err.msg);
            lua_pop(L, 1);
        }
    }
    if (up_bpe_train(j->b, &opt, &err)) return luaL_error(L, "upstream.train_bpe: %s", err.msg);
    double seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;

    up_bpe_stats s;
    up_bpe_stats_get(j->b, &s);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, s.vocab_size);
    lua_setfield(L, -2, "vocab_size");
    lua_pushinteger(L, s.n_chars);
    lua_setfield(L, -2, "n_chars");
    lua_pushinteger(L, s.n_merges);
    lua_setfield(L, -2, "n_merges");
    lua_pushinteger(L, s.n_words);
    lua_setfield(L, -2, "n_words");
    lua_pushinteger(L, (lua_Integer)s.n_tokens);
    lua_setfield(L, -2, "n_tokens");
    lua_pushnumber(L, seconds);
    lua_setfield(L, -2, "seconds");
    if (out) {
        if (up_bpe_save(j->b, out, &err)) return luaL_error(L, "upstream.train_bpe: %s", err.msg);
        lua_pushvalue(L, out_idx);
        lua_setfield(L, -2, "path");
    } else {
        char *json;
        size_t len;
        if (up_bpe_json(j->b, &json, &len, &err)) return luaL_error(L, "upstream.train_bpe: %s", err.msg);
        lua_pushlstring(L, json, len);
        free(json);
        lua_setfield(L, -2, "json");
    }
    return 1;
}

void up_lua_register_bpe(lua_State *L) {
    lua_pushcfunction(L, l_train_bpe);
    lua_setfield(L, -2, "train_bpe");
}
