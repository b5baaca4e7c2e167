/* sae: the committed fixtures (tests/fixtures/sae, made by tests/reference/gemma2_ref.py in
 * float64) against our fp32 encode/decode for every format and architecture; hand-checked
 * semantics (JumpReLU's two conditions, TopK's ReLU and ties, b_dec on the input); partial
 * loads; path and hook handling; and malformed files, each a clear error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "formats/safetensors.h"
#include "sae/sae.h"
#include "tmpdir.h"

#define FIX UP_TEST_DIR "/fixtures/sae"

TEST_TMPDIR_GROUP("sae")

static char *tpathf(const char *fmt, ...) {
    static char buf[8][1024];
    static int slot;
    char *p = buf[slot++ % 8];
    char rel[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(p, 1024, "%s/%s", tmpdir, rel);
    return p;
}

static void mkdirs(const char *path) {
    char buf[700];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, *n, f), *n);
    p[*n] = 0;
    fclose(f);
    return p;
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_file(path, s, strlen(s)); }

static void copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *p = slurp(from, &n);
    write_file(to, p, n);
    free(p);
}

/* --- fixtures ------------------------------------------------------------------------- */

typedef struct expected {
    up_safetensors *st;
    const float *x; /* (n, 64) */
    int n, d;
} expected;

static void load_expected(expected *e) {
    up_error err = {0};
    if (up_safetensors_open_file(&e->st, FIX "/expected.safetensors", &err) != UP_OK)
        fail_msg("%s", err.msg);
    up_tensor t;
    assert_int_equal(up_safetensors_find(e->st, "x", &t, &err), UP_OK);
    assert_int_equal(t.dtype, UP_DTYPE_F32);
    assert_int_equal(t.ndim, 2);
    e->x = t.data;
    e->n = (int)t.shape[0];
    e->d = (int)t.shape[1];
}

static const float *expected_tensor(expected *e, const char *fixture, const char *what,
                                    int64_t rows, int64_t cols) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", fixture, what);
    up_tensor t;
    up_error err = {0};
    if (up_safetensors_find(e->st, name, &t, &err) != UP_OK) fail_msg("%s", err.msg);
    assert_int_equal(t.dtype, UP_DTYPE_F32);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], rows);
    assert_int_equal(t.shape[1], cols);
    return t.data;
}

/* Tolerance. The reference is float64 rounded to fp32; we compute in fp32. Each output is a
 * dot product of K terms (K = 64 to encode, at most 256 to decode) plus a bias; fp32 summation
 * errs by at most ~K·2^-24·Σ|terms| and in practice by a few ulps of the largest partial sum.
 * With activations and weights of order 1 that is ~1e-6 absolute, so we allow
 * |ours − ref| <= 1e-5·|ref| + 2e-5·scale, scale = the largest |ref| in the tensor (at least
 * 1): about 25x the worst error seen on these fixtures (8e-7·scale, printed per tensor), and
 * far below any real bug (a wrong bias, a flipped decision or a transposed matrix moves
 * values by O(0.1–1)). Decisions (zero or not) must
 * match exactly: the fixtures keep every threshold, ReLU and top-k cut 1e-2 from a tie. */
static int quiet; /* set to keep per-row comparisons out of the log */

static void compare(const char *what, const float *got, const float *want, size_t n,
                    int zeros_exact) {
    double scale = 1.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (zeros_exact && ((got[i] == 0.0f) != (want[i] == 0.0f)))
            fail_msg("%s[%zu]: got %.9g, want %.9g (decision differs)", what, i, got[i], want[i]);
        double diff = fabs((double)got[i] - want[i]);
        double tol = 1e-5 * fabs(want[i]) + 2e-5 * scale;
        if (!(diff <= tol))
            fail_msg("%s[%zu]: got %.9g, want %.9g (|diff| %.3g > tol %.3g)", what, i, got[i],
                     want[i], diff, tol);
        worst = fmax(worst, diff / scale);
    }
    if (!quiet) print_message("  %-36s max |diff|/scale = %.2e\n", what, worst);
}

typedef struct fixture {
    const char *name;
    up_sae_arch arch;
    int apply_b_dec, k, layer;
    const char *hook;
} fixture;

static const fixture fixtures[] = {
    {"gemmascope_stored", UP_SAE_JUMPRELU, 0, 0, -1, ""},
    {"gemmascope_deflated", UP_SAE_JUMPRELU, 0, 0, -1, ""},
    {"saelens_jumprelu", UP_SAE_JUMPRELU, 0, 0, 1, "blocks.1.hook_resid_post"},
    {"saelens_relu", UP_SAE_RELU, 1, 0, 1, "blocks.1.hook_resid_post"},
    {"saelens_topk", UP_SAE_TOPK, 1, 8, 1, "blocks.1.hook_resid_post"},
};

/* Encodes and decodes the fixture's x with `sae` and compares with what `name` expects. */
static void check_against(up_sae *sae, expected *e, const char *name) {
    const float *want_acts = expected_tensor(e, name, "acts", e->n, sae->d_sae);
    const float *want_recon = expected_tensor(e, name, "recon", e->n, e->d);
    float *acts = malloc((size_t)e->n * sae->d_sae * sizeof *acts);
    float *recon = malloc((size_t)e->n * e->d * sizeof *recon);
    float *recon_ref = malloc((size_t)e->n * e->d * sizeof *recon);
    up_error err = {0};
    if (up_sae_encode(sae, e->x, e->n, acts, &err) != UP_OK) fail_msg("%s", err.msg);
    char what[160];
    snprintf(what, sizeof what, "%s.acts", name);
    compare(what, acts, want_acts, (size_t)e->n * sae->d_sae, 1);
    assert_int_equal(up_sae_decode(sae, acts, e->n, recon, &err), UP_OK);
    snprintf(what, sizeof what, "%s.recon", name);
    compare(what, recon, want_recon, (size_t)e->n * e->d, 0);
    /* Decoding the reference's own codes isolates the decoder. */
    assert_int_equal(up_sae_decode(sae, want_acts, e->n, recon_ref, &err), UP_OK);
    snprintf(what, sizeof what, "%s.decode(ref acts)", name);
    compare(what, recon_ref, want_recon, (size_t)e->n * e->d, 0);
    free(acts);
    free(recon);
    free(recon_ref);
}

static void test_fixtures(void **state) {
    (void)state;
    expected e;
    load_expected(&e);
    for (size_t f = 0; f < sizeof fixtures / sizeof fixtures[0]; f++) {
        const fixture *fx = &fixtures[f];
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", fx->name);
        up_sae *sae;
        up_error err = {0};
        if (up_sae_load(&sae, path, UP_SAE_ALL, &err) != UP_OK) fail_msg("%s", err.msg);
        assert_int_equal(sae->arch, fx->arch);
        assert_int_equal(sae->d_in, e.d);
        assert_int_equal(sae->d_sae, 256);
        assert_int_equal(sae->k, fx->k);
        assert_int_equal(sae->apply_b_dec_to_input, fx->apply_b_dec);
        assert_int_equal(sae->layer, fx->layer);
        assert_string_equal(sae->hook, fx->hook);
        assert_int_equal(sae->parts, UP_SAE_ALL);
        assert_true(sae->arch == UP_SAE_JUMPRELU ? sae->threshold != NULL : sae->threshold == NULL);
        check_against(sae, &e, fx->name);

        /* mean L0 is the reference's exactly; FVU and MSE agree with its reconstruction. */
        const float *want_acts = expected_tensor(&e, fx->name, "acts", e.n, 256);
        const float *want_recon = expected_tensor(&e, fx->name, "recon", e.n, e.d);
        double nz = 0, sse = 0, sst = 0, mean[256] = {0};
        for (int i = 0; i < e.n * 256; i++) nz += want_acts[i] != 0.0f;
        for (int r = 0; r < e.n; r++)
            for (int j = 0; j < e.d; j++) mean[j] += e.x[r * e.d + j] / (double)e.n;
        for (int r = 0; r < e.n; r++)
            for (int j = 0; j < e.d; j++) {
                double d1 = (double)e.x[r * e.d + j] - want_recon[r * e.d + j];
                double d2 = (double)e.x[r * e.d + j] - mean[j];
                sse += d1 * d1, sst += d2 * d2;
            }
        up_sae_metrics m;
        assert_int_equal(up_sae_stats(sae, e.x, e.n, &m, &err), UP_OK);
        assert_true(m.mean_l0 == nz / e.n);
        assert_true(fabs(m.fvu - sse / sst) <= 1e-4 * (sse / sst) + 1e-9);
        assert_true(fabs(m.mse - sse / (e.n * e.d)) <= 1e-4 * (sse / (e.n * e.d)) + 1e-12);
        assert_true(m.fvu > 0 && m.fvu < 1);
        up_sae_free(sae);
    }
    up_safetensors_close(e.st);
}

/* Every way of naming the same SAE loads the same thing. */
static void test_paths(void **state) {
    (void)state;
    expected e;
    load_expected(&e);
    const char *paths[] = {
        FIX "/gemmascope_stored/params.npz",
        FIX "/saelens_topk/cfg.json",
        FIX "/saelens_topk/sae_weights.safetensors",
        FIX "/saelens_topk/",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        up_sae *sae;
        up_error err = {0};
        if (up_sae_load(&sae, paths[i], 0, &err) != UP_OK) fail_msg("%s: %s", paths[i], err.msg);
        assert_int_equal(sae->parts, UP_SAE_ALL);
        check_against(sae, &e, i == 0 ? "gemmascope_stored" : "saelens_topk");
        up_sae_free(sae);
    }

    /* GemmaScope's layout gives the layer; an -mlp release gives the MLP-output hook. */
    char *res = tpathf("gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82");
    mkdirs(res);
    char npz[1200];
    snprintf(npz, sizeof npz, "%s/params.npz", res);
    copy_file(FIX "/gemmascope_stored/params.npz", npz);
    up_sae *sae;
    up_error err = {0};
    assert_int_equal(up_sae_load(&sae, res, UP_SAE_DECODER, &err), UP_OK);
    assert_int_equal(sae->layer, 12);
    assert_string_equal(sae->hook, "blocks.12.hook_resid_post");
    assert_string_equal(sae->path, npz);
    up_sae_free(sae);
    char *mlp = tpathf("gemma-scope-2b-pt-mlp/layer_3/width_16k/average_l0_50");
    mkdirs(mlp);
    snprintf(npz, sizeof npz, "%s/params.npz", mlp);
    copy_file(FIX "/gemmascope_stored/params.npz", npz);
    assert_int_equal(up_sae_load(&sae, npz, UP_SAE_DECODER, &err), UP_OK);
    assert_int_equal(sae->layer, 3);
    assert_string_equal(sae->hook, "blocks.3.hook_mlp_out");
    up_sae_free(sae);

    /* Not an SAE. */
    assert_int_equal(up_sae_load(&sae, tpathf("nope"), 0, &err), UP_ERR_IO);
    assert_null(sae);
    mkdirs(tpathf("empty"));
    assert_int_equal(up_sae_load(&sae, tpathf("empty"), 0, &err), UP_ERR_IO);
    assert_non_null(strstr(err.msg, "params.npz"));
    assert_int_equal(up_sae_load(&sae, FIX "/expected.safetensors", 0, &err), UP_ERR_INVALID);
    assert_int_equal(up_sae_load(&sae, FIX "/saelens_topk", 4, &err), UP_ERR_INVALID);
    up_safetensors_close(e.st);
}

static void test_partial_loads(void **state) {
    (void)state;
    expected e;
    load_expected(&e);
    for (int f = 0; f < 5; f++) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", fixtures[f].name);
        up_sae *dec, *enc;
        up_error err = {0};
        assert_int_equal(up_sae_load(&dec, path, UP_SAE_DECODER, &err), UP_OK);
        assert_int_equal(dec->parts, UP_SAE_DECODER);
        assert_null(dec->W_enc);
        assert_null(dec->b_enc);
        assert_null(dec->threshold);
        assert_non_null(dec->W_dec);
        assert_non_null(dec->b_dec);
        float acts[256];
        assert_int_equal(up_sae_encode(dec, e.x, 1, acts, &err), UP_ERR_INVALID);
        assert_non_null(strstr(err.msg, "encoder"));
        up_sae_metrics m;
        assert_int_equal(up_sae_stats(dec, e.x, 1, &m, &err), UP_ERR_INVALID);
        const float *want_acts = expected_tensor(&e, fixtures[f].name, "acts", e.n, 256);
        const float *want_recon = expected_tensor(&e, fixtures[f].name, "recon", e.n, e.d);
        float recon[64];
        assert_int_equal(up_sae_decode(dec, want_acts, 1, recon, &err), UP_OK);
        compare("decoder-only decode", recon, want_recon, 64, 0);

        assert_int_equal(up_sae_load(&enc, path, UP_SAE_ENCODER, &err), UP_OK);
        assert_int_equal(enc->parts, UP_SAE_ENCODER);
        assert_null(enc->W_dec);
        assert_non_null(enc->b_dec);
        assert_int_equal(up_sae_encode(enc, e.x, 1, acts, &err), UP_OK);
        compare("encoder-only encode", acts, want_acts, 256, 1);
        assert_int_equal(up_sae_decode(enc, acts, 1, recon, &err), UP_ERR_INVALID);
        assert_non_null(strstr(err.msg, "decoder"));
        up_sae_free(dec);
        up_sae_free(enc);
    }
    up_sae_free(NULL);
    up_safetensors_close(e.st);
}

static void test_hooks_and_model_check(void **state) {
    (void)state;
    up_sae *sae;
    up_error err = {0};
    assert_int_equal(up_sae_load(&sae, FIX "/gemmascope_stored", UP_SAE_DECODER, &err), UP_OK);
    assert_int_equal(sae->layer, -1);
    assert_int_equal(up_sae_check_model(sae, 64, 2, &err), UP_OK);
    assert_int_equal(up_sae_set_hook(sae, -2, &err), UP_ERR_INVALID);
    assert_int_equal(up_sae_set_hook(sae, 5, &err), UP_OK);
    assert_int_equal(sae->layer, 5);
    assert_string_equal(sae->hook, "blocks.5.hook_resid_post");
    assert_int_equal(up_sae_check_model(sae, 64, 6, &err), UP_OK);
    assert_int_equal(up_sae_check_model(sae, 64, 5, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "layer 5"));
    assert_int_equal(up_sae_check_model(sae, 2304, 26, &err), UP_ERR_INVALID);
    assert_non_null(strstr(err.msg, "2304"));
    assert_non_null(strstr(err.msg, "64"));
    up_sae_free(sae);
}

/* Semantics on numbers small enough to check by hand. */
static void test_semantics(void **state) {
    (void)state;
    up_sae *sae;
    up_error err = {0};
    /* d_in 1, d_sae 4, W_enc = 1: pre = x - b_dec·apply + b_enc. */
    assert_int_equal(up_sae_alloc(&sae, UP_SAE_JUMPRELU, 1, 4, 0, 0, NULL, &err), UP_OK);
    assert_int_equal(sae->layer, -1);
    for (int j = 0; j < 4; j++) sae->W_enc[j] = 1, sae->W_dec[j] = (float)(j + 1);
    float b[4] = {-1.5f, 0.5f, 0.0f, 2.0f}, thr[4] = {-2.0f, 1.0f, 0.25f, 1.0f};
    memcpy(sae->b_enc, b, sizeof b);
    memcpy(sae->threshold, thr, sizeof thr);
    sae->b_dec[0] = 0.5f;
    float x = 1.0f, a[4], out;
    /* pre = (-0.5, 1.5, 1.0, 3.0): latent 0 passes its (negative) threshold but not > 0. */
    assert_int_equal(up_sae_encode(sae, &x, 1, a, &err), UP_OK);
    assert_true(a[0] == 0 && a[1] == 1.5f && a[2] == 1.0f && a[3] == 3.0f);
    x = 0.0f; /* pre = (-1.5, 0.5, 0, 2): 0.5 <= 1 and 0 <= 0.25 fail their thresholds */
    assert_int_equal(up_sae_encode(sae, &x, 1, a, &err), UP_OK);
    assert_true(a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 2.0f);
    assert_int_equal(up_sae_decode(sae, a, 1, &out, &err), UP_OK);
    assert_true(out == 2.0f * 4 + 0.5f);
    up_sae_free(sae);

    /* ReLU with b_dec subtracted first: pre = (x - 2)·w + 0. */
    assert_int_equal(up_sae_alloc(&sae, UP_SAE_RELU, 1, 2, 0, 1, "blocks.3.hook_resid_pre", &err),
                     UP_OK);
    assert_int_equal(sae->layer, 3);
    sae->W_enc[0] = 1, sae->W_enc[1] = -1, sae->b_dec[0] = 2;
    x = 5;
    assert_int_equal(up_sae_encode(sae, &x, 1, a, &err), UP_OK);
    assert_true(a[0] == 3 && a[1] == 0);
    up_sae_free(sae);

    /* TopK, k = 2: the two largest pre-activations, ties to the lower index, then ReLU. */
    assert_int_equal(up_sae_alloc(&sae, UP_SAE_TOPK, 1, 6, 2, 0, NULL, &err), UP_OK);
    float w[6] = {1, 3, 2, 3, -1, 0};
    memcpy(sae->W_enc, w, sizeof w);
    float rows[3] = {1.0f, -1.0f, 0.0f}, acts[18];
    assert_int_equal(up_sae_encode(sae, rows, 3, acts, &err), UP_OK);
    float want0[6] = {0, 3, 0, 3, 0, 0};      /* 3 and 3 beat 2 */
    float want1[6] = {0, 0, 0, 0, 1, 0};      /* top two are 1 (idx 4) and 0 (idx 5) */
    float want2[6] = {0, 0, 0, 0, 0, 0};      /* all zero: ReLU leaves nothing */
    assert_memory_equal(acts, want0, sizeof want0);
    assert_memory_equal(acts + 6, want1, sizeof want1);
    assert_memory_equal(acts + 12, want2, sizeof want2);
    w[1] = 2; /* now indices 1, 2, 3 = (2, 2, 3): the tie between 1 and 2 goes to 1 */
    memcpy(sae->W_enc, w, sizeof w);
    assert_int_equal(up_sae_encode(sae, rows, 1, acts, &err), UP_OK);
    float want3[6] = {0, 2, 0, 3, 0, 0};
    assert_memory_equal(acts, want3, sizeof want3);
    up_sae_free(sae);

    assert_int_equal(up_sae_alloc(&sae, UP_SAE_TOPK, 4, 6, 7, 0, NULL, &err), UP_ERR_INVALID);
    assert_int_equal(up_sae_alloc(&sae, UP_SAE_RELU, 0, 6, 0, 0, NULL, &err), UP_ERR_INVALID);
}

/* Encoding many rows (more than one internal chunk) matches encoding them one at a time. */
static void test_batching(void **state) {
    (void)state;
    up_sae *sae;
    up_error err = {0};
    assert_int_equal(up_sae_load(&sae, FIX "/saelens_relu", 0, &err), UP_OK);
    expected e;
    load_expected(&e);
    int n = 600; /* > 2 chunks of 256 */
    float *x = malloc((size_t)n * 64 * sizeof *x), *a = malloc((size_t)n * 256 * sizeof *a);
    for (int r = 0; r < n; r++) memcpy(x + r * 64, e.x + (r % e.n) * 64, 64 * sizeof *x);
    assert_int_equal(up_sae_encode(sae, x, n, a, &err), UP_OK);
    const float *want = expected_tensor(&e, "saelens_relu", "acts", e.n, 256);
    quiet = 1;
    for (int r = 0; r < n; r++) compare("batched row", a + r * 256, want + (r % e.n) * 256, 256, 1);
    quiet = 0;
    assert_int_equal(up_sae_encode(sae, x, 0, a, &err), UP_OK);
    assert_int_equal(up_sae_encode(sae, x, -1, a, &err), UP_ERR_INVALID);
    free(x);
    free(a);
    up_sae_free(sae);
    up_safetensors_close(e.st);
}

static void test_save_round_trip(void **state) {
    (void)state;
    expected e;
    load_expected(&e);
    for (int f = 0; f < 5; f++) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", fixtures[f].name);
        up_sae *sae, *back;
        up_error err = {0};
        assert_int_equal(up_sae_load(&sae, path, 0, &err), UP_OK);
        if (sae->layer < 0) assert_int_equal(up_sae_set_hook(sae, 0, &err), UP_OK);
        const char *out = tpathf("saved_%s", fixtures[f].name);
        if (up_sae_save(sae, out, &err) != UP_OK) fail_msg("%s", err.msg);
        if (up_sae_load(&back, out, 0, &err) != UP_OK) fail_msg("%s", err.msg);
        assert_int_equal(back->arch, sae->arch);
        assert_int_equal(back->k, sae->k);
        assert_int_equal(back->apply_b_dec_to_input, sae->apply_b_dec_to_input);
        assert_string_equal(back->hook, sae->hook);
        assert_int_equal(back->layer, sae->layer);
        assert_memory_equal(back->W_enc, sae->W_enc, 64 * 256 * sizeof(float));
        assert_memory_equal(back->W_dec, sae->W_dec, 64 * 256 * sizeof(float));
        assert_memory_equal(back->b_dec, sae->b_dec, 64 * sizeof(float));
        check_against(back, &e, fixtures[f].name);
        up_sae_free(back);

        up_sae *dec_only;
        assert_int_equal(up_sae_load(&dec_only, path, UP_SAE_DECODER, &err), UP_OK);
        assert_int_equal(up_sae_save(dec_only, out, &err), UP_ERR_INVALID);
        up_sae_free(dec_only);
        up_sae_free(sae);
    }
    up_safetensors_close(e.st);
}

/* --- malformed SAEs -------------------------------------------------------------------- */

/* Rewrites a SAELens fixture's weights with one change: `drop` removed, `rename_from` renamed
 * to `rename_to`, `reshape` given the shape `shape` (its data truncated/zero-padded), or
 * `poison` holding a NaN. Values are taken from the fixture. */
typedef struct edit {
    const char *drop, *rename_from, *rename_to, *reshape, *poison;
    int ndim;
    int64_t shape[3];
    int log_of; /* store log(value) for the renamed array */
} edit;

static void write_weights(const char *src_dir, const char *dst_dir, const edit *ed) {
    char src[1200], dst[1200];
    snprintf(src, sizeof src, "%s/sae_weights.safetensors", src_dir);
    snprintf(dst, sizeof dst, "%s/sae_weights.safetensors", dst_dir);
    up_safetensors *st;
    up_safetensors_writer *w;
    up_error err = {0};
    assert_int_equal(up_safetensors_open_file(&st, src, &err), UP_OK);
    assert_int_equal(up_safetensors_writer_open(&w, dst, &err), UP_OK);
    for (int i = 0; i < up_safetensors_count(st); i++) {
        const char *name = up_safetensors_name(st, i);
        if (ed->drop && strcmp(name, ed->drop) == 0) continue;
        up_tensor t;
        assert_int_equal(up_safetensors_find(st, name, &t, &err), UP_OK);
        int64_t n = up_tensor_numel(&t);
        float *v = calloc((size_t)n + 4096, sizeof *v);
        memcpy(v, t.data, (size_t)n * sizeof *v);
        const char *out_name = name;
        int ndim = t.ndim;
        const int64_t *shape = t.shape;
        if (ed->rename_from && strcmp(name, ed->rename_from) == 0) {
            out_name = ed->rename_to;
            if (ed->log_of)
                for (int64_t j = 0; j < n; j++) v[j] = logf(v[j]);
        }
        if (ed->reshape && strcmp(name, ed->reshape) == 0) ndim = ed->ndim, shape = ed->shape;
        if (ed->poison && strcmp(name, ed->poison) == 0) v[n / 2] = NAN;
        assert_int_equal(up_safetensors_writer_add(w, out_name, UP_DTYPE_F32, ndim, shape, v, &err),
                         UP_OK);
        free(v);
    }
    assert_int_equal(up_safetensors_writer_close(w, &err), UP_OK);
    up_safetensors_close(st);
}

/* Replaces the first `find` in DIR/cfg.json with `replace`. */
static void edit_cfg(const char *dir, const char *find, const char *replace) {
    char p[1200];
    snprintf(p, sizeof p, "%s/cfg.json", dir);
    size_t n;
    char *cfg = (char *)slurp(p, &n);
    char *at = strstr(cfg, find);
    if (!at) fail_msg("%s not in %s", find, p);
    size_t a = (size_t)(at - cfg), fl = strlen(find), rl = strlen(replace);
    char *out = malloc(n - fl + rl + 1);
    memcpy(out, cfg, a);
    memcpy(out + a, replace, rl);
    memcpy(out + a + rl, at + fl, n - a - fl + 1);
    write_text(p, out);
    free(out);
    free(cfg);
}

/* Makes tmp/NAME from fixture FIX/FROM: cfg.json with `cfg_edit` applied (a textual
 * replacement "old=>new", or NULL) and weights with `ed` applied. */
static const char *variant(const char *name, const char *from, const char *find,
                           const char *replace, const edit *ed) {
    const char *dir = tpathf("%s", name);
    mkdirs(dir);
    char src_dir[512], from_cfg[1200], to_cfg[1200];
    snprintf(src_dir, sizeof src_dir, FIX "/%s", from);
    snprintf(from_cfg, sizeof from_cfg, "%s/cfg.json", src_dir);
    snprintf(to_cfg, sizeof to_cfg, "%s/cfg.json", dir);
    copy_file(from_cfg, to_cfg);
    if (find) edit_cfg(dir, find, replace);
    edit none = {0};
    write_weights(src_dir, dir, ed ? ed : &none);
    return dir;
}

static void expect_load_error(const char *path, up_status want, const char *n1, const char *n2) {
    up_sae *sae = (up_sae *)0x1;
    up_error err = {0};
    up_status s = up_sae_load(&sae, path, UP_SAE_ALL, &err);
    if (s != want || (n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
        fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\" and \"%s\"", path,
                 up_status_name(s), err.msg, up_status_name(want), n1 ? n1 : "",
                 n2 ? n2 : "");
    assert_null(sae);
    /* A decoder-only load checks the same things. */
    up_error err2 = {0};
    assert_int_equal(up_sae_load(&sae, path, UP_SAE_DECODER, &err2), want);
    assert_null(sae);
}

static void test_saelens_errors(void **state) {
    (void)state;
    edit e_drop = {.drop = "b_enc"};
    expect_load_error(variant("no_b_enc", "saelens_relu", NULL, NULL, &e_drop), UP_ERR_FORMAT,
                      "b_enc", "sae_weights.safetensors");
    edit e_thr = {.drop = "threshold"};
    expect_load_error(variant("no_thr", "saelens_jumprelu", NULL, NULL, &e_thr), UP_ERR_FORMAT,
                      "threshold", "sae_weights.safetensors");
    edit e_wenc = {.reshape = "W_enc", .ndim = 2, .shape = {64, 255}};
    expect_load_error(variant("bad_wenc", "saelens_relu", NULL, NULL, &e_wenc), UP_ERR_FORMAT,
                      "W_enc has shape (64, 255), expected (64, 256)", NULL);
    edit e_wenc_t = {.reshape = "W_enc", .ndim = 2, .shape = {256, 64}};
    expect_load_error(variant("transposed_wenc", "saelens_relu", NULL, NULL, &e_wenc_t),
                      UP_ERR_FORMAT, "W_enc", "(64, 256)");
    edit e_bdec = {.reshape = "b_dec", .ndim = 2, .shape = {1, 64}};
    expect_load_error(variant("bad_bdec", "saelens_relu", NULL, NULL, &e_bdec), UP_ERR_FORMAT,
                      "b_dec", "(64,)");
    edit e_wdec = {.reshape = "W_dec", .ndim = 3, .shape = {256, 64, 1}};
    expect_load_error(variant("bad_wdec", "saelens_relu", NULL, NULL, &e_wdec), UP_ERR_FORMAT,
                      "W_dec", NULL);
    edit e_nan = {.poison = "W_dec"};
    expect_load_error(variant("nan", "saelens_relu", NULL, NULL, &e_nan), UP_ERR_FORMAT,
                      "W_dec", "finite");
    expect_load_error(variant("d_sae", "saelens_relu", "\"d_sae\": 256", "\"d_sae\": 128", NULL),
                      UP_ERR_FORMAT, "d_sae 128", "cfg.json");
    expect_load_error(variant("norm", "saelens_relu", "\"normalize_activations\": \"none\"",
                              "\"normalize_activations\": \"expected_average_only_in\"", NULL),
                      UP_ERR_UNSUPPORTED, "normalize_activations", "expected_average_only_in");
    expect_load_error(variant("gated", "saelens_relu", "\"architecture\": \"standard\"",
                              "\"architecture\": \"gated\"", NULL),
                      UP_ERR_UNSUPPORTED, "gated", "cfg.json");
    expect_load_error(variant("tanh", "saelens_relu", "\"activation_fn_str\": \"relu\"",
                              "\"activation_fn_str\": \"tanh-relu\"", NULL),
                      UP_ERR_UNSUPPORTED, "tanh-relu", NULL);
    expect_load_error(variant("scaling", "saelens_relu", "\"finetuning_scaling_factor\": false",
                              "\"finetuning_scaling_factor\": true", NULL),
                      UP_ERR_UNSUPPORTED, "finetuning_scaling_factor", NULL);
    expect_load_error(variant("bad_apply", "saelens_relu", "\"apply_b_dec_to_input\": true",
                              "\"apply_b_dec_to_input\": \"yes\"", NULL),
                      UP_ERR_FORMAT, "apply_b_dec_to_input", NULL);
    expect_load_error(variant("no_k", "saelens_topk", "\"k\": 8,", "", NULL), UP_ERR_FORMAT, "k",
                      NULL);
    expect_load_error(variant("big_k", "saelens_topk", "\"k\": 8,", "\"k\": 257,", NULL),
                      UP_ERR_FORMAT, "257", NULL);
    expect_load_error(variant("rescale", "saelens_topk", "\"rescale_acts_by_decoder_norm\": false",
                              "\"rescale_acts_by_decoder_norm\": true", NULL),
                      UP_ERR_UNSUPPORTED, "rescale_acts_by_decoder_norm", NULL);
    expect_load_error(variant("hook_z", "saelens_jumprelu", "\"reshape_activations\": \"none\"",
                              "\"reshape_activations\": \"hook_z\"", NULL),
                      UP_ERR_UNSUPPORTED, "reshape_activations", NULL);
    expect_load_error(variant("bad_json", "saelens_relu", "{", "{{", NULL), UP_ERR_FORMAT,
                      "cfg.json", NULL);
    expect_load_error(variant("dup_key", "saelens_relu", "{", "{\"d_in\": 64, ", NULL),
                      UP_ERR_FORMAT, "cfg.json", NULL);
    expect_load_error(variant("layers_disagree", "saelens_relu", "\"hook_layer\": 1",
                              "\"hook_layer\": 2", NULL),
                      UP_ERR_FORMAT, "hook_layer", NULL);

    const char *no_w = tpathf("no_weights");
    mkdirs(no_w);
    char p[1200];
    snprintf(p, sizeof p, "%s/cfg.json", no_w);
    copy_file(FIX "/saelens_relu/cfg.json", p);
    expect_load_error(no_w, UP_ERR_IO, "sae_weights.safetensors", NULL);
}

/* Older and alternative spellings SAELens has written. */
static void test_saelens_variants(void **state) {
    (void)state;
    expected e;
    load_expected(&e);
    up_sae *sae;
    up_error err = {0};
    /* 5.x TopK: architecture "standard" with activation_fn_str "topk" and kwargs {k}. */
    const char *v5 = variant("topk_v5", "saelens_topk", "\"architecture\": \"topk\"",
                             "\"architecture\": \"standard\", \"activation_fn_str\": \"topk\", "
                             "\"activation_fn_kwargs\": {\"k\": 8}", NULL);
    edit_cfg(v5, "\"k\": 8, ", ""); /* remove the 6.x "k" so kwargs is what gives it */
    if (up_sae_load(&sae, v5, 0, &err) != UP_OK) fail_msg("%s", err.msg);
    assert_int_equal(sae->arch, UP_SAE_TOPK);
    assert_int_equal(sae->k, 8);
    check_against(sae, &e, "saelens_topk");
    up_sae_free(sae);

    /* A JumpReLU whose weights carry log_threshold instead of threshold (GemmaScope's
     * thresholds, which are positive, saved as SAELens and rewritten). */
    assert_int_equal(up_sae_load(&sae, FIX "/gemmascope_stored", 0, &err), UP_OK);
    const char *gs = tpathf("gs_as_saelens"), *lg = tpathf("log_thr");
    assert_int_equal(up_sae_save(sae, gs, &err), UP_OK);
    up_sae_free(sae);
    mkdirs(lg);
    char from[1200], to[1200];
    snprintf(from, sizeof from, "%s/cfg.json", gs);
    snprintf(to, sizeof to, "%s/cfg.json", lg);
    copy_file(from, to);
    edit e_log = {.rename_from = "threshold", .rename_to = "log_threshold", .log_of = 1};
    write_weights(gs, lg, &e_log);
    if (up_sae_load(&sae, lg, 0, &err) != UP_OK) fail_msg("%s", err.msg);
    check_against(sae, &e, "gemmascope_stored");
    up_sae_free(sae);

    /* No architecture key means "standard", no apply_b_dec_to_input means true (SAELens'
     * defaults), and SAELens 2.x spelled hook_name "hook_point". */
    const char *noarch = variant("no_arch", "saelens_relu",
                                 "\"architecture\": \"standard\", \"d_in\"", "\"d_in\"", NULL);
    edit_cfg(noarch, "\"apply_b_dec_to_input\": true, ", "");
    edit_cfg(noarch, "\"hook_name\"", "\"hook_point\"");
    if (up_sae_load(&sae, noarch, 0, &err) != UP_OK) fail_msg("%s", err.msg);
    assert_int_equal(sae->arch, UP_SAE_RELU);
    assert_int_equal(sae->apply_b_dec_to_input, 1);
    assert_string_equal(sae->hook, "blocks.1.hook_resid_post");
    check_against(sae, &e, "saelens_relu");
    up_sae_free(sae);
    up_safetensors_close(e.st);
}

/* Writes an npz whose members come from the GemmaScope fixture, with one edit. */
static void write_npz_variant(const char *path, const char *drop, const char *reshape_key) {
    int code;
    zip_t *src = zip_open(FIX "/gemmascope_stored/params.npz", ZIP_RDONLY, &code);
    assert_non_null(src);
    zip_t *dst = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &code);
    assert_non_null(dst);
    void *bufs[8];
    int nb = 0;
    for (zip_int64_t i = 0; i < zip_get_num_entries(src, 0); i++) {
        const char *name = zip_get_name(src, (zip_uint64_t)i, 0);
        if (drop && strncmp(name, drop, strlen(drop)) == 0 && name[strlen(drop)] == '.') continue;
        zip_stat_t sb;
        assert_int_equal(zip_stat_index(src, (zip_uint64_t)i, 0, &sb), 0);
        unsigned char *buf = malloc(sb.size);
        zip_file_t *zf = zip_fopen_index(src, (zip_uint64_t)i, 0);
        assert_int_equal(zip_fread(zf, buf, sb.size), (zip_int64_t)sb.size);
        zip_fclose(zf);
        if (reshape_key && strncmp(name, reshape_key, strlen(reshape_key)) == 0 &&
            name[strlen(reshape_key)] == '.') {
            /* (64, 256) -> (32, 512): same bytes, wrong shape */
            char *at = memmem(buf, sb.size, "(64, 256)", 9);
            assert_non_null(at);
            memcpy(at, "(32, 512)", 9);
        }
        bufs[nb++] = buf;
        zip_source_t *zs = zip_source_buffer(dst, buf, sb.size, 0);
        assert_true(zip_file_add(dst, name, zs, 0) >= 0);
    }
    assert_int_equal(zip_close(dst), 0);
    zip_discard(src);
    for (int i = 0; i < nb; i++) free(bufs[i]);
}

static void test_gemmascope_errors(void **state) {
    (void)state;
    mkdirs(tpathf("gs"));
    const char *p = tpathf("gs/no_threshold.npz");
    write_npz_variant(p, "threshold", NULL);
    expect_load_error(p, UP_ERR_FORMAT, "threshold", "no_threshold.npz");
    p = tpathf("gs/no_wdec.npz");
    write_npz_variant(p, "W_dec", NULL);
    expect_load_error(p, UP_ERR_FORMAT, "W_dec", "no_wdec.npz");
    p = tpathf("gs/bad_shape.npz");
    write_npz_variant(p, NULL, "W_enc");
    expect_load_error(p, UP_ERR_FORMAT, "W_enc has shape (32, 512), expected (64, 256)",
                      "bad_shape.npz");

    /* Not a zip at all, and a zip cut short. */
    p = tpathf("gs/garbage.npz");
    write_text(p, "this is not a zip archive, not even close; just some bytes of text\n");
    expect_load_error(p, UP_ERR_FORMAT, "garbage.npz", NULL);
    size_t n;
    unsigned char *whole = slurp(FIX "/gemmascope_deflated/params.npz", &n);
    p = tpathf("gs/truncated.npz");
    write_file(p, whole, n - 100);
    expect_load_error(p, UP_ERR_FORMAT, "truncated.npz", NULL);
    free(whole);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_partial_loads),
        cmocka_unit_test(test_hooks_and_model_check),
        cmocka_unit_test(test_semantics),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_save_round_trip),
        cmocka_unit_test(test_saelens_errors),
        cmocka_unit_test(test_saelens_variants),
        cmocka_unit_test(test_gemmascope_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
