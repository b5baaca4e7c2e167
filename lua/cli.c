#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int up_cli_flag(char **argv, int i, const char *name) { return strcmp(argv[i], name) == 0; }

int up_cli_opt(int argc, char **argv, int *i, const char *name, const char **value, int *missing) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "upstream %s: option %s needs a value\n", argv[0], name);
        *missing = 1;
        return 1;
    }
    *value = argv[++*i];
    return 1;
}

int up_cli_parse_ids(const char *text, int **ids) {
    int cap = 16, n = 0;
    int *out = malloc(cap * sizeof *out);
    const char *p = text;
    while (out && *p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 0x7fffffff) {
            fprintf(stderr, "upstream: bad token id list at '%s' (expected e.g. 2,106,1645)\n", p);
            free(out);
            return -1;
        }
        if (n == cap) {
            int *grown = realloc(out, (cap *= 2) * sizeof *out);
            if (!grown) break;
            out = grown;
        }
        out[n++] = (int)v;
        p = end;
        if (*p && *p != ',' && *p != ' ') {
            fprintf(stderr, "upstream: bad token id list at '%s'\n", p);
            free(out);
            return -1;
        }
    }
    *ids = out;
    return n;
}
