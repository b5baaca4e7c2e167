/* upstream — the host program: subcommands, or a Lua script with the `upstream` module. */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dist/dist.h"
#include "engine/blas.h"

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

/* Ranks that share a host share its cores: unless told (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
 * or later --threads / the threads setting), each rank takes the cores it may run on (its
 * affinity: a launcher that binds a rank to one core leaves it one) divided among the ranks of
 * its host, so N ranks on one machine do not run N times its cores in threads. */
static void default_rank_threads(void) {
    if (up_dist_size() == 1 || getenv("OMP_NUM_THREADS") || getenv("OPENBLAS_NUM_THREADS")) return;
    int local = 0;
    for (int r = 0; r < up_dist_size(); r++) local += !strcmp(up_dist_host(r), up_dist_host(up_dist_rank()));
    cpu_set_t set;
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    const int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
    int n = (int)(online / (local > 0 ? local : 1));
    if (mine < n) n = mine;
    up_blas_set_threads(n > 0 ? n : 1);
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
    default_rank_threads();
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
