/* libFuzzer target: a prompt file -> up_prompts_load, read as prompts.txt and as prompts.csv
 * (a *.csv name forces CSV; any other name lets the content choose JSON, JSON Lines, CSV with a
 * goal column, or lines).
 *
 * Properties: a loaded list has n >= 0 strings, none NULL, each valid to its terminator; a
 * plain-text (.txt) load of text with no '{', '[', '"', ',', NUL or "goal" gives exactly its
 * non-blank lines (trailing CR stripped, BOM skipped); a file with none is an error. Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/prompts.h"
#include "fuzz_util.h"

/* Lines of plain text the way prompts.h defines them (blank: spaces and tabs only), counted
 * independently. */
static int plain_lines(const uint8_t *d, size_t n) {
    if (n >= 3 && !memcmp(d, "\xef\xbb\xbf", 3)) d += 3, n -= 3;
    int count = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && d[i] != '\n') continue;
        size_t end = i;
        if (end > start && d[end - 1] == '\r') end--;
        int blank = 1;
        for (size_t j = start; j < end; j++) blank = blank && (d[j] == ' ' || d[j] == '\t');
        count += !blank;
        start = i + 1;
    }
    return count;
}

static int is_plain(const uint8_t *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (d[i] == '{' || d[i] == '[' || d[i] == '"' || d[i] == ',' || d[i] == 0) return 0;
    return !memmem(d, n, "goal", 4); /* a first line naming a goal column makes it CSV */
}

static void load(const char *name, const uint8_t *data, size_t size, int check_lines) {
    const char *path = fuzz_write(name, data, size);
    up_prompts p = {0};
    up_error err = {0};
    if (up_prompts_load(&p, path, &err) != UP_OK) {
        if (!err.msg[0]) abort();
        up_prompts_free(&p);
        return;
    }
    if (p.n < 0 || (p.n && !p.items)) abort();
    volatile size_t total = 0;
    for (int i = 0; i < p.n; i++) {
        if (!p.items[i]) abort();
        total += strlen(p.items[i]);
    }
    if (check_lines && p.n != plain_lines(data, size)) abort();
    if (p.n == 0) abort();
    up_prompts_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_dir();
    load("prompts.txt", data, size, is_plain(data, size));
    load("prompts.csv", data, size, 0);
    return 0;
}
