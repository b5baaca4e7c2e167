/* cli — the host program's subcommands and the Lua module's parts.
 *
 * Each subcommand is `int up_cmd_NAME(int argc, char **argv)` with argv[0] the
 * subcommand name; it returns the process exit status, writes results to
 * stdout and errors to stderr, and answers --help. Each binding file adds its
 * functions to the `upstream` module table on top of the Lua stack with
 * `void up_lua_register_NAME(lua_State *L)`. */
#ifndef UP_CLI_H
#define UP_CLI_H

struct lua_State;

int up_cmd_info(int argc, char **argv);
int up_cmd_dump(int argc, char **argv);
int up_cmd_generate(int argc, char **argv);
int up_cmd_tokenize(int argc, char **argv);
int up_cmd_detokenize(int argc, char **argv);
int up_cmd_run_lua(int argc, char **argv); /* argv[0] is the script path */

void up_lua_register_model(struct lua_State *L);
void up_lua_register_tokenizer(struct lua_State *L);

/* Shared helpers for option parsing: returns 1 if argv[*i] is --name (then *value is the
 * next argument, or the part after '=' in --name=value) and advances *i. Prints an error
 * and sets *missing when the value is absent. */
int up_cli_opt(int argc, char **argv, int *i, const char *name, const char **value, int *missing);
int up_cli_flag(char **argv, int i, const char *name);

/* "2,106,3" -> ids; returns count or -1 on a malformed list (message on stderr). *ids is
 * malloc'd. */
int up_cli_parse_ids(const char *text, int **ids);

#endif
