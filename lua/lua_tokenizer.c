/* Lua bindings for core/tokenizer and core/chat.
 *
 *   local tok <close> = upstream.tokenizer(path_or_dir)  -- tokenizer.json, or a model dir
 *   tok:encode(text)               -> {ids}   (no BOS; special-token text recognised)
 *   tok:decode(ids[, skip_special]) -> string
 *   tok:piece(id)                  -> string | nil
 *   tok:id(piece)                  -> integer | nil
 *   tok:chat(instruction[, template = "gemma"]) -> {ids}  (one user turn, exactly one BOS)
 *   tok:stop_ids([template])       -> {ids}   (ids that end a model turn)
 *   tok:post_instruction_count([template]) -> integer
 *   tok:vocab_size(), tok:bos_id(), tok:eos_id()  -> integer (-1 if none)
 *   tok:close()                    frees now (also __close / __gc; idempotent)
 *   upstream.chat_templates()      -> {names}  the templates core/text/chat.c knows
 *   upstream.chat_template_known(name) -> boolean  (aliases such as "gemma2" included)
 *
 * Ids are the model's 0-based token ids in 1-based Lua arrays. Error rule for this family:
 * everything raises — misuse with luaL_argerror, failures (missing file, unsupported
 * tokenizer component, bad id) with the core's message; a script that wants to recover
 * uses pcall. Lookups that simply find nothing (piece, id) return nil. */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "binding.h"
#include "dist/dist.h"
#include "text/chat.h"
#include "text/tokenizer.h"

/* binding.h promises this layout: lua_steer.c reads the tokenizer of a grid's spec. */
typedef struct {
    up_tokenizer *tok; /* NULL once closed */
} lua_tok;

static up_tokenizer *check_tok(lua_State *L) {
    lua_tok *u = luaL_checkudata(L, 1, UP_TOKENIZER_MT);
    if (!u->tok) luaL_error(L, "tokenizer is closed");
    return u->tok;
}

static const up_chat_template *opt_template(lua_State *L, int arg) {
    const char *name = luaL_optstring(L, arg, "gemma");
    const up_chat_template *tpl = up_chat_template_find(name);
    if (!tpl) luaL_argerror(L, arg, lua_pushfstring(L, "unknown chat template '%s'", name));
    return tpl;
}

static void push_ids(lua_State *L, const int32_t *ids, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static int l_new(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_tok *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->tok = NULL;
    luaL_setmetatable(L, UP_TOKENIZER_MT);
    struct stat sb;
    up_error err = {0};
    up_status st = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? up_tokenizer_load_dir(&u->tok, path, &err)
                                                              : up_tokenizer_load(&u->tok, path, &err);
    /* Loaded by every rank together, as models are (lua_model.c). */
    if (up_dist_agree(st, &err)) return luaL_error(L, "upstream.tokenizer: %s", err.msg);
    return 1;
}

static int l_encode(lua_State *L) {
    up_tokenizer *tok = check_tok(L);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    int32_t *ids;
    int n;
    up_error err = {0};
    if (up_tokenizer_encode(tok, text, len, &ids, &n, &err)) return luaL_error(L, "%s", err.msg);
    push_ids(L, ids, n);
    free(ids);
    return 1;
}

static int l_decode(lua_State *L) {
    up_tokenizer *tok = check_tok(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    int skip = lua_toboolean(L, 3);
    lua_Integer n = luaL_len(L, 2);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids) return luaL_error(L, "out of memory");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || v < INT32_MIN || v > INT32_MAX) {
            free(ids);
            return luaL_argerror(L, 2, lua_pushfstring(L, "ids[%d] is not an integer token id", (int)i));
        }
        ids[i - 1] = (int32_t)v;
    }
    char *text;
    size_t len;
    up_error err = {0};
    up_status st = up_tokenizer_decode_n(tok, ids, (int)n, skip, &text, &len, &err);
    free(ids);
    if (st) return luaL_error(L, "%s", err.msg);
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

static int l_piece(lua_State *L) {
    up_tokenizer *tok = check_tok(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    const char *p = id >= INT32_MIN && id <= INT32_MAX ? up_tokenizer_piece(tok, (int32_t)id) : NULL;
    if (p) lua_pushstring(L, p);
    else lua_pushnil(L);
    return 1;
}

static int l_id(lua_State *L) {
    up_tokenizer *tok = check_tok(L);
    int32_t id = up_tokenizer_token_id(tok, luaL_checkstring(L, 2));
    if (id >= 0) lua_pushinteger(L, id);
    else lua_pushnil(L);
    return 1;
}

static int l_chat(lua_State *L) {
    up_tokenizer *tok = check_tok(L);
    const char *instruction = luaL_checkstring(L, 2);
    const up_chat_template *tpl = opt_template(L, 3);
    int32_t *ids;
    int n;
    up_error err = {0};
    if (up_chat_encode(tok, tpl, instruction, &ids, &n, &err)) return luaL_error(L, "%s", err.msg);
    push_ids(L, ids, n);
    free(ids);
    return 1;
}

static int l_stop_ids(lua_State *L) {
    up_tokenizer *tok = check_tok(L);
    const up_chat_template *tpl = opt_template(L, 2);
    int32_t ids[UP_CHAT_MAX_STOP + 2];
    int n = up_chat_stop_ids(tok, tpl, ids, UP_CHAT_MAX_STOP + 2);
    push_ids(L, ids, n);
    return 1;
}

static int l_post_instruction_count(lua_State *L) {
    check_tok(L);
    lua_pushinteger(L, up_chat_post_instruction_count(opt_template(L, 2)));
    return 1;
}

static int l_vocab_size(lua_State *L) {
    lua_pushinteger(L, up_tokenizer_vocab_size(check_tok(L)));
    return 1;
}

static int l_bos_id(lua_State *L) {
    lua_pushinteger(L, up_tokenizer_bos_id(check_tok(L)));
    return 1;
}

static int l_eos_id(lua_State *L) {
    lua_pushinteger(L, up_tokenizer_eos_id(check_tok(L)));
    return 1;
}

/* __gc, __close and :close() share this; a second call finds NULL and does nothing. */
static int l_close(lua_State *L) {
    lua_tok *u = luaL_checkudata(L, 1, UP_TOKENIZER_MT);
    up_tokenizer_free(u->tok);
    u->tok = NULL;
    return 0;
}

static int l_tostring(lua_State *L) {
    lua_tok *u = luaL_checkudata(L, 1, UP_TOKENIZER_MT);
    if (u->tok) lua_pushfstring(L, "upstream.tokenizer (vocab %d)", up_tokenizer_vocab_size(u->tok));
    else lua_pushliteral(L, "upstream.tokenizer (closed)");
    return 1;
}

static const luaL_Reg methods[] = {
    {"encode", l_encode},
    {"decode", l_decode},
    {"piece", l_piece},
    {"id", l_id},
    {"chat", l_chat},
    {"stop_ids", l_stop_ids},
    {"post_instruction_count", l_post_instruction_count},
    {"vocab_size", l_vocab_size},
    {"bos_id", l_bos_id},
    {"eos_id", l_eos_id},
    {"close", l_close},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__gc", l_close},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static int l_chat_templates(lua_State *L) {
    lua_newtable(L);
    for (int i = 0; up_chat_template_at(i); i++) {
        lua_pushstring(L, up_chat_template_at(i)->name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_chat_template_known(lua_State *L) {
    lua_pushboolean(L, up_chat_template_find(luaL_checkstring(L, 1)) != NULL);
    return 1;
}

void up_lua_register_tokenizer(lua_State *L) {
    if (luaL_newmetatable(L, UP_TOKENIZER_MT)) {
        luaL_setfuncs(L, metamethods, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "tokenizer");
    lua_pushcfunction(L, l_chat_templates);
    lua_setfield(L, -2, "chat_templates");
    lua_pushcfunction(L, l_chat_template_known);
    lua_setfield(L, -2, "chat_template_known");
}
