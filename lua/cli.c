#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "cli.h"
#include "engine/model.h"
#include "text/tokenizer.h"

int up_cli_fail(const char *cmd, const up_error *e) {
    fprintf(stderr, "upstream %s: %s\n", cmd, e->msg);
    return 1;
}

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

/* ---- the default model ------------------------------------------------------- */

const char *up_cli_default_model(void) {
    const char *env = getenv("UPSTREAM_MODEL");
    return env && *env ? env : UP_SOURCE_DIR "/models/organism";
}

/* ---- shared input handling: --ids or --prompt [--chat] --------------------- */

/* Consumes the options every model command shares. Returns 1 if argv[*i] was one of them. */
int up_cli_input_opt(int argc, char **argv, int *i, up_cli_input *o, int *bad) {
    const char *v = NULL;
    if (up_cli_opt(argc, argv, i, "--model", &o->model_dir, bad)) return 1;
    if (up_cli_opt(argc, argv, i, "--ids", &o->ids, bad)) return 1;
    if (up_cli_opt(argc, argv, i, "--prompt", &o->prompt, bad)) return 1;
    if (up_cli_flag(argv, *i, "--chat")) return o->chat = 1;
    if (up_cli_opt(argc, argv, i, "--threads", &v, bad)) {
        if (v) o->threads = atoi(v);
        return 1;
    }
    return 0;
}

/* Encodes text with BOS (plain) or through the chat template (chat != 0). 0 or exit status. */
static int encode_text(const char *cmd, const up_tokenizer *tok, const up_model *m, const char *text, int chat,
                       int32_t **ids, int *n) {
    up_error e = {0};
    if (chat) {
        const up_chat_template *tpl = up_chat_template_find("gemma");
        if (up_chat_encode(tok, tpl, text, ids, n, &e)) return up_cli_fail(cmd, &e);
        return 0;
    }
    int32_t *body = NULL;
    int nb = 0;
    if (up_tokenizer_encode(tok, text, strlen(text), &body, &nb, &e)) return up_cli_fail(cmd, &e);
    /* Plain text gets the model's BOS, as Hugging Face's tokenizer(text) does for Gemma. */
    *ids = malloc((size_t)(nb + 1) * sizeof **ids);
    (*ids)[0] = m->cfg.bos_id;
    memcpy(*ids + 1, body, (size_t)nb * sizeof *body);
    free(body);
    *n = nb + 1;
    return 0;
}

/* Turns --ids/--prompt into token ids; loads the tokenizer only when text is involved. */
int up_cli_resolve_ids(const char *cmd, const up_cli_input *o, const up_model *m, up_tokenizer **tok_out,
                       int32_t **ids, int *n) {
    up_error e = {0};
    if (!!o->ids == !!o->prompt) {
        fprintf(stderr, "upstream %s: give exactly one of --ids or --prompt\n", cmd);
        return 2;
    }
    if (o->ids) {
        if (o->chat) {
            fprintf(stderr, "upstream %s: --chat applies to --prompt text, not to --ids\n", cmd);
            return 2;
        }
        int *raw = NULL;
        int k = up_cli_parse_ids(o->ids, &raw);
        if (k <= 0) {
            if (k == 0) fprintf(stderr, "upstream %s: --ids is empty\n", cmd);
            free(raw);
            return 2;
        }
        *ids = malloc((size_t)k * sizeof **ids);
        for (int j = 0; j < k; j++) (*ids)[j] = raw[j];
        free(raw);
        *n = k;
    } else {
        if (up_tokenizer_load_dir(tok_out, o->model_dir, &e)) return up_cli_fail(cmd, &e);
        int rc = encode_text(cmd, *tok_out, m, o->prompt, o->chat, ids, n);
        if (rc) return rc;
    }
    for (int j = 0; j < *n; j++) {
        if ((*ids)[j] < 0 || (*ids)[j] >= m->cfg.vocab_size) {
            fprintf(stderr, "upstream %s: token id %d is outside the vocabulary [0, %d)\n", cmd, (*ids)[j],
                    m->cfg.vocab_size);
            return 2;
        }
    }
    return 0;
}
