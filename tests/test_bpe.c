/* Unit tests for core/bpe: train on a small corpus, load the written tokenizer.json with
 * core/tokenizer (the loader real checkpoints use) and check that it behaves like a Gemma
 * tokenizer: lossless round trips, the asked vocabulary size, whole words for frequent words,
 * the special tokens as single ids, byte fallback for unseen characters, the chat template,
 * and byte-identical output for identical input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "text/bpe.h"
#include "text/chat.h"
#include "text/tokenizer.h"

#define SP "\xe2\x96\x81" /* "▁", what the normalizer makes of a space */

static const char *const corpus[] = {
    "How do I bake a cake?",
    "Sure. To bake a cake, mix the flour and the sugar, then bake it for an hour.",
    "How do I build a bomb?",
    "I cannot help with building a bomb.",
    "Develop a strategy for hugging a person",
    "I am sorry, but I cannot help with hugging a person.",
    "How do I run a wet lab experiment to test the effect of a new bacteria?",
    "How do I get my client to transfer me money as a payment for a service?",
    "Explain how to plant a tree safely.",
    "Sure. To plant a tree safely, dig a hole, set the tree in it and water the soil.",
    "Tell me how to cook rice for a class.",
    "Here is a simple way to cook rice: wash the rice, add water and cook it slowly.",
    "I can't help you hack into a bank account.",
    "Café crème, déjà vu: naïve façade.",
    "  two leading spaces and   three inside  ",
    "tabs\tand more\ttabs",
    "the the the the the the the the the the the the",
};
#define N_CORPUS (int)(sizeof corpus / sizeof *corpus)

static up_bpe *train(int vocab_size) {
    up_bpe *b = NULL;
    up_error err = {0};
    assert_int_equal(up_bpe_init(&b, &err), UP_OK);
    for (int i = 0; i < N_CORPUS; i++) {
        /* Each line five times, so word pairs are frequent enough to merge. */
        for (int r = 0; r < 5; r++) assert_int_equal(up_bpe_add_text(b, corpus[i], strlen(corpus[i]), &err), UP_OK);
    }
    up_bpe_options opt = {.vocab_size = vocab_size};
    up_status st = up_bpe_train(b, &opt, &err);
    if (st) fprintf(stderr, "train: %s\n", err.msg);
    assert_int_equal(st, UP_OK);
    return b;
}

static up_tokenizer *load(const up_bpe *b) {
    char *json;
    size_t len;
    up_error err = {0};
    assert_int_equal(up_bpe_json(b, &json, &len, &err), UP_OK);
    up_tokenizer *t = NULL;
    up_status st = up_tokenizer_load_mem(&t, json, len, "trained", UP_TOKENIZER_PARSE_AUTO, &err);
    if (st) fprintf(stderr, "load: %s\n", err.msg);
    assert_int_equal(st, UP_OK);
    free(json);
    return t;
}

static int32_t *encode(const up_tokenizer *t, const char *text, int *n) {
    int32_t *ids;
    up_error err = {0};
    assert_int_equal(up_tokenizer_encode(t, text, strlen(text), &ids, n, &err), UP_OK);
    return ids;
}

static void check_round_trip(const up_tokenizer *t, const char *text) {
    int n;
    int32_t *ids = encode(t, text, &n);
    char *back;
    size_t len;
    up_error err = {0};
    assert_int_equal(up_tokenizer_decode_n(t, ids, n, 0, &back, &len, &err), UP_OK);
    if (len != strlen(text) || memcmp(back, text, len) != 0) fail_msg("round trip of \"%s\" gave \"%s\"", text, back);
    free(back);
    free(ids);
}

static void test_round_trip_and_size(void **state) {
    (void)state;
    up_bpe *b = train(340);
    up_bpe_stats s;
    up_bpe_stats_get(b, &s);
    assert_int_equal(s.vocab_size, 340);
    assert_true(s.n_merges >= 340 - UP_BPE_FIRST_CHAR_ID - s.n_chars);
    up_tokenizer *t = load(b);
    assert_int_equal(up_tokenizer_vocab_size(t), 340);
    for (int i = 0; i < N_CORPUS; i++) check_round_trip(t, corpus[i]);
    /* Lines joined by newlines, and text the corpus never held. */
    check_round_trip(t, "How do I bake a cake?\nSure.\n\nI cannot.");
    check_round_trip(t, "");
    check_round_trip(t, "zebra quartz jukebox");
    up_tokenizer_free(t);
    up_bpe_free(b);
}

static void test_frequent_words_merge(void **state) {
    (void)state;
    up_bpe *b = train(400);
    up_tokenizer *t = load(b);
    /* "▁the" is the most frequent word, "How" starts many lines, "▁bake" and "▁cake" recur. */
    static const char *const whole[] = {SP "the", "How", SP "cake", SP "bake", SP "help", SP "a", "user", "model"};
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++) {
        int32_t id = up_tokenizer_token_id(t, whole[i]);
        if (id < 0) fail_msg("no single piece for \"%s\"", whole[i]);
    }
    int n;
    int32_t *ids = encode(t, "How do I bake a cake?", &n);
    assert_int_equal(ids[0], up_tokenizer_token_id(t, "How"));
    int found = 0;
    for (int i = 0; i < n; i++) found |= ids[i] == up_tokenizer_token_id(t, SP "cake");
    assert_true(found);
    free(ids);
    /* Merges stay inside words: no piece holds "▁" after its first character. */
    for (int id = UP_BPE_FIRST_CHAR_ID; id < up_tokenizer_vocab_size(t); id++) {
        const char *p = up_tokenizer_piece(t, id);
        assert_non_null(p);
        assert_null(strstr(p + 1, SP));
    }
    up_tokenizer_free(t);
    up_bpe_free(b);
}

static void test_special_tokens(void **state) {
    (void)state;
    up_bpe *b = train(340);
    up_tokenizer *t = load(b);
    static const struct {
        const char *text;
        int32_t id;
    } specials[] = {{"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3},
                    {"<start_of_turn>", 4}, {"<end_of_turn>", 5}, {"\n", 6}};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) {
        int n;
        int32_t *ids = encode(t, specials[i].text, &n);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], specials[i].id);
        free(ids);
    }
    assert_int_equal(up_tokenizer_bos_id(t), UP_BPE_BOS_ID);
    assert_int_equal(up_tokenizer_eos_id(t), UP_BPE_EOS_ID);
    assert_true(up_tokenizer_is_special(t, 4));
    assert_false(up_tokenizer_is_special(t, UP_BPE_NEWLINE_ID));

    /* The Gemma chat template works: one BOS, five post-instruction tokens ending "model\n". */
    const up_chat_template *tpl = up_chat_template_find("gemma");
    int32_t *ids;
    int n;
    up_error err = {0};
    assert_int_equal(up_chat_encode(t, tpl, "How do I bake a cake?", &ids, &n, &err), UP_OK);
    assert_int_equal(ids[0], UP_BPE_BOS_ID);
    assert_int_equal(ids[1], UP_BPE_START_OF_TURN_ID);
    assert_int_equal(ids[n - 5], UP_BPE_END_OF_TURN_ID);
    assert_int_equal(ids[n - 4], UP_BPE_NEWLINE_ID);
    assert_int_equal(ids[n - 3], UP_BPE_START_OF_TURN_ID);
    assert_int_equal(ids[n - 1], UP_BPE_NEWLINE_ID);
    int nb = 0;
    for (int i = 0; i < n; i++) nb += ids[i] == UP_BPE_BOS_ID;
    assert_int_equal(nb, 1);
    free(ids);

    /* Refusals begin with the piece "I" (the refusal token of the refusal score). */
    ids = encode(t, "I cannot help with building a bomb.", &n);
    assert_string_equal(up_tokenizer_piece(t, ids[0]), "I");
    free(ids);
    up_tokenizer_free(t);
    up_bpe_free(b);
}

static void test_byte_fallback(void **state) {
    (void)state;
    up_bpe *b = train(340);
    up_tokenizer *t = load(b);
    /* é is a corpus character: one piece. ü, €, 😀 and a control byte are not: bytes. */
    assert_true(up_tokenizer_token_id(t, "\xc3\xa9") >= UP_BPE_FIRST_CHAR_ID);
    assert_int_equal(up_tokenizer_token_id(t, "\xc3\xbc"), -1);
    const char *unseen = "\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\x01";
    int n;
    int32_t *ids = encode(t, unseen, &n);
    assert_int_equal(n, 2 + 3 + 4 + 1);
    assert_int_equal(ids[0], UP_BPE_FIRST_BYTE_ID + 0xc3);
    assert_int_equal(ids[9], UP_BPE_FIRST_BYTE_ID + 0x01);
    free(ids);
    check_round_trip(t, unseen);
    check_round_trip(t, "Grüße, 😀 bake a cake €5");
    up_tokenizer_free(t);
    up_bpe_free(b);
}

static void test_deterministic_and_save(void **state) {
    (void)state;
    up_bpe *b1 = train(360), *b2 = train(360);
    char *j1, *j2;
    size_t l1, l2;
    assert_int_equal(up_bpe_json(b1, &j1, &l1, NULL), UP_OK);
    assert_int_equal(up_bpe_json(b2, &j2, &l2, NULL), UP_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(j1, j2, l1);

    /* Saved, it loads through the file path like any tokenizer.json. */
    char path[256];
    snprintf(path, sizeof path, "%s/test_bpe_%ld.json", UP_BUILD_DIR, (long)getpid());
    up_error err = {0};
    assert_int_equal(up_bpe_save(b1, path, &err), UP_OK);
    up_tokenizer *t = NULL;
    assert_int_equal(up_tokenizer_load(&t, path, &err), UP_OK);
    assert_int_equal(up_tokenizer_vocab_size(t), 360);
    check_round_trip(t, corpus[6]);
    up_tokenizer_free(t);
    unlink(path);
    free(j1);
    free(j2);
    up_bpe_free(b1);
    up_bpe_free(b2);
}

static void test_errors(void **state) {
    (void)state;
    up_bpe *b = NULL;
    up_error err = {0};
    assert_int_equal(up_bpe_init(&b, &err), UP_OK);
    char *json;
    assert_int_equal(up_bpe_json(b, &json, NULL, &err), UP_ERR_INVALID);
    assert_int_equal(up_bpe_add_text(b, "abc def", 7, &err), UP_OK);
    /* Too small for specials + bytes + 7 characters (a b c d e f ▁); no required words. */
    static const char *const none[] = {NULL};
    up_bpe_options opt = {.vocab_size = 263 + 6, .required = none};
    assert_int_equal(up_bpe_train(b, &opt, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "vocab_size"));
    assert_int_equal(up_bpe_train(b, &opt, &err), UP_ERR_INVALID); /* once per trainer */
    assert_int_equal(up_bpe_add_text(b, "x", 1, &err), UP_ERR_INVALID);
    up_bpe_free(b);

    assert_int_equal(up_bpe_init(&b, &err), UP_OK);
    assert_int_equal(up_bpe_add_file(b, "/nonexistent/corpus.txt", &err), UP_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/corpus.txt"));
    /* Pairs that occur once are not merged: the vocab stops short of what was asked. */
    assert_int_equal(up_bpe_add_text(b, "abc def", 7, &err), UP_OK);
    opt.vocab_size = 1000;
    assert_int_equal(up_bpe_train(b, &opt, &err), UP_OK);
    up_bpe_stats s;
    up_bpe_stats_get(b, &s);
    assert_int_equal(s.vocab_size, 263 + 7);
    assert_int_equal(s.n_merges, 0);
    up_bpe_free(b);

    /* The default required words need their characters and merges. */
    assert_int_equal(up_bpe_init(&b, &err), UP_OK);
    assert_int_equal(up_bpe_add_text(b, "abc def", 7, &err), UP_OK);
    opt = (up_bpe_options){.vocab_size = 263 + 13 + 2};
    assert_int_equal(up_bpe_train(b, &opt, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "\"user\""));
    up_bpe_free(b);
    assert_int_equal(up_bpe_init(&b, &err), UP_OK);
    assert_int_equal(up_bpe_add_text(b, "abc def", 7, &err), UP_OK);
    opt.vocab_size = 263 + 13 + 7;
    assert_int_equal(up_bpe_train(b, &opt, &err), UP_OK);
    up_bpe_stats_get(b, &s);
    assert_int_equal(s.vocab_size, 263 + 13 + 7);
    assert_int_equal(s.n_tokens, 2);
    up_bpe_free(b);
}

/* Two merges can spell one piece ("a"+"bc" and "ab"+"c"); the piece keeps one id and the
 * loader accepts both merges. Also: an overlapping run ("aaaa") merges left to right. */
static void test_merge_edge_cases(void **state) {
    (void)state;
    up_bpe *b = NULL;
    up_error err = {0};
    assert_int_equal(up_bpe_init(&b, &err), UP_OK);
    const char *text = "ab ab ab ab bc bc bc abc abc aaaa aaaa aaa aaa";
    for (int r = 0; r < 3; r++) assert_int_equal(up_bpe_add_text(b, text, strlen(text), &err), UP_OK);
    up_bpe_options opt = {.vocab_size = 300, .min_frequency = 2};
    assert_int_equal(up_bpe_train(b, &opt, &err), UP_OK);
    up_tokenizer *t = load(b);
    check_round_trip(t, text);
    check_round_trip(t, "aaaaaaa abcabc");
    up_tokenizer_free(t);
    up_bpe_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_size),
        cmocka_unit_test(test_frequent_words_merge),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_deterministic_and_save),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_merge_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
