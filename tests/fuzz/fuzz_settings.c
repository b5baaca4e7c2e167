/* libFuzzer target: the Lua reader driven by tests/fuzz/lua/settings.lua (which says what it reads
 * and checks), in the host's Lua state; the property is fuzz_lua.h's: a message for the user or
 * success, never a fault. Build and run: tests/fuzz/run.sh. */
#include "fuzz_lua.h"

/* libconfig (a system library built without frame pointers) leaks on some parse errors
 * (tests/fuzz/lsan.supp): its frames only show up in a leak's stack, for the suppression to
 * match, with the slow unwinder. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_lua_one("settings", data, size); }
