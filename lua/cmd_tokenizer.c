/* `upstream tokenize` and `upstream detokenize`: text <-> token ids from the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "cli.h"
#include "text/tokenizer.h"

static const char tokenize_usage[] =
    "usage: upstream tokenize (--model DIR | --tokenizer FILE) [--chat [--template NAME]] [--ids-only] [TEXT | -]\n"
    "Encodes TEXT (standard input if TEXT is '-' or absent) and prints one line per token:\n"
    "the id, a tab, and the piece (\\n, \\t, \\r, \\\\ and \\xNN escapes for control bytes).\n"
    "No BOS is added, and special-token text such as <start_of_turn> is recognised.\n"
    "  --model DIR        use DIR/tokenizer.json\n"
    "  --tokenizer FILE   use FILE (a Hugging Face tokenizer.json)\n"
    "  --chat             render TEXT as one user turn of the chat template first (BOS included)\n"
    "  --template NAME    chat template (default gemma)\n"
    "  --ids-only         print only the ids, comma separated on one line (detokenize's input)\n";

static const char detokenize_usage[] =
    "usage: upstream detokenize (--model DIR | --tokenizer FILE) [--skip-special] [IDS...]\n"
    "Decodes token ids (\"2,106,1645\" or separate arguments; standard input if none) to text.\n"
    "  --model DIR        use DIR/tokenizer.json\n"
    "  --tokenizer FILE   use FILE (a Hugging Face tokenizer.json)\n"
    "  --skip-special     drop special tokens (<bos>, <start_of_turn>, ...)\n";

static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    while (s) {
        size_t got = fread(s + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
        if (n + 1 == cap) {
            char *g = realloc(s, cap *= 2);
            if (!g) {
                free(s);
                return NULL;
            }
            s = g;
        }
    }
    if (s) {
        s[n] = '\0';
        *len = n;
    }
    return s;
}

static up_tokenizer *open_tokenizer(const char *cmd, const char *model, const char *file) {
    if (!model == !file) {
        fprintf(stderr, "upstream %s: give exactly one of --model DIR or --tokenizer FILE\n", cmd);
        return NULL;
    }
    up_tokenizer *tok;
    up_error err = {0};
    up_status st = model ? up_tokenizer_load_dir(&tok, model, &err) : up_tokenizer_load(&tok, file, &err);
    if (st) {
        fprintf(stderr, "upstream %s: %s\n", cmd, err.msg);
        return NULL;
    }
    return tok;
}

static void print_piece(const char *p) {
    for (const unsigned char *s = (const unsigned char *)p; *s; s++) {
        if (*s == '\n') fputs("\\n", stdout);
        else if (*s == '\t') fputs("\\t", stdout);
        else if (*s == '\r') fputs("\\r", stdout);
        else if (*s == '\\') fputs("\\\\", stdout);
        else if (*s < 0x20 || *s == 0x7f) printf("\\x%02X", *s);
        else putchar(*s);
    }
}

int up_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *tpl_name = "gemma", *text = NULL;
    int chat = 0, ids_only = 0, missing = 0;
    for (int i = 1; i < argc; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) {
            fputs(tokenize_usage, stdout);
            return 0;
        }
        if (up_cli_opt(argc, argv, &i, "--model", &model, &missing) ||
            up_cli_opt(argc, argv, &i, "--tokenizer", &file, &missing) ||
            up_cli_opt(argc, argv, &i, "--template", &tpl_name, &missing)) {
            if (missing) return 2;
        } else if (up_cli_flag(argv, i, "--chat")) {
            chat = 1;
        } else if (up_cli_flag(argv, i, "--ids-only")) {
            ids_only = 1;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "upstream tokenize: unknown option %s\n%s", argv[i], tokenize_usage);
            return 2;
        } else if (!text) {
            text = argv[i];
        } else {
            fprintf(stderr, "upstream tokenize: give one TEXT argument (quote it)\n");
            return 2;
        }
    }
    const up_chat_template *tpl = NULL;
    if (chat && !(tpl = up_chat_template_find(tpl_name))) {
        fprintf(stderr, "upstream tokenize: unknown chat template '%s'\n", tpl_name);
        return 2;
    }
    up_tokenizer *tok = open_tokenizer("tokenize", model, file);
    if (!tok) return 1;
    size_t len;
    char *owned = NULL;
    if (!text || !strcmp(text, "-")) {
        owned = read_stdin(&len);
        if (!owned) {
            fprintf(stderr, "upstream tokenize: cannot read standard input\n");
            up_tokenizer_free(tok);
            return 1;
        }
        text = owned;
    } else {
        len = strlen(text);
    }
    int32_t *ids;
    int n;
    up_error err = {0};
    up_status st = chat ? up_chat_encode(tok, tpl, text, &ids, &n, &err) : up_tokenizer_encode(tok, text, len, &ids, &n, &err);
    if (st) {
        fprintf(stderr, "upstream tokenize: %s\n", err.msg);
    } else if (ids_only) {
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        putchar('\n');
    } else {
        for (int i = 0; i < n; i++) {
            printf("%d\t", ids[i]);
            print_piece(up_tokenizer_piece(tok, ids[i]));
            putchar('\n');
        }
    }
    if (!st) free(ids);
    free(owned);
    up_tokenizer_free(tok);
    return st ? 1 : 0;
}

int up_cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    int skip = 0, missing = 0;
    size_t cap = 1, n = 0;
    char *list = calloc(1, 1); /* the id arguments joined with commas */
    if (!list) return 1;
    for (int i = 1; i < argc; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) {
            fputs(detokenize_usage, stdout);
            free(list);
            return 0;
        }
        if (up_cli_opt(argc, argv, &i, "--model", &model, &missing) ||
            up_cli_opt(argc, argv, &i, "--tokenizer", &file, &missing)) {
            if (missing) {
                free(list);
                return 2;
            }
        } else if (up_cli_flag(argv, i, "--skip-special")) {
            skip = 1;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "upstream detokenize: unknown option %s\n%s", argv[i], detokenize_usage);
            free(list);
            return 2;
        } else {
            size_t l = strlen(argv[i]);
            char *g = realloc(list, cap += l + 1);
            if (!g) {
                free(list);
                return 1;
            }
            list = g;
            if (n) list[n++] = ',';
            memcpy(list + n, argv[i], l + 1);
            n += l;
        }
    }
    if (n == 0) {
        free(list);
        size_t len;
        list = read_stdin(&len);
        if (!list) {
            fprintf(stderr, "upstream detokenize: cannot read standard input\n");
            return 1;
        }
        for (char *p = list; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    }
    int *raw;
    int count = up_cli_parse_ids(list, &raw);
    free(list);
    if (count < 0) return 2;
    up_tokenizer *tok = open_tokenizer("detokenize", model, file);
    if (!tok) {
        free(raw);
        return 1;
    }
    int32_t *ids = malloc(((size_t)count + 1) * sizeof *ids);
    for (int i = 0; ids && i < count; i++) ids[i] = raw[i];
    free(raw);
    char *text = NULL;
    size_t len = 0;
    up_error err = {0};
    up_status st = ids ? up_tokenizer_decode_n(tok, ids, count, skip, &text, &len, &err)
                       : up_error_set(&err, UP_ERR_NOMEM, "out of memory");
    if (st) fprintf(stderr, "upstream detokenize: %s\n", err.msg);
    else fwrite(text, 1, len, stdout), putchar('\n');
    free(text);
    free(ids);
    up_tokenizer_free(tok);
    return st ? 1 : 0;
}
