/* upstream — the host program: subcommands, or a Lua script with the `upstream` module. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"info", up_cmd_info, "print a checkpoint's architecture, size and dtypes"},
    {"dump", up_cmd_dump, "run a prompt and write hook activations and logits to safetensors"},
    {"generate", up_cmd_generate, "greedy completion of a prompt"},
    {"attribute", up_cmd_attribute, "rank SAE latents by the gradient of a direction's projection"},
    {"directions", up_cmd_directions, "difference-in-means refusal direction candidates"},
    {"steer", up_cmd_steer, "steering grid: latents or a vector x alphas, refusal and coherence metrics"},
    {"tokenize", up_cmd_tokenize, "text -> token ids and pieces"},
    {"detokenize", up_cmd_detokenize, "token ids -> text"},
    {"organism", up_cmd_organism, "build a model organism from its spec, or evaluate one"},
    {"run", up_cmd_run, "run an experiment script with --config/--model/--set (docs/lua-api.md)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: upstream COMMAND [options]   (upstream COMMAND --help for details)\n"
               "       upstream FILE.lua [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("upstream %s\n", UP_VERSION);
        return 0;
    }
    size_t n = strlen(cmd);
    if (n > 4 && !strcmp(cmd + n - 4, ".lua")) return up_cmd_run_lua(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(cmd, commands[i].name)) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "upstream: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
