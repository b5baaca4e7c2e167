/* chat — see chat.h for the contract. */
#include "text/chat.h"

#include <stdlib.h>
#include <string.h>

static const up_chat_template templates[] = {
    {
        .name = "gemma",
        .bos = "<bos>",
        .user_prefix = "<start_of_turn>user\n",
        .user_suffix = "<end_of_turn>\n",
        .generation = "<start_of_turn>model\n",
        .trim_instruction = 1,
        .post_instruction = 5,
        .stop = {"<end_of_turn>", "<eos>", NULL},
    },
};

static const struct {
    const char *alias, *name;
} aliases[] = {{"gemma2", "gemma"}, {"gemma-2", "gemma"}, {"gemma3", "gemma"}, {"gemma-3", "gemma"}};

const up_chat_template *up_chat_template_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(name, aliases[i].alias)) name = aliases[i].name;
    for (size_t i = 0; i < sizeof templates / sizeof templates[0]; i++)
        if (!strcmp(name, templates[i].name)) return &templates[i];
    return NULL;
}

const up_chat_template *up_chat_template_at(int i) {
    return i >= 0 && (size_t)i < sizeof templates / sizeof templates[0] ? &templates[i] : NULL;
}

int up_chat_post_instruction_count(const up_chat_template *tpl) { return tpl->post_instruction; }

/* Python's str.isspace() set, which Jinja's trim (str.strip()) removes. Only code points
 * below U+3001 are whitespace, so a byte-level test of the UTF-8 forms suffices. */
static size_t py_space_at(const unsigned char *s, size_t n) {
    if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x20))) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3; /* U+1680 */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) /* U+2000-200A, 2028, 2029, 202F */
        return 3;
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3; /* U+205F */
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    return 0;
}

static void trim(const char *s, size_t n, size_t *start, size_t *end) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, k;
    while (a < n && (k = py_space_at(u + a, n - a))) a += k;
    /* Trailing: scan forward, remembering where the last non-space character ended. */
    size_t b = a, i = a;
    while (i < n) {
        k = py_space_at(u + i, n - i);
        if (k) {
            i += k;
        } else {
            i++;
            while (i < n && (u[i] & 0xC0) == 0x80) i++;
            b = i;
        }
    }
    *start = a;
    *end = b;
}

up_status up_chat_render(const up_tokenizer *tok, const up_chat_template *tpl, const char *instruction,
                         char **text, size_t *len, up_error *err) {
    *text = NULL;
    if (len) *len = 0;
    if (!tpl || !instruction) return up_error_set(err, UP_ERR_INVALID, "chat: no template or instruction");
    const char *bos = tpl->bos;
    if (!bos) bos = up_tokenizer_piece(tok, up_tokenizer_bos_id(tok));
    if (!bos) return up_error_set(err, UP_ERR_INVALID, "chat template %s: the tokenizer has no BOS token", tpl->name);
    size_t n = strlen(instruction), a = 0, b = n;
    if (tpl->trim_instruction) trim(instruction, n, &a, &b);
    size_t parts[4] = {strlen(bos), strlen(tpl->user_prefix), strlen(tpl->user_suffix), strlen(tpl->generation)};
    size_t total = parts[0] + parts[1] + (b - a) + parts[2] + parts[3];
    char *s = malloc(total + 1);
    if (!s) return up_error_set(err, UP_ERR_NOMEM, "chat: out of memory");
    char *p = s;
    memcpy(p, bos, parts[0]), p += parts[0];
    memcpy(p, tpl->user_prefix, parts[1]), p += parts[1];
    memcpy(p, instruction + a, b - a), p += b - a;
    memcpy(p, tpl->user_suffix, parts[2]), p += parts[2];
    memcpy(p, tpl->generation, parts[3]), p += parts[3];
    *p = '\0';
    *text = s;
    if (len) *len = total;
    return UP_OK;
}

/* A template piece must be an added token, so the encoder splits it out as one token. */
static up_status check_single(const up_tokenizer *tok, const up_chat_template *tpl, const char *piece,
                              up_error *err) {
    int32_t id = up_tokenizer_token_id(tok, piece);
    if (id < 0 || !up_tokenizer_is_added(tok, id))
        return up_error_set(err, UP_ERR_INVALID,
                            "chat template %s: the tokenizer has no added token \"%s\" (wrong tokenizer "
                            "for this template?)",
                            tpl->name, piece);
    return UP_OK;
}

up_status up_chat_encode(const up_tokenizer *tok, const up_chat_template *tpl, const char *instruction,
                         int32_t **ids, int *n_ids, up_error *err) {
    *ids = NULL;
    *n_ids = 0;
    char *text;
    size_t len;
    up_status st = up_chat_render(tok, tpl, instruction, &text, &len, err);
    if (st) return st;
    const char *bos = tpl->bos ? tpl->bos : up_tokenizer_piece(tok, up_tokenizer_bos_id(tok));
    /* The BOS text must be recognised as the BOS token, or we would encode "<bos>" as
     * characters: then refuse rather than feed the model a prompt with no BOS. */
    if ((st = check_single(tok, tpl, bos, err))) goto out;
    /* The turn marker too: a tokenizer without it belongs to another family. */
    if (tpl->stop[0] && (st = check_single(tok, tpl, tpl->stop[0], err))) goto out;
    st = up_tokenizer_encode(tok, text, len, ids, n_ids, err);
    if (st == UP_OK && (*n_ids < 1 || (*ids)[0] != up_tokenizer_token_id(tok, bos))) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
        st = up_error_set(err, UP_ERR_INVALID, "chat template %s: rendered prompt does not start with BOS", tpl->name);
    }
out:
    free(text);
    return st;
}

int up_chat_stop_ids(const up_tokenizer *tok, const up_chat_template *tpl, int32_t *out, int max) {
    int n = 0;
    if (max < 1) return 0;
    int32_t cand[UP_CHAT_MAX_STOP + 1];
    int nc = 0;
    for (int i = 0; i < UP_CHAT_MAX_STOP && tpl->stop[i]; i++) cand[nc++] = up_tokenizer_token_id(tok, tpl->stop[i]);
    cand[nc++] = up_tokenizer_eos_id(tok);
    for (int i = 0; i < nc && n < max - 1; i++) {
        if (cand[i] < 0) continue;
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= out[j] == cand[i];
        if (!dup) out[n++] = cand[i];
    }
    out[n] = -1;
    return n;
}
