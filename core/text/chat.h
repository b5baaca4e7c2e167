/* chat — chat templates as data: how one user turn becomes token ids.
 *
 * A template is a row of a static table (chat.c): the BOS piece, the text around the user's
 * instruction, the generation prompt, whether the instruction is trimmed, how many tokens
 * follow the instruction (the "post-instruction" positions the refusal direction is read
 * at) and the pieces that end an assistant turn. Gemma (1, 2 and 3 share it):
 *
 *   <bos><start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model\n
 *
 * with the instruction trimmed as the Hugging Face template's `| trim` does, and 5
 * post-instruction tokens: <end_of_turn> \n <start_of_turn> model \n. Adding a family means
 * adding a row, not code.
 *
 * up_chat_encode reproduces transformers' apply_chat_template(..., add_generation_prompt=True,
 * tokenize=True): the whole rendered string, "<bos>" text included, is encoded once with
 * special-token recognition and no added special tokens, so there is exactly one BOS and
 * token boundaries at the joins are the reference's. (Encoding the pieces separately can
 * split differently at the joins; adding BOS on top of a rendered "<bos>" gives two.)
 *
 * Ownership: templates are static and never freed; *ids is malloc'd for the caller.
 * Errors: an up_status, with the message in the caller's up_error (may be NULL). */
#ifndef UP_CHAT_H
#define UP_CHAT_H

#include <stdint.h>

#include "base/error.h"
#include "text/tokenizer.h"

#define UP_CHAT_MAX_STOP 4

typedef struct up_chat_template {
    const char *name;          /* "gemma" */
    const char *bos;           /* BOS piece rendered first, or NULL: the tokenizer's BOS */
    const char *user_prefix;   /* "<start_of_turn>user\n" */
    const char *user_suffix;   /* "<end_of_turn>\n" */
    const char *generation;    /* "<start_of_turn>model\n" (the add_generation_prompt part) */
    int trim_instruction;      /* 1: strip leading/trailing whitespace (Jinja's | trim) */
    int post_instruction;      /* tokens after the instruction: 5 for Gemma */
    const char *stop[UP_CHAT_MAX_STOP]; /* pieces ending a model turn, NULL-terminated */
} up_chat_template;

/* "gemma" (aliases "gemma2", "gemma3"); NULL if unknown. */
const up_chat_template *up_chat_template_find(const char *name);

/* The i-th known template (for listing), NULL past the end. */
const up_chat_template *up_chat_template_at(int i);

/* Renders one user turn into *text (malloc'd, NUL-terminated; *len bytes) exactly as
 * up_chat_encode encodes it. */
up_status up_chat_render(const up_tokenizer *tok, const up_chat_template *tpl,
                         const char *instruction, char **text, size_t *len, up_error *err);

/* Renders one user turn and tokenizes it so there is exactly one BOS (see above).
 * *ids malloc'd. UP_ERR_INVALID if the tokenizer has no BOS or does not split the template's
 * special pieces out as single tokens (the wrong tokenizer for this template). */
up_status up_chat_encode(const up_tokenizer *tok, const up_chat_template *tpl,
                         const char *instruction, int32_t **ids /* (*n_ids) */, int *n_ids, up_error *err);

int up_chat_post_instruction_count(const up_chat_template *tpl); /* 5 for gemma */

/* Token ids that end an assistant turn for this template (e.g. <end_of_turn> and eos),
 * written to out as a -1 terminated array of at most max entries (terminator included).
 * Returns the number of ids (terminator excluded). Pieces the tokenizer lacks are skipped;
 * duplicates appear once. */
int up_chat_stop_ids(const up_tokenizer *tok, const up_chat_template *tpl, int32_t *out /* (max) */, int max);

#endif
