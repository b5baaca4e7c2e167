/* cli — the host program's subcommands and the Lua module's parts.
 *
 * Each subcommand is `int up_cmd_NAME(int argc, char **argv)` with argv[0] the
 * subcommand name, or a Lua module whose main(args) runs it through
 * up_cmd_lua_module (attribute, steer, directions: lua/upstream/cli/, sharing
 * lua/upstream/cli/args.lua; main.c's table says which). Either returns the process
 * exit status, writes results to stdout and errors to stderr, and answers --help.
 * The Lua module's parts are in binding.h. */
#ifndef UP_CLI_H
#define UP_CLI_H

#include <stdint.h>

struct up_model;
struct up_tokenizer;
struct up_error;

int up_cmd_info(int argc, char **argv);
int up_cmd_dump(int argc, char **argv);
int up_cmd_generate(int argc, char **argv);
int up_cmd_tokenize(int argc, char **argv);
int up_cmd_detokenize(int argc, char **argv);
int up_cmd_run_lua(int argc, char **argv); /* argv[0] is the script path */
int up_cmd_run(int argc, char **argv);     /* `upstream run`: experiment options, then a script */
/* Runs require(module).main(args) with args[0..argc-1] = argv; returns main's integer result
 * (0 when it returns nothing) or 1 when it raises (the message goes to stderr). */
int up_cmd_lua_module(const char *module, int argc, char **argv);

/* The host's Lua state as every command gets it (standard libraries, upstream.core preloaded,
 * lua/ on package.path), and its rule for an error: 1 when it is a fault to debug (raised by
 * Lua code itself, such as indexing nil, or by assert), 0 when a message meant for the user;
 * call from a message handler. Also used by the Lua fuzz targets (tests/fuzz/fuzz_lua.c). */
struct lua_State;
void up_lua_prepare_state(struct lua_State *L);
int up_lua_is_fault(struct lua_State *L);

/* Prints "upstream CMD: message" to stderr and returns 1 (the exit status of a failure). */
int up_cli_fail(const char *cmd, const struct up_error *e);

/* Shared helpers for option parsing: returns 1 if argv[*i] is --name (then *value is the
 * next argument, or the part after '=' in --name=value) and advances *i. Prints an error
 * and sets *missing when the value is absent. */
int up_cli_opt(int argc, char **argv, int *i, const char *name, const char **value, int *missing);
int up_cli_flag(char **argv, int i, const char *name);

/* "2,106,3" -> ids; returns count or -1 on a malformed list (message on stderr). *ids is
 * malloc'd. */
int up_cli_parse_ids(const char *text, int **ids);

/* Options shared by every command that runs a model on one prompt. */
typedef struct up_cli_input {
    const char *model_dir;
    const char *ids;    /* --ids 2,106,... */
    const char *prompt; /* --prompt TEXT */
    int chat;           /* --chat: apply the Gemma chat template */
    int threads;        /* --threads N (0: default) */
} up_cli_input;

/* The model a command uses without --model: $UPSTREAM_MODEL, else the built-in organism
 * (<source tree>/models/organism); the Lua commands read it through upstream.default_model(). */
const char *up_cli_default_model(void);

/* Consumes --model/--ids/--prompt/--chat/--threads; returns 1 if argv[*i] was one of them. */
int up_cli_input_opt(int argc, char **argv, int *i, up_cli_input *o, int *bad);
/* Turns --ids/--prompt into token ids (loading the tokenizer into *tok only for text) and checks
 * them against the vocabulary. Returns 0, or an exit status after printing the error. */
int up_cli_resolve_ids(const char *cmd, const up_cli_input *o, const struct up_model *m,
                       struct up_tokenizer **tok, int32_t **ids, int *n);

#endif
