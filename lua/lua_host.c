/* The Lua side of the host: a Lua 5.4 state with `upstream.core` (the C bindings) preloaded
 * and lua/ on package.path, so `require "upstream"` finds lua/upstream/init.lua.
 *
 * `upstream FILE.lua ARGS` hands every argument to the script. `upstream run [OPTIONS] FILE.lua
 * [OPTIONS] [-- ARGS]` first takes the experiment options below (before or after the file),
 * and the script reads them as upstream.run_options = {config =, model =, run_id =,
 * threads =, quiet =, sets = {"key=value", ...} (in command-line order)}; lua/upstream/
 * experiment.lua applies them. Parsing stays here so `--help` and a malformed option fail
 * before any Lua runs. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "cli.h"
#include "dist/dist.h"

#define RUN_OPTIONS_KEY "upstream.run_options"

/* The parts of upstream.core, one per binding file (binding.h). Each adds its functions to the
 * module table and creates its own userdata type, so the order does not matter. */
static const struct core_part {
    const char *name;
    void (*reg)(lua_State *L);
} core_parts[] = {
    {"tensor", up_lua_register_tensor},
    {"model", up_lua_register_model},
    {"sae", up_lua_register_sae},
    {"tokenizer", up_lua_register_tokenizer},
    {"attribution", up_lua_register_attribution},
    {"steer", up_lua_register_steer},
    {"metrics", up_lua_register_metrics},
    {"train", up_lua_register_train},
    {"sae_train", up_lua_register_sae_train},
    {"bpe", up_lua_register_bpe},
    {"plot", up_lua_register_plot},
    {"json", up_lua_register_json},
    {"system", up_lua_register_system},
    {"settings", up_lua_register_settings},
    {"dist", up_lua_register_dist},
};

static int open_core(lua_State *L) {
    lua_newtable(L);
    const int top = lua_gettop(L);
    for (size_t i = 0; i < sizeof core_parts / sizeof *core_parts; i++) {
        core_parts[i].reg(L);
        /* A part that leaves the stack unbalanced would register the next into the wrong table. */
        if (lua_gettop(L) != top) return luaL_error(L, "upstream.core: part '%s' left the stack unbalanced", core_parts[i].name);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, RUN_OPTIONS_KEY);
    lua_setfield(L, -2, "run_options");
    return 1;
}

/* Whether the error is a fault to debug: raised by Lua code itself (a runtime error such as
 * indexing nil) or by a failed assert(). Errors raised by other C functions (error(), a
 * binding's luaL_error) carry a message meant for the user, often with the experiment's
 * file:line already in front. */
int up_lua_is_fault(lua_State *L) {
    lua_Debug ar;
    if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "Sn", &ar)) return 1;
    return strcmp(ar.what, "C") != 0 || (ar.name && strcmp(ar.name, "assert") == 0);
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    if (up_lua_is_fault(L) || getenv("UPSTREAM_TRACEBACK")) luaL_traceback(L, L, msg, 1);
    else lua_pushstring(L, msg);
    return 1;
}

/* The script runs with options (a table on top of L's stack, consumed) or without (NULL). */
static int run_script(lua_State *L, int argc, char **argv);

static const char run_usage[] =
    "usage: upstream run [options] FILE.lua [options] [-- script args]\n"
    "Runs an experiment script (see docs/lua-api.md). Options:\n"
    "  --config FILE       settings file (else $UPSTREAM_CONFIG, ./upstream.cfg,\n"
    "                      ~/.config/upstream/upstream.cfg, built-in defaults)\n"
    "  --model NAME|DIR    a model of the settings' registry, or a checkpoint directory\n"
    "  --set KEY=VALUE     override an experiment field or parameter (top_k=5,\n"
    "                      source_layers=1,2) or a setting (threads=2, results=DIR,\n"
    "                      models.organism.path=DIR); repeatable, later wins\n"
    "  --run-id ID         name of the run directory (default: UTC time; never reused)\n"
    "  --threads N         BLAS/OpenMP threads (same as --set threads=N)\n"
    "  --quiet             no progress on stderr\n";

int up_cmd_run(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "upstream run: cannot create a Lua state\n");
        return 1;
    }
    lua_newtable(L); /* run_options */
    lua_newtable(L); /* sets */
    int n_sets = 0, script = 0, status = 0, n_args = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) {
        lua_close(L);
        fprintf(stderr, "upstream run: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int missing = 0;
        if (script && !strcmp(argv[i], "--")) {
            for (i++; i < argc; i++) args[n_args++] = argv[i];
            break;
        }
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) {
            fputs(run_usage, stdout);
            goto done;
        } else if (up_cli_flag(argv, i, "--quiet")) {
            lua_pushboolean(L, 1), lua_setfield(L, -3, "quiet");
        } else if (up_cli_opt(argc, argv, &i, "--set", &v, &missing)) {
            if (v && !strchr(v, '=')) {
                fprintf(stderr, "upstream run: --set takes KEY=VALUE, got '%s'\n", v);
                missing = 1;
            }
            if (v && !missing) lua_pushstring(L, v), lua_rawseti(L, -2, ++n_sets);
        } else if (up_cli_opt(argc, argv, &i, "--config", &v, &missing)) {
            if (v) lua_pushstring(L, v), lua_setfield(L, -3, "config");
        } else if (up_cli_opt(argc, argv, &i, "--model", &v, &missing)) {
            if (v) lua_pushstring(L, v), lua_setfield(L, -3, "model");
        } else if (up_cli_opt(argc, argv, &i, "--run-id", &v, &missing)) {
            if (v && (!*v || strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, ".."))) {
                fprintf(stderr, "upstream run: --run-id must be a plain name, got '%s'\n", v);
                missing = 1;
            }
            if (v && !missing) lua_pushstring(L, v), lua_setfield(L, -3, "run_id");
        } else if (up_cli_opt(argc, argv, &i, "--threads", &v, &missing)) {
            char *end;
            long t = v ? strtol(v, &end, 10) : 0;
            if (v && (*end || t < 1 || t > 4096)) {
                fprintf(stderr, "upstream run: --threads takes a positive integer, got '%s'\n", v);
                missing = 1;
            }
            if (v && !missing) lua_pushinteger(L, t), lua_setfield(L, -3, "threads");
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "upstream run: unknown option '%s'\n%s", argv[i], run_usage);
            status = 2;
            goto done;
        } else if (!script) {
            script = i;
            args[n_args++] = argv[i];
        } else {
            args[n_args++] = argv[i];
        }
        if (missing) {
            status = 2;
            goto done;
        }
    }
    if (!script) {
        fprintf(stderr, "%s", run_usage);
        status = 2;
        goto done;
    }
    lua_setfield(L, -2, "sets");
    lua_pushstring(L, argv[script]), lua_setfield(L, -2, "script");
    lua_setfield(L, LUA_REGISTRYINDEX, RUN_OPTIONS_KEY);
    status = run_script(L, n_args, args);
    L = NULL; /* run_script closed it */
done:
    if (L) lua_close(L);
    free(args);
    return status;
}

int up_cmd_run_lua(int argc, char **argv) {
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        printf("usage: upstream FILE.lua [args]   (or: upstream run FILE.lua [args])\n"
               "Runs a Lua 5.4 script; `require \"upstream\"` gives the upstream library.\n"
               "Script arguments are in the global `arg` (arg[0] is the script).\n");
        return argc < 1 ? 2 : 0;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "upstream: cannot create a Lua state\n");
        return 1;
    }
    return run_script(L, argc, argv);
}

/* Opens the standard libraries, preloads upstream.core and puts lua/ on package.path. */
void up_lua_prepare_state(lua_State *L) {
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
}

/* An error nothing caught ends the script: the message on top of the stack goes to every run
 * the experiment library still has open (their manifests then say "failed" and why, not
 * "running"). Nothing happens when the script never loaded the library. */
static void fail_open_runs(lua_State *L) {
    const int msg = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "upstream.experiment") == LUA_TTABLE &&
        lua_getfield(L, -1, "fail_open_runs") == LUA_TFUNCTION) {
        lua_pushvalue(L, msg);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK)
            fprintf(stderr, "upstream: could not mark the run failed: %s\n", lua_tostring(L, -1));
    }
    lua_settop(L, msg);
}

/* Prints an error nothing caught, as "who: msg". Under several ranks (dist.h) an error every
 * rank has (a collective's) is printed by rank 0 alone; an error of this rank only names the
 * rank and host and ends the whole job, since the other ranks would wait for this one. Rank 0
 * marks its open runs failed either way (the others have none on disk). */
static void report_uncaught(lua_State *L, const char *who, const char *msg, int mark_runs) {
    const int size = up_dist_size(), rank = up_dist_rank();
    const char *shared = up_dist_shared_error();
    const int collective = size > 1 && shared[0] && strstr(msg, shared);
    if (size == 1 || (collective && rank == 0)) fprintf(stderr, "%s: %s\n", who, msg);
    else if (!collective) fprintf(stderr, "%s: rank %d of %d on host %s: %s\n", who, rank, size, up_dist_host(rank), msg);
    if (mark_runs && rank == 0) fail_open_runs(L);
    if (size > 1 && !collective) {
        fflush(stderr);
        up_dist_abort(1);
    }
}

static int run_script(lua_State *L, int argc, char **argv) {
    up_lua_prepare_state(L);

    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");

    int status = 0;
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, argv[0]) != LUA_OK) {
        report_uncaught(L, "upstream", lua_tostring(L, -1), 0);
        status = 1;
    } else {
        for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
        if (lua_pcall(L, argc - 1, 0, 1) != LUA_OK) {
            report_uncaught(L, "upstream", lua_tostring(L, -1), 1);
            status = 1;
        }
    }
    lua_close(L);
    return status;
}

int up_cmd_lua_module(const char *module, int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "upstream %s: cannot create a Lua state\n", argv[0]);
        return 1;
    }
    up_lua_prepare_state(L);
    int status = 1;
    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    char who[64];
    snprintf(who, sizeof who, "upstream %s", argv[0]);
    if (lua_pcall(L, 1, 1, 1) != LUA_OK) {
        report_uncaught(L, who, lua_tostring(L, -1), 0);
    } else {
        lua_getfield(L, -1, "main");
        lua_createtable(L, argc, 0);
        for (int i = 0; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i);
        }
        /* A command's errors are messages for its user; UPSTREAM_TRACEBACK=1 adds the stack. */
        if (lua_pcall(L, 1, 1, getenv("UPSTREAM_TRACEBACK") ? 1 : 0) != LUA_OK)
            report_uncaught(L, who, lua_tostring(L, -1), 0);
        else
            status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    }
    lua_close(L);
    return status;
}

