/* upstream.core.dist — which rank of how many this process is (core/dist/dist.h), and the two
 * collectives a Lua library needs to keep ranks in step:
 *
 *   upstream.dist          {rank = r, size = n, host = "name", hosts = {...}, mpi = bool}
 *                          (rank 0 of 1 without a launcher); hosts[i + 1] is rank i's host
 *   upstream.dist_share(s) collective: rank 0's string s, returned on every rank (others may
 *                          pass nil); how rank 0's choices (a run id, a time) reach the others
 *   upstream.dist_agree(ok, msg)
 *                          collective: true on every rank when every rank passed ok; else
 *                          false and the first failing rank's message, "rank R on host H: msg"
 *   upstream.dist_stats()  the last work-unit map as this rank saw it: {units, units_remote,
 *                          bytes, seconds} (units: results rank 0 accepted; units_remote: of them,
 *                          or on another rank, those computed away from rank 0; bytes: result
 *                          bytes sent to rank 0) — for benchmarks
 *
 * The experiment library uses them so that only rank 0 writes (lua/upstream/experiment); a
 * script of one's own needs them only to do something on one rank. */
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "dist/dist.h"

static int l_share(lua_State *L) {
    size_t n = 0;
    const char *s = up_dist_rank() == 0 ? luaL_checklstring(L, 1, &n) : NULL;
    void *data = (void *)s;
    up_error e = {0};
    if (up_dist_share(&data, &n, &e)) return luaL_error(L, "dist_share: %s", e.msg);
    lua_pushlstring(L, data ? data : "", n);
    if (up_dist_rank() != 0) free(data);
    return 1;
}

static int l_agree(lua_State *L) {
    const int ok = lua_toboolean(L, 1);
    up_error e = {0};
    if (!ok) up_error_set(&e, UP_ERR_INVALID, "%s", luaL_optstring(L, 2, "failed"));
    if (up_dist_agree(ok ? UP_OK : UP_ERR_INVALID, &e)) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, e.msg);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_stats(lua_State *L) {
    const up_dist_stats st = up_dist_last_stats();
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, st.units), lua_setfield(L, -2, "units");
    lua_pushinteger(L, st.units_remote), lua_setfield(L, -2, "units_remote");
    lua_pushnumber(L, st.bytes), lua_setfield(L, -2, "bytes");
    lua_pushnumber(L, st.seconds), lua_setfield(L, -2, "seconds");
    return 1;
}

void up_lua_register_dist(lua_State *L) {
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, up_dist_rank()), lua_setfield(L, -2, "rank");
    lua_pushinteger(L, up_dist_size()), lua_setfield(L, -2, "size");
    lua_pushstring(L, up_dist_host(up_dist_rank())), lua_setfield(L, -2, "host");
    lua_pushboolean(L, up_dist_have_mpi()), lua_setfield(L, -2, "mpi");
    lua_createtable(L, up_dist_size(), 0);
    for (int r = 0; r < up_dist_size(); r++) lua_pushstring(L, up_dist_host(r)), lua_rawseti(L, -2, r + 1);
    lua_setfield(L, -2, "hosts");
    lua_setfield(L, -2, "dist");
    lua_pushcfunction(L, l_share), lua_setfield(L, -2, "dist_share");
    lua_pushcfunction(L, l_agree), lua_setfield(L, -2, "dist_agree");
    lua_pushcfunction(L, l_stats), lua_setfield(L, -2, "dist_stats");
}
