/* fuzz_lua — see fuzz_lua.h. */
#include "fuzz_lua.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fuzz_util.h"

static lua_State *L;
static int fault;

/* libFuzzer takes the counters in this section as extra coverage (Linux): one per line of Lua
 * run (chunk and line hashed), so mutations are guided by the Lua code they reach, not only by
 * the C underneath (liblua itself is not instrumented). */
__attribute__((used, section("__libfuzzer_extra_counters"))) uint8_t fuzz_lua_lines[1 << 16];

static void line_hook(lua_State *S, lua_Debug *ar) {
    if (!lua_getinfo(S, "S", ar)) return;
    uint64_t h = (uint64_t)(uintptr_t)ar->source * 0x9e3779b97f4a7c15u + (uint64_t)ar->currentline;
    h ^= h >> 29;
    fuzz_lua_lines[(h * 0xbf58476d1ce4e5b9u) >> 48]++;
}

/* Whether msg is one of Lua's own runtime errors raised in the project's Lua code:
 * "<lua dir>/....lua:LINE: attempt to ..." and the like. A reader that catches one with pcall and
 * raises it again with error() hides it from up_lua_is_fault, not from this. Only the start of
 * the message counts: a message may quote the input (a JSON error does), and the fuzzer would
 * write those words there. */
static int lua_runtime_error(const char *msg) {
    static const char *const words[] = {"attempt to ", "table index is ", "has no integer representation",
                                        "stack overflow", "invalid key to 'next'"};
    const size_t dir = strlen(UP_LUA_DIR);
    if (strncmp(msg, UP_LUA_DIR, dir) != 0 || msg[dir] != '/') return 0;
    const char *p = strstr(msg, ".lua:");
    if (!p || memchr(msg, ' ', (size_t)(p - msg))) return 0;
    for (p += 5; *p >= '0' && *p <= '9'; p++) {}
    if (strncmp(p, ": ", 2) != 0) return 0;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (!strncmp(p + 2, words[i], strlen(words[i]))) return 1;
    return 0;
}

/* Message handler: remembers whether the error is a fault, and adds the traceback to one. */
static int handler(lua_State *S) {
    fault = up_lua_is_fault(S) || !lua_isstring(S, 1);
    const char *msg = lua_isstring(S, 1) ? lua_tostring(S, 1) : luaL_tolstring(S, 1, NULL);
    fault = fault || lua_runtime_error(msg);
    luaL_traceback(S, S, msg, 1);
    return 1;
}

int fuzz_lua_one(const char *driver, const uint8_t *data, size_t size) {
    if (!L) {
        L = luaL_newstate();
        if (!L) abort();
        up_lua_prepare_state(L);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.lua", UP_FUZZ_LUA, driver);
        if (luaL_dofile(L, path) != LUA_OK || !lua_isfunction(L, -1)) {
            fprintf(stderr, "fuzz_lua: driver %s: %s\n", path, lua_tostring(L, -1));
            abort();
        }
        lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.driver");
        lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    }
    const char *dir = fuzz_dir();
    lua_pushcfunction(L, handler);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.driver");
    lua_pushlstring(L, (const char *)data, size);
    lua_pushstring(L, dir);
    fault = 0;
    if (lua_pcall(L, 2, 0, -4) != LUA_OK && fault) {
        fprintf(stderr, "fuzz_lua: %s raised a fault, not a message for the user:\n%s\n", driver, lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    static unsigned runs;
    if (++runs % 256 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
