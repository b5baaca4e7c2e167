/* The Lua side of the host: a Lua 5.4 state with `upstream.core` (the C bindings) preloaded
 * and lua/ on package.path, so `require "upstream"` finds lua/upstream/init.lua. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int open_core(lua_State *L) {
    lua_newtable(L);
    up_lua_register_model(L);
    up_lua_register_tokenizer(L);
    return 1;
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* A Lua state with the standard libraries, upstream.core preloaded and lua/ on package.path;
 * NULL (after a message) when Lua cannot allocate one. */
static lua_State *new_host(void) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "upstream: cannot create a Lua state\n");
        return NULL;
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "upstream.core");
    lua_pop(L, 1);

    const char *dir = getenv("UPSTREAM_LUA_DIR");
    if (!dir) dir = UP_LUA_DIR;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    return L;
}

int up_cmd_run_lua(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        printf("usage: upstream FILE.lua [args]   (or: upstream run FILE.lua [args])\n"
               "Runs a Lua 5.4 script; `require \"upstream\"` gives the upstream library.\n"
               "Script arguments are in the global `arg` (arg[0] is the script).\n");
        return argc < 1 ? 2 : 0;
    }
    lua_State *L = new_host();
    if (!L) return 1;

    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");

    int status = 0;
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, argv[0]) != LUA_OK) {
        fprintf(stderr, "upstream: %s\n", lua_tostring(L, -1));
        status = 1;
    } else {
        for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
        if (lua_pcall(L, argc - 1, 0, 1) != LUA_OK) {
            fprintf(stderr, "upstream: %s\n", lua_tostring(L, -1));
            status = 1;
        }
    }
    lua_close(L);
    return status;
}

int up_cmd_lua_module(const char *module, int argc, char **argv) {
    lua_State *L = new_host();
    if (!L) return 1;
    int status = 1;
    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 1) != LUA_OK) {
        fprintf(stderr, "upstream %s: %s\n", argv[0], lua_tostring(L, -1));
    } else {
        lua_getfield(L, -1, "main");
        lua_createtable(L, argc, 0);
        for (int i = 0; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i);
        }
        /* A command's errors are messages for its user; UPSTREAM_TRACEBACK=1 adds the stack. */
        if (lua_pcall(L, 1, 1, getenv("UPSTREAM_TRACEBACK") ? 1 : 0) != LUA_OK) {
            fprintf(stderr, "upstream %s: %s\n", argv[0], lua_tostring(L, -1));
        } else {
            status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
        }
    }
    lua_close(L);
    return status;
}

int up_cmd_organism(int argc, char **argv) { return up_cmd_lua_module("upstream.organism_build", argc, argv); }
