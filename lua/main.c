/* upstream — the host program: subcommands, or a Lua script with the `upstream` module. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist/dist.h"

/* A command is a C function (run) or a Lua module whose main(args) runs it (module, found under
 * lua/ as lua/upstream/cli/NAME.lua; see up_cmd_lua_module). */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *module;
    const char *summary;
} commands[] = {
    {"info", up_cmd_info, NULL, "print a checkpoint's architecture, size and dtypes"},
    {"dump", up_cmd_dump, NULL, "run a prompt and write hook activations and logits to safetensors"},
    {"generate", up_cmd_generate, NULL, "greedy completion of a prompt"},
    {"attribute", NULL, "upstream.cli.attribute", "rank SAE latents by the gradient of a direction's projection"},
    {"directions", NULL, "upstream.cli.directions", "difference-in-means refusal direction candidates"},
    {"steer", NULL, "upstream.cli.steer", "steering grid: latents or a vector x alphas, refusal and coherence metrics"},
    {"tokenize", up_cmd_tokenize, NULL, "text -> token ids and pieces"},
    {"detokenize", up_cmd_detokenize, NULL, "token ids -> text"},
    {"organism", NULL, "upstream.organism_build", "build a model organism from its spec, or evaluate one"},
    {"run", up_cmd_run, NULL, "run an experiment script with --config/--model/--set (docs/lua-api.md)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: upstream COMMAND [options]   (upstream COMMAND --help for details)\n"
               "       upstream FILE.lua [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    /* A file-size limit (ulimit -f) would kill the process mid-write with SIGXFSZ; ignored, the
     * write fails with EFBIG instead, and the writer reports it and removes its temporary file,
     * as for a full disk (ENOSPC). */
    signal(SIGXFSZ, SIG_IGN);
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
    /* Under mpirun or srun this process is one rank of a job (core/dist/dist.h); otherwise
     * nothing happens here. Only rank 0 speaks on stdout: every rank runs the same script, and
     * one copy of its output is the job's. */
    up_error e = {0};
    if (up_dist_init(&e)) {
        fprintf(stderr, "upstream: %s\n", e.msg);
        return 2;
    }
    if (up_dist_rank() != 0 && !getenv("UPSTREAM_ALL_RANKS_PRINT")) (void)!freopen("/dev/null", "w", stdout);
    int status = -1;
    size_t n = strlen(cmd);
    if (n > 4 && !strcmp(cmd + n - 4, ".lua")) status = up_cmd_run_lua(argc - 1, argv + 1);
    for (size_t i = 0; status < 0 && i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(cmd, commands[i].name))
            status = commands[i].module ? up_cmd_lua_module(commands[i].module, argc - 1, argv + 1)
                                        : commands[i].run(argc - 1, argv + 1);
    }
    if (status < 0) {
        fprintf(stderr, "upstream: unknown command '%s'\n", cmd);
        usage(stderr);
        status = 2;
    }
    up_dist_finalize();
    return status;
}
