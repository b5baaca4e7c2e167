/* Tokenizer conformance: our encoder against the reference's ids (written by
 * reference.mjs expect), on the Gemma-3 tokenizer.json.
 *
 *   conformance TOKENIZER_JSON EXPECT_JSON
 *
 * Per entry: encode(bytes) must equal the reference's ids; BOS + encode must equal its
 * ids with special tokens; where the reference's decode gives the text back, ours must too
 * (decode(encode(s)) == s, s after U+FFFD repair); @chat entries must match
 * apply_chat_template. Prints the agreement figures and exits non-zero on any mismatch. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/chat.h"
#include "text/tokenizer.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

static unsigned char *unhex(const char *hex, size_t *n) {
    *n = strlen(hex) / 2;
    unsigned char *b = malloc(*n + 1);
    for (size_t k = 0; k < *n; k++) b[k] = (unsigned char)(hexval(hex[2 * k]) << 4 | hexval(hex[2 * k + 1]));
    b[*n] = 0;
    return b;
}

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned b = s[i];
        int need = b < 0x80 ? 0 : b >= 0xC2 && b <= 0xDF ? 1 : b >= 0xE0 && b <= 0xEF ? 2 : b >= 0xF0 && b <= 0xF4 ? 3 : -1;
        if (need < 0) return 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
        for (int k = 1; k <= need; k++) {
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi) return 0;
            lo = 0x80, hi = 0xBF;
        }
        i += need + 1;
    }
    return 1;
}

static int same_ids(const json_t *want, const int32_t *got, int n, int32_t prefix) {
    int off = prefix >= 0;
    if ((int)json_array_size(want) != n + off) return 0;
    if (off && json_integer_value(json_array_get(want, 0)) != prefix) return 0;
    for (int i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i + off)) != got[i]) return 0;
    return 1;
}

static void show(const char *what, int line, const json_t *want, const int32_t *got, int n) {
    fprintf(stderr, "MISMATCH (%s) corpus line %d\n  want:", what, line);
    for (size_t i = 0; i < json_array_size(want) && i < 40; i++)
        fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, i)));
    fprintf(stderr, "\n  got: ");
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", got[i]);
    fprintf(stderr, "\n");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s TOKENIZER_JSON EXPECT_JSON\n", argv[0]);
        return 2;
    }
    up_error err = {0};
    up_tokenizer *tok;
    double t0 = now();
    if (up_tokenizer_load(&tok, argv[1], &err)) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    double t1 = now();
    printf("loaded %s in %.3f s (vocab %d)\n", argv[1], t1 - t0, up_tokenizer_vocab_size(tok));
    json_error_t je;
    json_t *root = json_load_file(argv[2], 0, &je);
    if (!root) {
        fprintf(stderr, "%s: %s\n", argv[2], je.text);
        return 1;
    }
    const json_t *entries = json_object_get(root, "entries");
    int32_t bos = up_tokenizer_bos_id(tok);
    const up_chat_template *gemma = up_chat_template_find("gemma");
    int n = 0, ok_ids = 0, ok_bos = 0, rt_ref = 0, rt_ok = 0, rt_ours = 0, rt_ours_ok = 0, chats = 0, ok_chat = 0;
    int shown = 0, same_decode = 0;
    size_t i;
    const json_t *e;
    json_array_foreach(entries, i, e) {
        int line = (int)json_integer_value(json_object_get(e, "line"));
        size_t nb, nt;
        unsigned char *bytes = unhex(json_string_value(json_object_get(e, "hex")), &nb);
        /* The text the reference saw: the bytes after WHATWG's U+FFFD repair. */
        unsigned char *want = unhex(json_string_value(json_object_get(e, "text_hex")), &nt);
        int32_t *ids;
        int m;
        if (up_tokenizer_encode(tok, (const char *)bytes, nb, &ids, &m, &err)) {
            fprintf(stderr, "encode line %d: %s\n", line, err.msg);
            return 1;
        }
        n++;
        if (same_ids(json_object_get(e, "ids"), ids, m, -1)) ok_ids++;
        else if (shown++ < 10) show("ids", line, json_object_get(e, "ids"), ids, m);
        if (same_ids(json_object_get(e, "ids_bos"), ids, m, bos)) ok_bos++;
        else if (shown++ < 10) show("ids with BOS", line, json_object_get(e, "ids_bos"), ids, m);
        char *text;
        size_t tl;
        if (up_tokenizer_decode_n(tok, ids, m, 0, &text, &tl, &err)) {
            fprintf(stderr, "decode line %d: %s\n", line, err.msg);
            return 1;
        }
        int ours = tl == nt && memcmp(text, want, nt) == 0;
        size_t nd;
        unsigned char *dref = unhex(json_string_value(json_object_get(e, "decoded_hex")), &nd);
        if (tl == nd && memcmp(text, dref, nd) == 0) same_decode++;
        else if (shown++ < 10) fprintf(stderr, "DECODE DIFFERS corpus line %d: got \"%s\" want \"%s\"\n", line, text, dref);
        free(dref);
        if (json_is_true(json_object_get(e, "roundtrip"))) {
            rt_ref++;
            if (ours) rt_ok++;
            else if (shown++ < 10) fprintf(stderr, "ROUND TRIP FAILS corpus line %d: got \"%s\"\n", line, text);
        }
        if (valid_utf8(bytes, nb)) {
            rt_ours++;
            rt_ours_ok += ours;
        }
        const json_t *chat = json_object_get(e, "chat");
        if (chat) {
            int32_t *cids;
            int cm;
            chats++;
            if (up_chat_encode(tok, gemma, (const char *)bytes, &cids, &cm, &err)) {
                fprintf(stderr, "chat line %d: %s\n", line, err.msg);
                return 1;
            }
            if (same_ids(chat, cids, cm, -1)) ok_chat++;
            else if (shown++ < 10) show("chat", line, chat, cids, cm);
            free(cids);
        }
        free(text);
        free(ids);
        free(bytes);
        free(want);
    }
    printf("corpus: %d strings\n", n);
    printf("ids identical (no special tokens):  %d/%d\n", ok_ids, n);
    printf("ids identical (with BOS):           %d/%d\n", ok_bos, n);
    printf("decode(encode(s)) == s where the reference round-trips: %d/%d\n", rt_ok, rt_ref);
    printf("decode(encode(s)) == s over valid UTF-8 inputs (informative): %d/%d\n", rt_ours_ok, rt_ours);
    printf("decode(ids) identical to the reference's decode: %d/%d\n", same_decode, n);
    printf("chat template ids identical: %d/%d\n", ok_chat, chats);
    int failed = (n - ok_ids) + (n - ok_bos) + (rt_ref - rt_ok) + (chats - ok_chat);
    printf("%d passed, %d failed\n", ok_ids + ok_bos + rt_ok + ok_chat, failed);
    json_decref(root);
    up_tokenizer_free(tok);
    return failed ? 1 : 0;
}
