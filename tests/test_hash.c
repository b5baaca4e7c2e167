/* SHA-256: FIPS 180-2 test vectors, streaming equals one-shot, files equal their bytes' digest,
 * the memo is used exactly when size, mtime, inode and device still match, and a directory's
 * digest is the documented listing's. */
#include "testutil.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/hash.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("hash")

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void test_vectors(void **state) {
    char hex[UP_HASH_HEX];
    assert_int_equal(up_hash_bytes("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(up_hash_bytes("", 0, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(up_hash_bytes(two, strlen(two), hex), 0);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* Streaming in odd pieces, including a printf longer than the internal buffer. */
    up_hasher *h;
    assert_int_equal(up_hasher_init(&h, NULL), UP_OK);
    up_hasher_update(h, two, 5);
    up_hasher_printf(h, "%s", two + 5);
    char streamed[UP_HASH_HEX];
    assert_int_equal(up_hasher_final(h, streamed), 0);
    assert_string_equal(streamed, hex);
    char *long_text = malloc(3001);
    for (int i = 0; i < 3000; i++) long_text[i] = (char)('a' + i % 26);
    long_text[3000] = '\0';
    assert_int_equal(up_hasher_init(&h, NULL), UP_OK);
    up_hasher_printf(h, "<%s>", long_text);
    assert_int_equal(up_hasher_final(h, streamed), 0);
    char *framed = malloc(3003);
    snprintf(framed, 3003, "<%s>", long_text);
    assert_int_equal(up_hash_bytes(framed, 3002, hex), 0);
    assert_string_equal(streamed, hex);
    free(long_text), free(framed);
}

static void test_file_and_memo(void **state) {
    char path[512], memo[512], hex[UP_HASH_HEX], want[UP_HASH_HEX];
    snprintf(path, sizeof path, "%s/weights.bin", tmpdir);
    snprintf(memo, sizeof memo, "%s/memo/deeper", tmpdir);
    /* Bigger than one 4 MiB read, so the streaming loop is exercised. */
    size_t n = (9u << 20) + 123;
    unsigned char *buf = malloc(n);
    for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 2654435761u >> 13);
    FILE *f = fopen(path, "wb");
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    assert_int_equal(up_hash_bytes(buf, n, want), 0);
    int hit = -1;
    assert_int_equal(up_hash_file(path, NULL, hex, &hit, NULL), UP_OK);
    assert_string_equal(hex, want);
    assert_int_equal(hit, 0);
    assert_int_equal(up_hash_file(path, memo, hex, &hit, NULL), UP_OK); /* creates the memo dir */
    assert_string_equal(hex, want);
    assert_int_equal(hit, 0);
    assert_int_equal(up_hash_file(path, memo, hex, &hit, NULL), UP_OK);
    assert_string_equal(hex, want);
    assert_int_equal(hit, 1);

    /* Same size, same mtime, different bytes: the memo answers (documented limit), which
     * proves it is consulted rather than the file reread. */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    buf[17] ^= 1;
    f = fopen(path, "r+b");
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    struct timespec times[2] = {sb.st_atim, sb.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
    assert_int_equal(up_hash_file(path, memo, hex, &hit, NULL), UP_OK);
    assert_int_equal(hit, 1);
    assert_string_equal(hex, want);
    /* A new mtime invalidates the entry. */
    times[1].tv_nsec = (times[1].tv_nsec + 1000) % 1000000000;
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
    assert_int_equal(up_hash_file(path, memo, hex, &hit, NULL), UP_OK);
    assert_int_equal(hit, 0);
    assert_int_equal(up_hash_bytes(buf, n, want), 0);
    assert_string_equal(hex, want);
    /* A malformed entry is ignored, not an error. */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "for f in '%s'/*; do echo garbage > \"$f\"; done", memo);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(up_hash_file(path, memo, hex, &hit, NULL), UP_OK);
    assert_int_equal(hit, 0);
    assert_string_equal(hex, want);
    free(buf);

    up_error e = {0};
    snprintf(path, sizeof path, "%s/absent", tmpdir);
    assert_int_equal(up_hash_file(path, memo, hex, NULL, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "absent"));
    assert_int_equal(up_hash_file(tmpdir, NULL, hex, NULL, &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "not a regular file"));
}

static void test_directory(void **state) {
    char dir[512], path[600], hex[UP_HASH_HEX], a[UP_HASH_HEX], b[UP_HASH_HEX], want[UP_HASH_HEX];
    snprintf(dir, sizeof dir, "%s/model", tmpdir);
    assert_int_equal(mkdir(dir, 0777), 0);
    snprintf(path, sizeof path, "%s/b.json", dir), write_file(path, "{}");
    snprintf(path, sizeof path, "%s/a.safetensors", dir), write_file(path, "weights");
    snprintf(path, sizeof path, "%s/.hidden", dir), write_file(path, "ignored");
    snprintf(path, sizeof path, "%s/sub", dir), mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/sub/x", dir), write_file(path, "ignored too");
    up_hash_bytes("weights", 7, a);
    up_hash_bytes("{}", 2, b);
    char listing[300];
    snprintf(listing, sizeof listing, "a.safetensors %s\nb.json %s\n", a, b);
    up_hash_bytes(listing, strlen(listing), want);
    assert_int_equal(up_hash_path(dir, NULL, hex, NULL), UP_OK);
    assert_string_equal(hex, want);
    /* A file path gives the file's digest. */
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    assert_int_equal(up_hash_path(path, NULL, hex, NULL), UP_OK);
    assert_string_equal(hex, a);
    /* Any file changing changes the directory's digest. */
    snprintf(path, sizeof path, "%s/b.json", dir), write_file(path, "{ }");
    assert_int_equal(up_hash_path(dir, NULL, hex, NULL), UP_OK);
    assert_string_not_equal(hex, want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_file_and_memo),
        cmocka_unit_test(test_directory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
