/* libFuzzer target: a grid cache cell file -> grid_cache_read (core/method/grid_cache.h).
 *
 * The harness writes one real cell with grid_cache_write (its key K, its outputs), keeps the
 * file's bytes B, and puts each fuzz input where the cell's file belongs (CACHE/K[0:2]/K.json).
 *
 * Property (the grid's contract: a corrupt or truncated cell is recomputed, never trusted):
 * grid_cache_read reports a hit only for a file whose "check" is the SHA-256 of the rest, as
 * the harness computes it itself: B (then the cell gets exactly the outputs written) or
 * another file sealed the same way; any other input is a miss that leaves the cell untouched.
 * (A check guards against damage, not forgery: libFuzzer, which sees the digests compared,
 * does write sealed files of its own, and those are rightly read.)
 *
 * So that the fuzzer also reaches the JSON reading behind the file's SHA-256 check, an input
 * that ends like a cell dump ("\n}") is also sealed the way grid_cache_write seals one (its
 * "check" field appended, grid_cache.c) and read again: a hit must then give a cell with its
 * token ids inside the vocabulary. Also no crash, leak or sanitizer report. Build and run:
 * tests/fuzz/run.sh. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/hash.h"
#include "fuzz_util.h"
#include "method/grid_cache.h"

#define KEY "3f9a1c0d5e7b2a4c6d8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
#define VOCAB 300

static int32_t written_tokens[] = {5, 17, 299, 0, 42};
static uint8_t *written; /* B */
static size_t written_size;

static up_grid_cell the_cell(void) {
    up_grid_cell c;
    memset(&c, 0, sizeof c);
    strcpy(c.key, KEY);
    c.score = -1.2345678901234567, c.p_refusal = 0.25, c.R = NAN, c.logprob = -INFINITY, c.repetition = 0.1;
    c.tokens = written_tokens, c.n_tokens = 5, c.text = "I cannot \"help\"\n\xc3\xa9";
    c.refusal_match = 6;
    return c;
}

static void write_reference(void) {
    const char *dir = fuzz_dir();
    up_grid_cell c = the_cell();
    up_error err = {0};
    if (grid_cache_write(dir, &c, "upstream grid cell 1\nprompt n=2 2,3\n", &err) != UP_OK) abort();
    char path[4200];
    snprintf(path, sizeof path, "%s/%.2s/%s.json", dir, KEY, KEY);
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    written_size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    written = malloc(written_size);
    if (!written || fread(written, 1, written_size, f) != written_size) abort();
    fclose(f);
    /* make_seeds: UP_FUZZ_GRID_SEED=FILE writes B there, the corpus's valid cell. */
    const char *seed = getenv("UP_FUZZ_GRID_SEED");
    if (seed && (!(f = fopen(seed, "wb")) || fwrite(written, 1, written_size, f) != written_size || fclose(f))) abort();
}

/* Whether data ends with ",\n \"check\": \"<hex>\"\n}" and hex is the SHA-256 of the rest with
 * "\n}" in place of that ending (grid_cache.c's layout), computed here independently. */
static int sealed(const uint8_t *data, size_t size) {
    static const char head[] = ",\n \"check\": \"", tail[] = "\"\n}";
    const size_t ending = strlen(head) + 64 + strlen(tail);
    if (size < ending + 2) return 0;
    const size_t body = size - ending;
    if (memcmp(data + body, head, strlen(head)) || memcmp(data + size - strlen(tail), tail, strlen(tail))) return 0;
    uint8_t *text = malloc(body + 2);
    if (!text) abort();
    memcpy(text, data, body);
    memcpy(text + body, "\n}", 2);
    char digest[UP_HASH_HEX];
    const int ok = !up_hash_bytes(text, body + 2, digest) && !memcmp(digest, data + body + strlen(head), 64);
    free(text);
    return ok;
}

/* The input as the body of a cell file, sealed with its digest as grid_cache_write does. */
static void read_sealed(const char *dir, const char *name, const uint8_t *data, size_t size) {
    static const char head[] = ",\n \"check\": \"", tail[] = "\"\n}";
    char digest[UP_HASH_HEX];
    if (size < 2 || memcmp(data + size - 2, "\n}", 2) || up_hash_bytes(data, size, digest)) return;
    const size_t n = size - 2 + strlen(head) + 64 + strlen(tail);
    char *sealed = malloc(n);
    if (!sealed) abort();
    memcpy(sealed, data, size - 2);
    memcpy(sealed + size - 2, head, strlen(head));
    memcpy(sealed + size - 2 + strlen(head), digest, 64);
    memcpy(sealed + n - strlen(tail), tail, strlen(tail));
    fuzz_write(name, sealed, n);
    free(sealed);
    up_grid_cell c;
    memset(&c, 0, sizeof c);
    strcpy(c.key, KEY);
    if (grid_cache_read(dir, VOCAB, &c) != 0) return;
    if (c.state != UP_GRID_CACHED || c.n_tokens < 0 || (c.n_tokens && !c.tokens)) abort();
    for (int i = 0; i < c.n_tokens; i++)
        if (c.tokens[i] < 0 || c.tokens[i] >= VOCAB) abort();
    if (c.text) (void)strlen(c.text);
    free(c.tokens);
    free(c.text);
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!written) write_reference();
    const char *dir = fuzz_dir();
    char sub[4200], name[200];
    snprintf(sub, sizeof sub, "%s/%.2s", dir, KEY);
    mkdir(sub, 0700);
    snprintf(name, sizeof name, "%.2s/%s.json", KEY, KEY);
    fuzz_write(name, data, size);

    up_grid_cell c;
    memset(&c, 0xab, sizeof c);
    strcpy(c.key, KEY);
    up_grid_cell before = c;
    const int hit = grid_cache_read(dir, VOCAB, &c) == 0;
    if (!hit) {
        if (memcmp(&before, &c, sizeof c) != 0) abort(); /* a miss leaves the cell untouched */
        read_sealed(dir, name, data, size);
        return 0;
    }
    if (size != written_size || memcmp(data, written, size) != 0) {
        if (!sealed(data, size)) {
            fprintf(stderr, "fuzz_grid_cell: a cell file whose check does not match was trusted\n");
            abort();
        }
        if (c.state != UP_GRID_CACHED || c.n_tokens < 0) abort();
        for (int i = 0; i < c.n_tokens; i++)
            if (c.tokens[i] < 0 || c.tokens[i] >= VOCAB) abort();
        free(c.tokens);
        free(c.text);
        return 0;
    }
    const up_grid_cell w = the_cell();
    if (c.state != UP_GRID_CACHED || !same_double(c.score, w.score) || !same_double(c.p_refusal, w.p_refusal) ||
        !isnan(c.R) || !same_double(c.logprob, w.logprob) || !same_double(c.repetition, w.repetition) ||
        c.n_tokens != w.n_tokens || memcmp(c.tokens, w.tokens, sizeof written_tokens) != 0 || !c.text ||
        strcmp(c.text, w.text) != 0 || c.refusal_match != w.refusal_match)
        abort();
    free(c.tokens);
    free(c.text);
    return 0;
}
