/* libFuzzer target: the Lua reader driven by tests/fuzz/lua/neuronpedia.lua (which says what it reads and
 * checks), in the host's Lua state; the property is fuzz_lua.h's: a message for the user or
 * success, never a fault. Build and run: tests/fuzz/run.sh. */
#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_lua_one("neuronpedia", data, size); }
