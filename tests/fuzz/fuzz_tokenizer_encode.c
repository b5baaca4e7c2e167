/* libFuzzer target: arbitrary bytes -> encode/decode/chat on the tiny Gemma-shaped fixture
 * (tests/tokenizer/tiny, every <0xXX> piece present, so encode never fails).
 *
 * Invariants: no crash or sanitizer report; encode succeeds; decode(encode(s)) == s for valid
 * UTF-8 without U+2581 (the decoder turns it into a space); the chat encoding starts with
 * the one BOS and ends with the 5 post-instruction tokens. Build and run: tests/fuzz/run.sh. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "text/tokenizer.h"

#ifndef UP_FUZZ_TINY
#define UP_FUZZ_TINY "tests/tokenizer/tiny/tokenizer.json"
#endif

static up_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    up_error err = {0};
    if (up_tokenizer_load(&tok, UP_FUZZ_TINY, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    return 0;
}

static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned b = s[i];
        int need = b < 0x80 ? 0 : b >= 0xC2 && b <= 0xDF ? 1 : b >= 0xE0 && b <= 0xEF ? 2 : b >= 0xF0 && b <= 0xF4 ? 3 : -1;
        if (need < 0) return 0;
        unsigned lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
        unsigned hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
        for (int k = 1; k <= need; k++, lo = 0x80, hi = 0xBF)
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi) return 0;
        i += (size_t)need + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t *ids;
    int n;
    up_error err = {0};
    if (up_tokenizer_encode(tok, (const char *)data, size, &ids, &n, &err) != UP_OK) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        abort();
    }
    char *text;
    size_t len;
    if (up_tokenizer_decode_n(tok, ids, n, 0, &text, &len, &err) != UP_OK) abort();
    if (valid_utf8(data, size) && !memmem(data, size, "\xE2\x96\x81", 3) &&
        (len != size || memcmp(text, data, size) != 0)) {
        fprintf(stderr, "round trip differs: %zu bytes in, %zu out\n", size, len);
        abort();
    }
    free(text);
    free(ids);

    char *instr = malloc(size + 1);
    memcpy(instr, data, size);
    instr[size] = '\0';
    const up_chat_template *tpl = up_chat_template_find("gemma");
    if (up_chat_encode(tok, tpl, instr, &ids, &n, &err) != UP_OK) abort();
    const int32_t post[] = {5, 6, 4, 295, 6}; /* <end_of_turn> \n <start_of_turn> model \n */
    int k = up_chat_post_instruction_count(tpl);
    if (n < 4 + k || ids[0] != 2 || memcmp(ids + n - k, post, sizeof post) != 0) abort();
    free(ids);
    free(instr);
    return 0;
}
