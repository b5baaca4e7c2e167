/* fuzz_lua — the harness of the fuzz targets whose reader is Lua code (organism.json, a
 * Neuronpedia export, the settings file, --set values).
 *
 * One Lua state per process, made by the host's own up_lua_prepare_state (so `require
 * "upstream..."` loads lua/ from the source tree, with every C binding), runs the driver
 * tests/fuzz/lua/NAME.lua once; the driver returns function(input, dir) that hands the input to
 * the project's reader (writing it under dir, fuzz_util.h's scratch directory, where the reader
 * takes a path).
 *
 * The fuzzer is guided by the Lua lines each input runs (a line hook feeding libFuzzer's extra
 * counters) as well as by the C code's coverage.
 *
 * Property: the reader returns, or raises an error meant for the user (error(msg, 0) or a
 * binding's message, a string); an error that is a fault (host rule up_lua_is_fault: a runtime
 * error in Lua code such as indexing nil, or a failed assert; or a message that is one of Lua's
 * runtime errors in the project's Lua code, which a pcall and error() in between would otherwise
 * pass off as the user's) or not a string aborts with its traceback. Also no crash or sanitizer report in the C underneath. */
#ifndef UP_FUZZ_LUA_H
#define UP_FUZZ_LUA_H

#include <stddef.h>
#include <stdint.h>

int fuzz_lua_one(const char *driver, const uint8_t *data, size_t size);

#endif
