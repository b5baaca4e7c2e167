/* Unit tests for core/tokenizer on hand-made tokenizer.json files: tests/tokenizer/tiny/
 * (Gemma-shaped: Replace normalizer, Split pre-tokenizer, BPE with byte fallback, added
 * tokens, Replace/ByteFallback/Fuse decoder) and small inline variants, one per component
 * and per error. Ids in the tiny fixture: <pad> 0, <eos> 1, <bos> 2, <unk> 3,
 * <start_of_turn> 4, <end_of_turn> 5, "\n" 6, <0xNN> 7+NN, ▁ 263, a 264, b 265, c 266,
 * d 267, e 268, h 269, l 270, o 271, r 272, w 273, u 274, s 275, m 276, é 277, I 278,
 * then merges: he 279, ll 280, hell 281, hello 282, ▁w 283, or 284, ▁wor 285, ▁worl 286,
 * ▁world 287, ▁hello 288, us 289, use 290, user 291, mo 292, mod 293, mode 294,
 * model 295, ▁▁ 296, ab 297, abc 298, bc 299, ▁a 300, aa 301. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "text/tokenizer.h"

#define TINY_DIR UP_TEST_DIR "/tokenizer/tiny"
#define TINY TINY_DIR "/tokenizer.json"
#define BYTE(b) (7 + (b))

static up_tokenizer *tiny(void) {
    up_tokenizer *t = NULL;
    up_error err = {0};
    up_status st = up_tokenizer_load(&t, TINY, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, UP_OK);
    return t;
}

/* Encodes and compares with the expected ids (a -1 terminated list). */
static void check_encode_n(const up_tokenizer *t, const char *text, size_t len, const int32_t *want) {
    int32_t *ids;
    int n;
    up_error err = {0};
    up_status st = up_tokenizer_encode(t, text, len, &ids, &n, &err);
    if (st) fprintf(stderr, "encode: %s\n", err.msg);
    assert_int_equal(st, UP_OK);
    int m = 0;
    while (want[m] >= 0) m++;
    if (n != m || memcmp(ids, want, (size_t)n * sizeof *ids) != 0) {
        fprintf(stderr, "encode(\"%s\"): got", text);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, ", want");
        for (int i = 0; i < m; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
        fail();
    }
    free(ids);
}

#define CHECK(t, text, ...) check_encode_n((t), (text), strlen(text), (const int32_t[]){__VA_ARGS__, -1})
#define CHECK_EMPTY(t, text) check_encode_n((t), (text), strlen(text), (const int32_t[]){-1})

static char *decode(const up_tokenizer *t, const int32_t *ids, int n, int skip) {
    char *s;
    up_error err = {0};
    up_status st = up_tokenizer_decode(t, ids, n, skip, &s, &err);
    if (st) fprintf(stderr, "decode: %s\n", err.msg);
    assert_int_equal(st, UP_OK);
    return s;
}

static void check_roundtrip(const up_tokenizer *t, const char *text) {
    int32_t *ids;
    int n;
    assert_int_equal(up_tokenizer_encode(t, text, strlen(text), &ids, &n, NULL), UP_OK);
    char *s = decode(t, ids, n, 0);
    assert_string_equal(s, text);
    free(s);
    free(ids);
}

/* A tokenizer.json with a small vocab and the given components (JSON text or "null"). */
static char *make_json(const char *normalizer, const char *pretok, const char *decoder, const char *added,
                       const char *model_extra, const char *vocab, const char *merges) {
    static const char fmt[] =
        "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":%s,\"pre_tokenizer\":%s,"
        "\"post_processor\":null,\"decoder\":%s,"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\"%s,\"vocab\":%s,\"merges\":%s}}";
    size_t n = strlen(fmt) + strlen(normalizer) + strlen(pretok) + strlen(decoder) + strlen(added) +
               strlen(model_extra) + strlen(vocab) + strlen(merges);
    char *s = malloc(n + 1);
    snprintf(s, n + 1, fmt, added, normalizer, pretok, decoder, model_extra, vocab, merges);
    return s;
}

#define SMALL_VOCAB                                                                                          \
    "{\"<unk>\":0,\"a\":1,\"b\":2,\"-\":3,\"a-\":4,\"-b\":5,\"a-b\":6,\"--\":7,\"\\u2581\":8,\"\\u2581a\":9," \
    "\"<m>\":10,\"x\":11,\"y\":12,\" \":13}"
#define SMALL_MERGES "[[\"a\",\"-\"],[\"-\",\"b\"],[\"a-\",\"b\"],[\"-\",\"-\"],[\"\\u2581\",\"a\"]]"

static up_status load_small(up_tokenizer **t, const char *normalizer, const char *pretok, const char *decoder,
                            const char *added, const char *model_extra, up_error *err) {
    char *json = make_json(normalizer, pretok, decoder, added, model_extra, SMALL_VOCAB, SMALL_MERGES);
    up_status st = up_tokenizer_load_mem(t, json, strlen(json), "small.json", UP_TOKENIZER_PARSE_AUTO, err);
    free(json);
    return st;
}

static up_tokenizer *small(const char *normalizer, const char *pretok, const char *decoder, const char *added,
                           const char *model_extra) {
    up_tokenizer *t = NULL;
    up_error err = {0};
    up_status st = load_small(&t, normalizer, pretok, decoder, added, model_extra, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, UP_OK);
    return t;
}

/* Loading must fail with `status` and a message containing `needle`. */
static void expect_fail(const char *json, up_status status, const char *needle) {
    up_tokenizer *t = (up_tokenizer *)1;
    up_error err = {0};
    for (int how = UP_TOKENIZER_PARSE_WHOLE; how <= UP_TOKENIZER_PARSE_SPLIT; how++) {
        up_status st = up_tokenizer_load_mem(&t, json, strlen(json), "bad.json", (up_tokenizer_parse)how, &err);
        if (st != status || !strstr(err.msg, needle)) {
            fprintf(stderr, "want %s containing \"%s\", got %s: %s\n", up_status_name(status), needle,
                    up_status_name(st), err.msg);
            fail();
        }
        assert_null(t);
        assert_non_null(strstr(err.msg, "bad.json"));
    }
}

static void expect_small_fail(const char *normalizer, const char *pretok, const char *decoder, const char *added,
                              const char *model_extra, up_status status, const char *needle) {
    char *json = make_json(normalizer, pretok, decoder, added, model_extra, SMALL_VOCAB, SMALL_MERGES);
    expect_fail(json, status, needle);
    free(json);
}

/* ------------------------------------------------------------------ loading, lookups */

static void test_load_tiny(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    assert_int_equal(up_tokenizer_vocab_size(t), 302);
    assert_string_equal(up_tokenizer_piece(t, 282), "hello");
    assert_string_equal(up_tokenizer_piece(t, 4), "<start_of_turn>");
    assert_string_equal(up_tokenizer_piece(t, BYTE(0x41)), "<0x41>");
    assert_null(up_tokenizer_piece(t, 302));
    assert_null(up_tokenizer_piece(t, -1));
    assert_int_equal(up_tokenizer_token_id(t, "▁world"), 287);
    assert_int_equal(up_tokenizer_token_id(t, "<end_of_turn>"), 5);
    assert_int_equal(up_tokenizer_token_id(t, "nope"), -1);
    /* tokenizer_config.json beside it: bos as an AddedToken object, eos as a string. */
    assert_int_equal(up_tokenizer_bos_id(t), 2);
    assert_int_equal(up_tokenizer_eos_id(t), 1);
    assert_int_equal(up_tokenizer_unk_id(t), 3);
    assert_true(up_tokenizer_is_special(t, 4));
    assert_false(up_tokenizer_is_special(t, 6));
    assert_true(up_tokenizer_is_added(t, 6));
    assert_false(up_tokenizer_is_added(t, 282));
    up_tokenizer_free(t);
}

static void test_load_dir(void **state) {
    (void)state;
    up_tokenizer *t = NULL;
    up_error err = {0};
    assert_int_equal(up_tokenizer_load_dir(&t, TINY_DIR, &err), UP_OK);
    assert_int_equal(up_tokenizer_vocab_size(t), 302);
    up_tokenizer_free(t);
    assert_int_equal(up_tokenizer_load_dir(&t, TINY_DIR "/", &err), UP_OK);
    up_tokenizer_free(t);
    assert_int_equal(up_tokenizer_load_dir(&t, UP_TEST_DIR, &err), UP_ERR_IO);
    assert_null(t);
    assert_non_null(strstr(err.msg, "no tokenizer.json in " UP_TEST_DIR " (needed to encode text)"));
    assert_int_equal(up_tokenizer_load(&t, UP_TEST_DIR "/no/such/tokenizer.json", &err), UP_ERR_IO);
    assert_non_null(strstr(err.msg, "no/such/tokenizer.json"));
    up_tokenizer_free(NULL);
}

/* Without tokenizer_config.json, BOS comes from the TemplateProcessing post-processor or
 * the usual names. */
static void test_specials_without_config(void **state) {
    (void)state;
    char *json = make_json("null", "null", "null",
                           "[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":10,\"content\":\"<m>\",\"special\":true}]",
                           "", SMALL_VOCAB, SMALL_MERGES);
    up_tokenizer *t;
    assert_int_equal(up_tokenizer_load_mem(&t, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    assert_int_equal(up_tokenizer_bos_id(t), -1);
    assert_int_equal(up_tokenizer_eos_id(t), -1);
    up_tokenizer_free(t);
    free(json);
}

/* The split/parallel parse and one jansson pass give the same tokenizer and the same
 * errors. */
static void test_parse_paths_agree(void **state) {
    (void)state;
    FILE *f = fopen(TINY, "rb");
    assert_non_null(f);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    up_tokenizer *a, *b;
    assert_int_equal(up_tokenizer_load_mem(&a, buf, n, "w", UP_TOKENIZER_PARSE_WHOLE, NULL), UP_OK);
    assert_int_equal(up_tokenizer_load_mem(&b, buf, n, "s", UP_TOKENIZER_PARSE_SPLIT, NULL), UP_OK);
    assert_int_equal(up_tokenizer_vocab_size(a), up_tokenizer_vocab_size(b));
    for (int i = 0; i < up_tokenizer_vocab_size(a); i++) assert_string_equal(up_tokenizer_piece(a, i), up_tokenizer_piece(b, i));
    const char *text = "hello world <start_of_turn>user\nabc aaa é z€";
    int32_t *ia, *ib;
    int na, nb;
    assert_int_equal(up_tokenizer_encode(a, text, strlen(text), &ia, &na, NULL), UP_OK);
    assert_int_equal(up_tokenizer_encode(b, text, strlen(text), &ib, &nb, NULL), UP_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(ia, ib, (size_t)na * sizeof *ia);
    free(ia);
    free(ib);
    up_tokenizer_free(a);
    up_tokenizer_free(b);
    /* Breaking the text anywhere must give the same status and message both ways. */
    for (size_t cut = 1; cut < n; cut += 97) {
        up_error ea = {0}, eb = {0};
        up_status sa = up_tokenizer_load_mem(&a, buf, cut, "x", UP_TOKENIZER_PARSE_WHOLE, &ea);
        up_status sb = up_tokenizer_load_mem(&b, buf, cut, "x", UP_TOKENIZER_PARSE_SPLIT, &eb);
        assert_int_equal(sa, sb);
        assert_string_equal(ea.msg, eb.msg);
    }
    /* Two literals separated only by whitespace stay invalid after minifying. */
    char *json = make_json("null", "null", "null", "[]", ",\"fuse_unk\":tr ue", SMALL_VOCAB, SMALL_MERGES);
    expect_fail(json, UP_ERR_FORMAT, "invalid JSON");
    free(json);
}

/* A > 1 MB text is minified in parallel parts cut at raw newlines. With a single newline
 * in the text every part boundary falls on it, so a literal split by that newline ("70\n000")
 * must stay invalid, and a newline between tokens must change nothing. */
static void test_parallel_minify_join(void **state) {
    (void)state;
    int n = 90000;
    size_t cap = (size_t)n * 24 + 256;
    char *json = malloc(cap);
    size_t o = (size_t)snprintf(json, cap, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
    size_t mark = 0;
    for (int i = 0; i < n; i++) {
        o += (size_t)snprintf(json + o, cap - o, "%s\"w%05d\":%d", i ? "," : "", i, i);
        if (i == 70000) mark = o; /* just after the value 70000 */
    }
    o += (size_t)snprintf(json + o, cap - o, "},\"merges\":[]}}");
    assert_true(o > ((size_t)1 << 20));
    for (int variant = 0; variant < 2; variant++) {
        char *t = malloc(o + 2);
        if (variant == 0) {
            /* "70000" -> "70\n000" */
            memcpy(t, json, mark - 3);
            t[mark - 3] = '\n';
            memcpy(t + mark - 2, json + mark - 3, o - (mark - 3));
        } else {
            /* a newline after the comma that follows 70000 */
            memcpy(t, json, mark + 1);
            t[mark + 1] = '\n';
            memcpy(t + mark + 2, json + mark + 1, o - (mark + 1));
        }
        up_tokenizer *a = NULL, *b = NULL;
        up_error ea = {0}, eb = {0};
        up_status sa = up_tokenizer_load_mem(&a, t, o + 1, "big", UP_TOKENIZER_PARSE_WHOLE, &ea);
        up_status sb = up_tokenizer_load_mem(&b, t, o + 1, "big", UP_TOKENIZER_PARSE_SPLIT, &eb);
        assert_int_equal(sa, variant == 0 ? UP_ERR_FORMAT : UP_OK);
        assert_int_equal(sb, sa);
        assert_string_equal(ea.msg, eb.msg);
        if (variant == 1) {
            assert_int_equal(up_tokenizer_vocab_size(b), n);
            assert_int_equal(up_tokenizer_token_id(b, "w70001"), 70001);
            assert_string_equal(up_tokenizer_piece(b, 89999), "w89999");
        }
        up_tokenizer_free(a);
        up_tokenizer_free(b);
        free(t);
    }
    free(json);
}

/* ------------------------------------------------------------------ encode */

static void test_encode_basic(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    CHECK(t, "hello", 282);
    CHECK(t, "hello world", 282, 287);
    CHECK(t, " hello", 288);
    CHECK(t, "user", 291);
    CHECK(t, "  a", 296, 264);
    CHECK_EMPTY(t, "");
    int32_t *ids;
    int n;
    assert_int_equal(up_tokenizer_encode(t, "", 0, &ids, &n, NULL), UP_OK);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    free(ids);
    up_tokenizer_free(t);
}

/* Lowest rank first; among equal ranks the leftmost pair. */
static void test_merge_priority(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    CHECK(t, "abc", 298); /* a+b (rank 18) before b+c (20), then ab+c (19) */
    CHECK(t, "bc", 299);
    CHECK(t, "aaa", 301, 264);
    CHECK(t, "aaaa", 301, 301);
    CHECK(t, "hellohello", 282, 282);
    up_tokenizer_free(t);
}

static void test_byte_fallback(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    CHECK(t, "z", BYTE(0x7A));
    CHECK(t, "€", BYTE(0xE2), BYTE(0x82), BYTE(0xAC));
    CHECK(t, "é", 277); /* in the vocab: no fallback */
    CHECK(t, "a😀", 264, BYTE(0xF0), BYTE(0x9F), BYTE(0x98), BYTE(0x80));
    check_roundtrip(t, "z€ hello 😀 world é");
    up_tokenizer_free(t);
}

static void test_special_tokens_in_text(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    CHECK(t, "<start_of_turn>user\nhello<end_of_turn>", 4, 291, 6, 282, 5);
    CHECK(t, "<bos>", 2);
    CHECK(t, "a<bos><bos>b", 264, 2, 2, 265);
    /* An unfinished marker is plain text. */
    CHECK(t, "<start_of", BYTE('<'), 275, BYTE('t'), 264, 272, BYTE('t'), BYTE('_'), 271, BYTE('f'));
    CHECK(t, "\n\n", 6, 6);
    check_roundtrip(t, "<start_of_turn>user\nhello world<end_of_turn>\n");
    up_tokenizer_free(t);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    /* Each maximal invalid subpart becomes U+FFFD (EF BF BD), here via byte fallback. */
    const int32_t fffd[] = {BYTE(0xEF), BYTE(0xBF), BYTE(0xBD)};
    check_encode_n(t, "\xff", 1, (const int32_t[]){fffd[0], fffd[1], fffd[2], -1});
    check_encode_n(t, "\xe2\x82", 2, (const int32_t[]){fffd[0], fffd[1], fffd[2], -1});
    check_encode_n(t, "a\xc3(", 3, (const int32_t[]){264, fffd[0], fffd[1], fffd[2], BYTE('('), -1});
    check_encode_n(t, "\xed\xa0\x80", 3,
                   (const int32_t[]){fffd[0], fffd[1], fffd[2], fffd[0], fffd[1], fffd[2], fffd[0], fffd[1], fffd[2], -1});
    check_encode_n(t, "a\0b", 3, (const int32_t[]){264, BYTE(0), 265, -1});
    /* Decoding an invalid byte run gives one U+FFFD per byte token. */
    int32_t ids[] = {BYTE(0xE2), BYTE(0x82), 264, BYTE(0xFF)};
    char *s = decode(t, ids, 4, 0);
    assert_string_equal(s, "\xEF\xBF\xBD\xEF\xBF\xBD" "a" "\xEF\xBF\xBD");
    free(s);
    char *z;
    size_t zl;
    int32_t nul[] = {264, BYTE(0), 265};
    assert_int_equal(up_tokenizer_decode_n(t, nul, 3, 0, &z, &zl, NULL), UP_OK);
    assert_int_equal(zl, 3);
    assert_memory_equal(z, "a\0b", 3);
    free(z);
    up_tokenizer_free(t);
}

static void test_decode(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    int32_t ids[] = {2, 4, 291, 6, 282, 287, 5};
    char *s = decode(t, ids, 7, 0);
    assert_string_equal(s, "<bos><start_of_turn>user\nhello world<end_of_turn>");
    free(s);
    s = decode(t, ids, 7, 1);
    assert_string_equal(s, "user\nhello world");
    free(s);
    s = decode(t, ids, 0, 0);
    assert_string_equal(s, "");
    free(s);
    up_error err = {0};
    int32_t bad[] = {282, 302};
    assert_int_equal(up_tokenizer_decode(t, bad, 2, 0, &s, &err), UP_ERR_INVALID);
    assert_null(s);
    assert_non_null(strstr(err.msg, "302"));
    bad[1] = -5;
    assert_int_equal(up_tokenizer_decode(t, bad, 2, 0, &s, &err), UP_ERR_INVALID);
    up_tokenizer_free(t);
}

/* A text that is one 1 MB word: the priority-queue BPE handles it quickly; the textbook
 * loop would take hours. */
static void test_long_word(void **state) {
    (void)state;
    up_tokenizer *t = tiny();
    size_t n = (size_t)1 << 20;
    char *s = malloc(n + 1);
    memset(s, 'a', n);
    s[n] = '\0';
    int32_t *ids;
    int m;
    assert_int_equal(up_tokenizer_encode(t, s, n, &ids, &m, NULL), UP_OK);
    assert_int_equal(m, (int)(n / 2));
    for (int i = 0; i < m; i++) assert_int_equal(ids[i], 301);
    free(ids);
    free(s);
    up_tokenizer_free(t);
}

/* ------------------------------------------------------------------ components */

static void test_merges_string_format(void **state) {
    (void)state;
    char *json = make_json("null", "null", "null", "[]", "", SMALL_VOCAB,
                           "[\"a -\",\"- b\",\"a- b\",\"- -\",\"\\u2581 a\"]");
    up_tokenizer *t;
    assert_int_equal(up_tokenizer_load_mem(&t, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    CHECK(t, "a-b", 6);
    CHECK(t, "a--b", 4, 5); /* a- (rank 0) first, then -b (rank 1) */
    up_tokenizer_free(t);
    free(json);
}

static void test_split_behaviors(void **state) {
    (void)state;
    static const struct {
        const char *behavior;
        int invert;
        const char *text;
        int32_t want[6];
    } cases[] = {
        {NULL, 0, "a-b", {6, -1}},
        {"Removed", 0, "a-b", {1, 2, -1}},
        {"Isolated", 0, "a-b", {1, 3, 2, -1}},
        {"MergedWithPrevious", 0, "a-b", {4, 2, -1}},
        {"MergedWithNext", 0, "a-b", {1, 5, -1}},
        {"Contiguous", 0, "a--b", {1, 7, 2, -1}},
        {"Isolated", 0, "a--b", {1, 3, 3, 2, -1}},
        {"MergedWithPrevious", 0, "a--b", {4, 3, 2, -1}},
        {"MergedWithNext", 0, "a--b", {1, 3, 5, -1}},
        {"Removed", 1, "a-b", {3, -1}},
        {"Isolated", 1, "a-b", {1, 3, 2, -1}},
        {"MergedWithPrevious", 1, "-a-", {3, 1, 3, -1}}, /* "a" is the delimiter: "-a", "-" */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char pre[256];
        if (cases[i].behavior)
            snprintf(pre, sizeof pre,
                     "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
                     "\"behavior\":\"%s\",\"invert\":%s}]}",
                     cases[i].behavior, cases[i].invert ? "true" : "false");
        else
            snprintf(pre, sizeof pre, "null");
        up_tokenizer *t = small("null", pre, "null", "[]", "");
        check_encode_n(t, cases[i].text, strlen(cases[i].text), cases[i].want);
        up_tokenizer_free(t);
    }
}

static void test_normalizers(void **state) {
    (void)state;
    /* Llama-2 style: Prepend then Replace. Empty sections get no prefix. */
    up_tokenizer *t = small("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                            "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]}",
                            "null", "null", "[{\"id\":10,\"content\":\"<m>\",\"special\":true}]", "");
    CHECK(t, "a", 9);
    CHECK(t, "a a", 9, 9);
    CHECK(t, "<m>a", 10, 9); /* each section after an added token is normalized on its own */
    CHECK_EMPTY(t, "");
    CHECK(t, "<m>", 10);
    up_tokenizer_free(t);
    t = small("{\"type\":\"Replace\",\"pattern\":{\"String\":\"ab\"},\"content\":\"\"}", "null", "null", "[]", "");
    CHECK_EMPTY(t, "abab");
    CHECK(t, "aabb", 1, 2);
    up_tokenizer_free(t);
}

static void test_added_token_flags(void **state) {
    (void)state;
    /* lstrip/rstrip eat the whitespace beside the token. */
    up_tokenizer *t = small("null", "null", "null",
                            "[{\"id\":10,\"content\":\"<m>\",\"special\":true,\"lstrip\":true,\"rstrip\":true}]", "");
    CHECK(t, "a <m> b", 1, 10, 2);
    CHECK(t, "a \xE3\x80\x80<m>\t\n b", 1, 10, 2); /* Unicode whitespace too (U+3000) */
    up_tokenizer_free(t);
    t = small("null", "null", "null", "[{\"id\":10,\"content\":\"<m>\",\"special\":true,\"rstrip\":true}]", "");
    CHECK(t, "a <m> b", 1, 13, 10, 2);
    up_tokenizer_free(t);
    /* normalized=true tokens match the normalized text, in their normalized form. */
    t = small("{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"y\"}", "null", "null",
              "[{\"id\":11,\"content\":\"a b\",\"special\":false,\"normalized\":true}]", "");
    CHECK(t, "a b", 11);
    CHECK(t, "ayb", 11);
    up_tokenizer_free(t);
    /* The longest match wins, leftmost first. */
    t = small("null", "null", "null",
              "[{\"id\":11,\"content\":\"ab\",\"special\":false,\"normalized\":false},"
              "{\"id\":12,\"content\":\"abab\",\"special\":false,\"normalized\":false}]",
              "");
    CHECK(t, "ababab", 12, 11);
    CHECK(t, "aab", 1, 11);
    assert_string_equal(up_tokenizer_piece(t, 12), "abab");
    assert_int_equal(up_tokenizer_token_id(t, "abab"), 12);
    up_tokenizer_free(t);
}

static void test_unk_and_fuse(void **state) {
    (void)state;
    up_tokenizer *t = small("null", "null", "null", "[]", ",\"fuse_unk\":true");
    CHECK(t, "zz", 0);
    CHECK(t, "zza", 0, 1);
    up_tokenizer_free(t);
    t = small("null", "null", "null", "[]", ",\"fuse_unk\":false");
    CHECK(t, "zz", 0, 0);
    up_tokenizer_free(t);
    /* byte_fallback without <0xXX> pieces falls back to <unk>. */
    t = small("null", "null", "null", "[]", ",\"byte_fallback\":true");
    CHECK(t, "z", 0);
    up_tokenizer_free(t);
    /* No unk token: an unknown character is an error naming it. */
    char *json = make_json("null", "null", "null", "[]", "", "{\"a\":0}", "[]");
    json = realloc(json, strlen(json) + 1);
    char *p = strstr(json, "\"<unk>\"");
    memcpy(p, "\"<zzz>\"", 7);
    up_tokenizer *u;
    assert_int_equal(up_tokenizer_load_mem(&u, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    int32_t *ids;
    int n;
    up_error err = {0};
    assert_int_equal(up_tokenizer_encode(u, "ab", 2, &ids, &n, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "U+0062"));
    assert_null(ids);
    up_tokenizer_free(u);
    free(json);
}

static void test_ignore_merges(void **state) {
    (void)state;
    /* "a-b" is in the vocab: taken whole with ignore_merges, merged to the same here, but
     * "--" would merge from "-","-" anyway; check a word only the vocab lookup yields. */
    char *json = make_json("null", "null", "null", "[]", ",\"ignore_merges\":true", "{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3}", "[]");
    up_tokenizer *t;
    assert_int_equal(up_tokenizer_load_mem(&t, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    CHECK(t, "ab", 3);
    up_tokenizer_free(t);
    free(json);
    json = make_json("null", "null", "null", "[]", "", "{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3}", "[]");
    assert_int_equal(up_tokenizer_load_mem(&t, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    CHECK(t, "ab", 1, 2);
    up_tokenizer_free(t);
    free(json);
}

static void test_decoders(void **state) {
    (void)state;
    /* Llama-2 style: the Strip decoder removes the space the Prepend normalizer added. */
    up_tokenizer *t = small("null", "null",
                            "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
                            "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                            "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}",
                            "[]", "");
    int32_t ids[] = {9, 9, 3};
    char *s = decode(t, ids, 3, 0);
    assert_string_equal(s, "a a-");
    free(s);
    up_tokenizer_free(t);
    /* No decoder: pieces joined by spaces. */
    t = small("null", "null", "null", "[]", "");
    s = decode(t, ids, 3, 0);
    assert_string_equal(s, "\xE2\x96\x81" "a \xE2\x96\x81" "a -");
    free(s);
    up_tokenizer_free(t);
    /* Strip without Fuse works per token, and a multi-byte content character. */
    t = small("null", "null", "{\"type\":\"Strip\",\"content\":\"\\u2581\",\"start\":1,\"stop\":0}", "[]", "");
    s = decode(t, ids, 3, 0);
    assert_string_equal(s, "aa-");
    free(s);
    up_tokenizer_free(t);
}

/* ------------------------------------------------------------------ errors */

static void test_unsupported_components(void **state) {
    (void)state;
    expect_small_fail("{\"type\":\"NFKC\"}", "null", "null", "[]", "", UP_ERR_UNSUPPORTED, "normalizer \"NFKC\"");
    expect_small_fail("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"}]}", "null", "null", "[]", "",
                      UP_ERR_UNSUPPORTED, "normalizer.normalizers[0]: normalizer \"Lowercase\"");
    expect_small_fail("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\"x\"}", "null", "null", "[]", "",
                      UP_ERR_UNSUPPORTED, "Regex");
    expect_small_fail("null", "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\"}", "null", "[]", "", UP_ERR_UNSUPPORTED,
                      "pre-tokenizer \"Metaspace\"");
    expect_small_fail("null", "{\"type\":\"ByteLevel\"}", "null", "[]", "", UP_ERR_UNSUPPORTED, "ByteLevel");
    expect_small_fail("null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\"}", "null",
                      "[]", "", UP_ERR_UNSUPPORTED, "pre_tokenizer: Regex");
    expect_small_fail("null", "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Sideways\"}", "null", "[]",
                      "", UP_ERR_FORMAT, "unknown Split behavior \"Sideways\"");
    expect_small_fail("null", "null", "{\"type\":\"ByteLevel\"}", "[]", "", UP_ERR_UNSUPPORTED, "decoder \"ByteLevel\"");
    expect_small_fail("null", "null", "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{\"type\":\"WordPiece\"}]}", "[]", "",
                      UP_ERR_UNSUPPORTED, "decoder.decoders[1]: decoder \"WordPiece\"");
    expect_small_fail("null", "null", "null", "[{\"id\":10,\"content\":\"<m>\",\"single_word\":true}]", "",
                      UP_ERR_UNSUPPORTED, "single_word");
    expect_small_fail("null", "null", "null", "[]", ",\"dropout\":0.1", UP_ERR_UNSUPPORTED, "dropout");
    expect_small_fail("null", "null", "null", "[]", ",\"continuing_subword_prefix\":\"##\"", UP_ERR_UNSUPPORTED,
                      "continuing_subword_prefix");
    expect_fail("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", UP_ERR_UNSUPPORTED,
                "model type \"Unigram\" is not supported");
    /* dropout null or 0 and empty affixes are fine. */
    up_tokenizer *t = small("null", "null", "null", "[]", ",\"dropout\":null,\"end_of_word_suffix\":\"\"");
    up_tokenizer_free(t);
}

static void test_format_errors(void **state) {
    (void)state;
    expect_fail("{\"model\": [", UP_ERR_FORMAT, "invalid JSON at line 1");
    expect_fail("[]", UP_ERR_FORMAT, "top level is not an object");
    expect_fail("{}", UP_ERR_FORMAT, "no \"model\" object");
    expect_fail("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", UP_ERR_FORMAT, "model.vocab is missing");
    expect_fail("{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", UP_ERR_FORMAT, "model.merges is missing");
    expect_fail("{\"model\":{\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", UP_ERR_FORMAT, "model.vocab[\"a\"] is not a token id");
    expect_fail("{\"model\":{\"vocab\":{\"a\":-1},\"merges\":[]}}", UP_ERR_FORMAT, "not a token id");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", UP_ERR_FORMAT, "id 0 is given to both");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}", UP_ERR_FORMAT, "duplicate");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b c\"]}}", UP_ERR_FORMAT,
                "model.merges[0] \"a b c\" is not two pieces");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"b\"]]}}", UP_ERR_FORMAT,
                "model.merges[0]: \"ab\" is not in the vocab");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0,\"ab\":1},\"merges\":[[\"a\",\"b\"]]}}", UP_ERR_FORMAT,
                "model.merges[0]: \"b\" is not in the vocab");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}", UP_ERR_FORMAT, "model.merges[0] is neither");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":1}]}", UP_ERR_FORMAT,
                "added_tokens[0] needs an id and a content");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"Prepend\"}}", UP_ERR_FORMAT,
                "normalizer: \"prepend\" is not a string");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[]},\"decoder\":{\"type\":\"Strip\",\"content\":\"ab\",\"start\":1,\"stop\":0}}",
                UP_ERR_FORMAT, "Strip needs one content character");
    expect_fail("{\"model\":{\"vocab\":{\"a\":99999999999},\"merges\":[]}}", UP_ERR_FORMAT, "not a token id");
    expect_fail("{\"model\":{\"type\":5,\"vocab\":{},\"merges\":[]}}", UP_ERR_FORMAT, "model.type is not a string");
    /* Found by the load fuzzer: the split parse once let a trailing comma through. */
    expect_fail("{\"model\":{\"vocab\":{\"a\":0,},\"merges\":[]}}", UP_ERR_FORMAT, "invalid JSON");
    expect_fail("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[[\"a\",\"a\"],]}}", UP_ERR_FORMAT, "invalid JSON");
}

/* Added tokens may extend the id space past the model vocab (Gemma-3's <image_soft_token>). */
static void test_added_beyond_vocab(void **state) {
    (void)state;
    char *json = make_json("null", "null", "null", "[{\"id\":20,\"content\":\"<img>\",\"special\":true}]", "", SMALL_VOCAB,
                           SMALL_MERGES);
    up_tokenizer *t;
    assert_int_equal(up_tokenizer_load_mem(&t, json, strlen(json), NULL, UP_TOKENIZER_PARSE_AUTO, NULL), UP_OK);
    assert_int_equal(up_tokenizer_vocab_size(t), 21);
    assert_null(up_tokenizer_piece(t, 15)); /* a hole */
    CHECK(t, "a<img>", 1, 20);
    int32_t hole[] = {15};
    char *s;
    assert_int_equal(up_tokenizer_decode(t, hole, 1, 0, &s, NULL), UP_ERR_INVALID);
    up_tokenizer_free(t);
    free(json);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_tiny),
        cmocka_unit_test(test_load_dir),
        cmocka_unit_test(test_specials_without_config),
        cmocka_unit_test(test_parse_paths_agree),
        cmocka_unit_test(test_parallel_minify_join),
        cmocka_unit_test(test_encode_basic),
        cmocka_unit_test(test_merge_priority),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_special_tokens_in_text),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_long_word),
        cmocka_unit_test(test_merges_string_format),
        cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_normalizers),
        cmocka_unit_test(test_added_token_flags),
        cmocka_unit_test(test_unk_and_fuse),
        cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_unsupported_components),
        cmocka_unit_test(test_format_errors),
        cmocka_unit_test(test_added_beyond_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
