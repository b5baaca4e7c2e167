/* Lua bindings of what an experiment's bookkeeping needs from the system: digests, directories,
 * library versions, the thread count and the clock.
 *
 *   upstream.sha256(bytes)              -> 64 hex digits of the string's SHA-256
 *   upstream.hash_file(path[, memo])    -> hex digest of a file (what sha256sum prints); memo is a
 *                                          directory of memoised digests (core/hash.h)
 *   upstream.hash_path(path[, memo])    -> a file's digest, or a directory's (core/hash.h rule)
 *   upstream.mkdir(path)                -> true | nil, message, "exists"|"error"
 *                                          (one level, mode 0777 & umask; never replaces anything,
 *                                          so it is how a run claims its directory)
 *   upstream.mkdirs(path)               -> true | nil, message   (mkdir -p)
 *   upstream.versions()                 -> {upstream, lua, openblas, libpng, cairo, libconfig,
 *                                          jansson, openssl}
 *   upstream.set_threads(n)             BLAS and OpenMP threads (0 or less: leave the default)
 *   upstream.threads()                  -> the thread count in use
 *   upstream.clock()                    -> seconds on the monotonic clock (base/clock.h), with
 *                                          sub-second resolution; only differences mean anything
 *   upstream.cwd()                      -> the working directory (getcwd: right even where $PWD is
 *                                          stale, as under a parent that changed directory)
 *   upstream.isatty(fd)                 -> whether file descriptor fd (2: stderr) is a terminal, so a
 *                                          progress bar redraws one line there and prints lines elsewhere
 *   upstream.default_model()            -> the model a command uses without --model: $UPSTREAM_MODEL,
 *                                          else the built-in organism (cli.c's rule, the one copy)
 *   upstream.source_dir                 the source tree this binary was built from
 *   upstream.run_options                what `upstream run` parsed (see lua_host.c), or nil
 * Error rule: misuse raises with luaL_argerror; hashing failures raise with the core's message;
 * mkdir/mkdirs return nil, message so a caller can pick another name. */
#include <cairo.h>
#include <errno.h>
#include <jansson.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fs.h"
#include "base/hash.h"
#include "binding.h"
#include "cli.h"
#include "engine/blas.h"
#include "formats/png.h"

static int l_sha256(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char hex[UP_HASH_HEX];
    if (up_hash_bytes(s, n, hex)) return luaL_error(L, "sha256: libcrypto could not allocate");
    lua_pushstring(L, hex);
    return 1;
}

static int hash_with(lua_State *L, int dir) {
    const char *path = luaL_checkstring(L, 1);
    const char *memo = luaL_optstring(L, 2, NULL);
    char hex[UP_HASH_HEX];
    up_error e = {0};
    up_status st = dir ? up_hash_path(path, memo, hex, &e) : up_hash_file(path, memo, hex, NULL, &e);
    if (st) return luaL_error(L, "%s", e.msg);
    lua_pushstring(L, hex);
    return 1;
}
static int l_hash_file(lua_State *L) { return hash_with(L, 0); }
static int l_hash_path(lua_State *L) { return hash_with(L, 1); }

static int l_mkdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0777) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    int err = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(err));
    lua_pushstring(L, err == EEXIST ? "exists" : "error");
    return 3;
}

static int l_mkdirs(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (up_mkdirs(path) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_versions(lua_State *L) {
    lua_createtable(L, 0, 8);
    lua_pushstring(L, UP_VERSION), lua_setfield(L, -2, "upstream");
    lua_pushstring(L, LUA_RELEASE), lua_setfield(L, -2, "lua");
    lua_pushstring(L, up_blas_version()), lua_setfield(L, -2, "openblas");
    lua_pushstring(L, up_png_version()), lua_setfield(L, -2, "libpng");
    lua_pushstring(L, cairo_version_string()), lua_setfield(L, -2, "cairo");
    lua_pushfstring(L, "%d.%d.%d", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR, LIBCONFIG_VER_REVISION);
    lua_setfield(L, -2, "libconfig");
    lua_pushstring(L, jansson_version_str()), lua_setfield(L, -2, "jansson");
    lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION)), lua_setfield(L, -2, "openssl");
    return 1;
}

static int l_set_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n > 4096) return luaL_argerror(L, 1, "thread count out of range");
    if (n > 0) up_blas_set_threads((int)n);
    return 0;
}

static int l_threads(lua_State *L) {
    lua_pushinteger(L, up_blas_threads());
    return 1;
}

static int l_default_model(lua_State *L) {
    lua_pushstring(L, up_cli_default_model());
    return 1;
}

static int l_clock(lua_State *L) {
    lua_pushnumber(L, up_clock_seconds());
    return 1;
}

static int l_cwd(lua_State *L) {
    char buf[4096];
    if (!getcwd(buf, sizeof buf)) return luaL_error(L, "cannot read the working directory: %s", strerror(errno));
    lua_pushstring(L, buf);
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

void up_lua_register_system(lua_State *L) {
    static const luaL_Reg fns[] = {{"sha256", l_sha256},           {"hash_file", l_hash_file}, {"hash_path", l_hash_path},
                                   {"mkdir", l_mkdir},             {"mkdirs", l_mkdirs},       {"versions", l_versions},
                                   {"set_threads", l_set_threads}, {"threads", l_threads},     {"clock", l_clock},
                                   {"isatty", l_isatty},           {"default_model", l_default_model}, {"cwd", l_cwd},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    lua_pushstring(L, UP_SOURCE_DIR), lua_setfield(L, -2, "source_dir");
}
