/* Unit tests for core/chat on the tiny Gemma-shaped fixture (ids: see test_tokenizer.c):
 * <bos> 2, <start_of_turn> 4, <end_of_turn> 5, "\n" 6, hello 282, ▁world 287, user 291,
 * model 295, <eos> 1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "text/chat.h"
#include "text/tokenizer.h"

#define TINY UP_TEST_DIR "/tokenizer/tiny/tokenizer.json"

static up_tokenizer *tiny(void) {
    up_tokenizer *t = NULL;
    assert_int_equal(up_tokenizer_load(&t, TINY, NULL), UP_OK);
    return t;
}

static void test_find(void **state) {
    (void)state;
    const up_chat_template *g = up_chat_template_find("gemma");
    assert_non_null(g);
    assert_string_equal(g->name, "gemma");
    assert_ptr_equal(up_chat_template_find("gemma2"), g);
    assert_ptr_equal(up_chat_template_find("gemma3"), g);
    assert_null(up_chat_template_find("llama-9"));
    assert_null(up_chat_template_find(NULL));
    assert_int_equal(up_chat_post_instruction_count(g), 5);
    assert_ptr_equal(up_chat_template_at(0), g);
    assert_null(up_chat_template_at(-1));
    assert_null(up_chat_template_at(1000));
}

static void test_render(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    char *s;
    size_t n;
    assert_int_equal(up_chat_render(t, up_chat_template_find("gemma"), " \t hello world\n\n", &s, &n, NULL), UP_OK);
    assert_string_equal(s, "<bos><start_of_turn>user\nhello world<end_of_turn>\n<start_of_turn>model\n");
    assert_int_equal(n, strlen(s));
    free(s);
    /* Python's strip() whitespace: U+00A0, U+3000, U+2028 and \x1c go; U+200B does not. */
    assert_int_equal(up_chat_render(t, up_chat_template_find("gemma"), "\xC2\xA0\xE3\x80\x80\x1c" "a b\xE2\x80\xA8\xE2\x80\x8B", &s, &n, NULL), UP_OK);
    assert_string_equal(s, "<bos><start_of_turn>user\na b\xE2\x80\xA8\xE2\x80\x8B<end_of_turn>\n<start_of_turn>model\n");
    free(s);
    assert_int_equal(up_chat_render(t, up_chat_template_find("gemma"), "   ", &s, &n, NULL), UP_OK);
    assert_string_equal(s, "<bos><start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n");
    free(s);
    up_tokenizer_free(t);
}

static void test_encode_one_bos(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    const up_chat_template *g = up_chat_template_find("gemma");
    int32_t *ids;
    int n;
    up_error err = {0};
    assert_int_equal(up_chat_encode(t, g, "hello world", &ids, &n, &err), UP_OK);
    const int32_t want[] = {2, 4, 291, 6, 282, 287, 5, 6, 4, 295, 6};
    assert_int_equal(n, 11);
    assert_memory_equal(ids, want, sizeof want);
    int bos = 0;
    for (int i = 0; i < n; i++) bos += ids[i] == up_tokenizer_bos_id(t);
    assert_int_equal(bos, 1);
    /* The last post_instruction_count tokens are <end_of_turn> \n <start_of_turn> model \n. */
    const int32_t post[] = {5, 6, 4, 295, 6};
    int k = up_chat_post_instruction_count(g);
    assert_memory_equal(ids + n - k, post, sizeof post);
    free(ids);
    /* Trimmed like the Hugging Face template. */
    assert_int_equal(up_chat_encode(t, g, "  hello world \n", &ids, &n, &err), UP_OK);
    assert_int_equal(n, 11);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    up_tokenizer_free(t);
}

static void test_stop_ids(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    const up_chat_template *g = up_chat_template_find("gemma");
    int32_t out[8];
    assert_int_equal(up_chat_stop_ids(t, g, out, 8), 2);
    assert_int_equal(out[0], 5);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], -1);
    assert_int_equal(up_chat_stop_ids(t, g, out, 2), 1);
    assert_int_equal(out[0], 5);
    assert_int_equal(out[1], -1);
    assert_int_equal(up_chat_stop_ids(t, g, out, 1), 0);
    assert_int_equal(out[0], -1);
    up_tokenizer_free(t);
}

/* A tokenizer without Gemma's markers is refused rather than fed a BOS-less prompt. */
static void test_wrong_tokenizer(void **state) {
    (void)state;
    const char *json = "{\"added_tokens\":[{\"id\":0,\"content\":\"<bos>\",\"special\":true}],"
                       "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"<bos>\":0,\"<unk>\":1},\"merges\":[]}}";
    up_tokenizer *t;
    assert_int_equal(up_tokenizer_load_mem(&t, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    int32_t *ids;
    int n;
    up_error err = {0};
    assert_int_equal(up_chat_encode(t, up_chat_template_find("gemma"), "hi", &ids, &n, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "<end_of_turn>"));
    assert_null(ids);
    int32_t out[4];
    assert_int_equal(up_chat_stop_ids(t, up_chat_template_find("gemma"), out, 4), 0);
    up_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_encode_one_bos),
        cmocka_unit_test(test_stop_ids),
        cmocka_unit_test(test_wrong_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
