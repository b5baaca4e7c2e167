/* libFuzzer target: tokenizer.json text -> up_tokenizer_load_mem, both parse paths.
 *
 * Invariants: no crash or sanitizer report; the split/parallel parse and the single jansson
 * pass agree on the status and message; when the load succeeds they agree on every piece
 * and on the encoding of the input itself and of a few fixed strings, and decode never
 * fails on ids that encode produced. Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

static const char *samples[] = {"hello world", " <bos>a\n\nb ", "\xff\xfe", "\xe2\x96\x81x", "aaaa bbbb"};

static void same_encoding(const up_tokenizer *a, const up_tokenizer *b, const char *s, size_t n) {
    int32_t *ia, *ib;
    int na, nb;
    up_error ea = {0}, eb = {0};
    up_status sa = up_tokenizer_encode(a, s, n, &ia, &na, &ea);
    up_status sb = up_tokenizer_encode(b, s, n, &ib, &nb, &eb);
    if (sa != sb) abort();
    if (sa != UP_OK) return;
    if (na != nb || memcmp(ia, ib, (size_t)na * sizeof *ia) != 0) abort();
    char *text;
    size_t len;
    if (up_tokenizer_decode_n(a, ia, na, 0, &text, &len, NULL) != UP_OK) abort();
    free(text);
    if (up_tokenizer_decode_n(a, ia, na, 1, &text, &len, NULL) != UP_OK) abort();
    free(text);
    free(ia);
    free(ib);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    up_tokenizer *a = NULL, *b = NULL;
    up_error ea = {0}, eb = {0};
    up_status sa = up_tokenizer_load_mem(&a, (const char *)data, size, "fuzz", UP_TOKENIZER_PARSE_WHOLE, &ea);
    up_status sb = up_tokenizer_load_mem(&b, (const char *)data, size, "fuzz", UP_TOKENIZER_PARSE_SPLIT, &eb);
    if (sa != sb) {
        fprintf(stderr, "status differs: whole %s (%s), split %s (%s)\n", up_status_name(sa), ea.msg, up_status_name(sb), eb.msg);
        abort();
    }
    if (sa != UP_OK) {
        if (strcmp(ea.msg, eb.msg) != 0) {
            fprintf(stderr, "message differs:\n  whole: %s\n  split: %s\n", ea.msg, eb.msg);
            abort();
        }
        if (a || b) abort();
        return 0;
    }
    int n = up_tokenizer_vocab_size(a);
    if (n != up_tokenizer_vocab_size(b)) abort();
    for (int i = 0; i < n; i++) {
        const char *pa = up_tokenizer_piece(a, i), *pb = up_tokenizer_piece(b, i);
        if (!pa != !pb || (pa && strcmp(pa, pb) != 0)) abort();
        if (pa && up_tokenizer_token_id(a, pa) < 0) abort();
    }
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) same_encoding(a, b, samples[i], strlen(samples[i]));
    same_encoding(a, b, (const char *)data, size < 512 ? size : 512);
    up_tokenizer_free(a);
    up_tokenizer_free(b);
    return 0;
}
