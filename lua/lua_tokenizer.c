/* Placeholder until the tokenizer lands (replaced by the tokenizer work). */
#include <lua.h>
#include "cli.h"
void up_lua_register_tokenizer(lua_State *L) { (void)L; }
