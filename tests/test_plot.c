/* plot: every figure type renders to a PNG that decodes at the requested size, has real
 * content (many colours, a sane share of non-white pixels, the palette's colours), and carries
 * its text chunks; edge cases (empty, NaN, constant, long and invalid labels, 300 tokens)
 * render without failing; bad arguments are refused; nice ticks; same inputs, same pixels.
 * Layout rules a reader would notice are checked by colour counts: coinciding lines stay
 * visible, a heatmap's scale columns set its range, a matrix and the identity scatter are
 * cut to their content, the selection figure shades only dropped layers.
 * Set UP_PLOT_SAMPLES=dir to keep the figures there for a look. */
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

#include <cairo.h>

#include "plot/plot.h"
#include "formats/png.h"

static char outdir[512];
static int keep;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    (void)state;
    const char *dir = getenv("UP_PLOT_SAMPLES");
    if (dir && *dir) {
        snprintf(outdir, sizeof outdir, "%s", dir);
        mkdir(outdir, 0755);
        keep = 1;
        return 0;
    }
    snprintf(outdir, sizeof outdir, "/tmp/up_test_plot_XXXXXX");
    return mkdtemp(outdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return keep ? 0 : nftw(outdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tpath(const char *name) {
    static char buf[4][600];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 600, "%s/%s", outdir, name);
    return p;
}

static const char *meta_keys[] = {"manifest", "experiment"};
static const char *meta_vals[] = {"{\"run\": \"2024-06-01T12-00-00\", \"seed\": 42}", "case_study"};

static up_plot_style style(const char *title) {
    up_plot_style st = up_plot_style_default();
    st.title = title;
    st.meta_keys = meta_keys;
    st.meta_values = meta_vals;
    st.n_meta = 2;
    return st;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct stats {
    int w, h;
    int colors;         /* distinct RGB values */
    double nonwhite;    /* fraction of pixels that are not #FFFFFF */
} stats;

/* Decodes path, checks its size and text chunks, and returns its pixel statistics. `need`
 * lists RGB colours (0xRRGGBB) that must appear exactly somewhere, ended by -1. */
static stats check_png(const char *path, int w, int h, const int *need) {
    up_png_image img;
    up_error e = {0};
    if (up_png_read(path, &img, &e)) fail_msg("%s", e.msg);
    assert_int_equal(img.w, w);
    assert_int_equal(img.h, h);
    assert_int_equal(img.file_channels, 3);
    const char *m = up_png_text(&img, "manifest");
    assert_non_null(m);
    assert_string_equal(m, meta_vals[0]);
    assert_non_null(up_png_text(&img, "experiment"));
    assert_non_null(up_png_text(&img, "Software"));
    size_t n = (size_t)w * h;
    uint32_t *px = malloc(n * sizeof *px);
    assert_non_null(px);
    size_t white = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = img.pixels + 4 * i;
        px[i] = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        white += px[i] == 0xFFFFFF;
    }
    for (const int *c = need; c && *c >= 0; c++) {
        int found = 0;
        for (size_t i = 0; i < n && !found; i++) found = px[i] == (uint32_t)*c;
        if (!found) fail_msg("%s: colour #%06X not found", path, *c);
    }
    qsort(px, n, sizeof *px, cmp_u32);
    int colors = 1;
    for (size_t i = 1; i < n; i++) colors += px[i] != px[i - 1];
    free(px);
    up_png_image_free(&img);
    return (stats){w, h, colors, 1.0 - (double)white / n};
}

/* The PNG's size (figures that crop to their content choose it). */
static void png_size(const char *path, int *w, int *h) {
    up_png_image img;
    up_error e = {0};
    if (up_png_read(path, &img, &e)) fail_msg("%s", e.msg);
    *w = img.w, *h = img.h;
    up_png_image_free(&img);
}

/* How many pixels of path are exactly the colour rgb (0xRRGGBB). */
static long count_color(const char *path, unsigned rgb) {
    up_png_image img;
    up_error e = {0};
    if (up_png_read(path, &img, &e)) fail_msg("%s", e.msg);
    long n = 0;
    for (size_t i = 0; i < (size_t)img.w * img.h; i++) {
        const uint8_t *q = img.pixels + 4 * i;
        n += ((unsigned)q[0] << 16 | (unsigned)q[1] << 8 | q[2]) == rgb;
    }
    up_png_image_free(&img);
    return n;
}

/* A figure with content: anti-aliased text and shapes give many colours; it is neither blank
 * nor a flood fill. */
static void assert_content(stats s, double lo, double hi) {
    if (s.colors < 50) fail_msg("only %d distinct colours", s.colors);
    if (!(s.nonwhite > lo && s.nonwhite < hi)) fail_msg("non-white fraction %.3f outside (%.2f, %.2f)", s.nonwhite, lo, hi);
}

/* ---- ticks ---- */

static void test_ticks(void **state) {
    (void)state;
    double t[64], step;
    int n = up_plot_ticks(0, 1, 5, t, &step);
    assert_int_equal(n, 6);
    assert_true(fabs(step - 0.2) < 1e-12);
    assert_true(t[0] == 0 && fabs(t[5] - 1) < 1e-12);
    n = up_plot_ticks(-3.7, 12.2, 5, t, &step);
    assert_true(step == 2 || step == 5);
    for (int i = 0; i < n; i++) {
        assert_true(t[i] >= -3.7 && t[i] <= 12.2);
        double k = t[i] / step;
        assert_true(fabs(k - round(k)) < 1e-9);
    }
    n = up_plot_ticks(1e-7, 3e-7, 4, t, &step); /* tiny scales */
    assert_true(n >= 2 && step > 0 && step < 1e-7);
    n = up_plot_ticks(5, 5, 5, t, &step); /* degenerate: widened, still ticks */
    assert_true(n >= 2 && step > 0);
    n = up_plot_ticks(0, 0, 5, t, &step);
    assert_true(n >= 2);
    n = up_plot_ticks(NAN, INFINITY, 5, t, &step);
    assert_true(n >= 2);
    n = up_plot_ticks(-1e300, 1e300, 1000, t, &step); /* capped */
    assert_true(n >= 2 && n <= 64);
    /* 1-2-5 steps only */
    for (double span = 0.013; span < 1e4; span *= 1.37) {
        up_plot_ticks(0, span, 6, t, &step);
        double m = step / pow(10, floor(log10(step) + 1e-9));
        assert_true(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6);
    }
}

/* ---- the six figure types ---- */

static void test_bars(void **state) {
    (void)state;
    const char *labels[16];
    double values[16];
    char buf[16][64];
    static const char *names[] = {"hugging", "apologies", "legal advice", "weapons", "chemistry", "poetry",
                                  "sarcasm", "cooking", "code", "children's stories", "refusal-ish", "medicine",
                                  "Python lists", "greetings", "numbers", "French"};
    for (int i = 0; i < 16; i++) {
        snprintf(buf[i], sizeof buf[i], "L%d/16k #%d \xE2\x80\x94 %s", 3 + i % 4, 1000 + 137 * i, names[i]);
        labels[i] = buf[i];
        values[i] = i < 8 ? 0.9 - 0.1 * i : -0.05 - 0.08 * (i - 8);
    }
    up_plot_bars_data d = {16, labels, values, 8, NULL, "raises R (top-8)", "lowers R (bottom-8)"};
    up_plot_style st = style("Latents upstream of refusal \xE2\x80\x94 top and bottom 8");
    st.subtitle = "gemma-2-2b-it, target layer 10, S_k = mean_t RG[t,k]";
    st.xlabel = "score S_k";
    up_error e = {0};
    const char *p = tpath("bars.png");
    if (up_plot_bars(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need[] = {0xD55E00, 0x0072B2, -1};
    stats s = check_png(p, 1600, 1000, need);
    assert_content(s, 0.05, 0.6);

    up_png_image img;
    assert_int_equal(up_png_read(p, &img, &e), UP_OK);
    assert_string_equal(up_png_text(&img, "Title"), st.title); /* the title becomes a chunk */
    up_png_image_free(&img);
}

/* Bars that are all negative end at zero on the right: the last tick label ("0.000") must stay
 * inside the canvas, i.e. the rightmost columns carry no text ink (they did: half the label
 * was cut off at the edge). */
static void test_bars_all_negative(void **state) {
    (void)state;
    const char *labels[10];
    double values[10];
    char buf[10][32];
    for (int i = 0; i < 10; i++) {
        snprintf(buf[i], sizeof buf[i], "#%d", 800 + 41 * i);
        labels[i] = buf[i];
        values[i] = -0.0399 + 0.0016 * i;
    }
    up_plot_bars_data d = {10, labels, values, 0, NULL, "lowers R", NULL};
    up_plot_style st = style("Negatively aligned latents");
    st.xlabel = "mean S_k";
    up_error e = {0};
    const char *p = tpath("bars_negative.png");
    if (up_plot_bars(p, &st, &d, &e)) fail_msg("%s", e.msg);
    up_png_image img;
    assert_int_equal(up_png_read(p, &img, &e), UP_OK);
    int dark = 0;
    for (int y = 0; y < img.h; y++)
        for (int x = img.w - 4; x < img.w; x++) {
            const uint8_t *px = img.pixels + 4 * ((size_t)y * img.w + x);
            dark += px[0] < 160 && px[1] < 160 && px[2] < 160;
        }
    up_png_image_free(&img);
    if (dark) fail_msg("%d dark pixels in the rightmost 4 columns: a label runs off the canvas", dark);
}

static double rg(int t, int k) { return sin(0.37 * t + k) * exp(-0.5 * (k % 3)) * (t % 7 == 3 ? 3 : 1); }

static void test_heatmap(void **state) {
    (void)state;
    static const char *tokens[] = {"<bos>", "<start_of_turn>", "user", "\n", "How", " do", " I", " make",
                                   " a", " bomb", "?", "<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"};
    enum { T = 16, K = 8 };
    const char *rows[K];
    char rb[K][48];
    double v[K * T];
    for (int k = 0; k < K; k++) {
        snprintf(rb[k], sizeof rb[k], "L5/16k #%d", 200 + 1111 * k);
        rows[k] = rb[k];
        for (int t = 0; t < T; t++) v[k * T + t] = rg(t, k);
    }
    v[3] = NAN; /* a missing cell */
    up_plot_heatmap_data d = up_plot_heatmap_default();
    d.rows = K, d.cols = T, d.values = v, d.row_labels = rows, d.col_labels = tokens;
    d.colorbar_label = "RG[t, k]";
    up_plot_style st = style("Per-token refusal gradient RG[t,k]");
    st.xlabel = "prompt token";
    st.ylabel = "latent";
    up_error e = {0};
    const char *p = tpath("heatmap.png");
    if (up_plot_heatmap(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need[] = {0xBDBDBD, -1}; /* the NaN cell */
    assert_content(check_png(p, 1600, 1000, need), 0.2, 0.95);
}

static void test_lines(void **state) {
    (void)state;
    enum { A = 9, S = 5 };
    double alpha[A], y[S][A], err[A];
    for (int i = 0; i < A; i++) alpha[i] = -8 + 2 * i, err[i] = 0.15 + 0.02 * i;
    up_plot_series sr[S];
    static const char *names[S] = {"#1234 hugging", "#877 apologies", "#40 weapons", "random latents (n = 8)",
                                   "#5 poetry"};
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < A; i++) y[s][i] = s == 3 ? 0.05 * sin(i) - 1.0 : -1.0 + (s + 1) * 0.12 * alpha[i] * (s == 4 ? -0.5 : 1);
        sr[s] = (up_plot_series){names[s], A, alpha, y[s], s == 0 ? err : NULL, s == 3};
    }
    up_plot_lines_data d = up_plot_lines_default();
    d.n_series = S, d.series = sr, d.baseline = -1.0, d.baseline_label = "no steering";
    up_plot_style st = style("Steering dose\xE2\x80\x93response");
    st.xlabel = "steering coefficient \xCE\xB1";
    st.ylabel = "refusal score";
    up_error e = {0};
    const char *p = tpath("lines.png");
    if (up_plot_lines(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need[] = {0x0072B2, 0xD55E00, 0x009E73, 0x8C8C8C, -1};
    assert_content(check_png(p, 1600, 1000, need), 0.02, 0.4);

    /* grouped bars over categories (Kendall τ vs setting), and categorical lines */
    static const char *cats[] = {"L3/16k", "L5/16k", "L5/65k", "L7/16k", "mean-pos", "cosine"};
    double t1[6] = {0.82, 0.74, 0.61, 0.55, 0.9, 0.4}, t2[6] = {0.7, 0.71, 0.5, NAN, 0.85, 0.33}, e1[6] = {0.05, 0.04, 0.06, 0.05, 0.02, 0.08};
    up_plot_series g[2] = {{"top-20", 6, NULL, t1, e1, 0}, {"bottom-20", 6, NULL, t2, NULL, 0}};
    up_plot_lines_data gd = up_plot_lines_default();
    gd.n_series = 2, gd.series = g, gd.x_labels = cats, gd.n_x_labels = 6, gd.bars = 1;
    st = style("Rank stability across settings");
    st.ylabel = "Kendall \xCF\x84 vs reference";
    p = tpath("groups.png");
    if (up_plot_lines(p, &st, &gd, &e)) fail_msg("%s", e.msg);
    int need2[] = {0x0072B2, 0xD55E00, -1};
    assert_content(check_png(p, 1600, 1000, need2), 0.05, 0.6);
    gd.bars = 0;
    p = tpath("lines_categorical.png");
    if (up_plot_lines(p, &st, &gd, &e)) fail_msg("%s", e.msg);
    assert_content(check_png(p, 1600, 1000, need2), 0.01, 0.4);
}

static void test_scatter(void **state) {
    (void)state;
    enum { N = 40 };
    double x[N], y[N];
    int grp[N];
    const char *labels[N];
    char lb[N][32];
    static const char *groups[] = {"#1234", "#877", "#40", "#5", "#99"};
    for (int i = 0; i < N; i++) {
        grp[i] = i % 5;
        x[i] = (i % 8 - 4) * 0.3 * (1 + grp[i] * 0.2);
        y[i] = x[i] * (0.9 - 0.04 * fabs(x[i])) + 0.03 * sin(i * 1.7);
        snprintf(lb[i], sizeof lb[i], "\xCE\xB1=%d", i % 8 - 4);
        labels[i] = i % 3 == 0 ? lb[i] : NULL;
    }
    up_plot_scatter_data d = {N, x, y, grp, groups, 5, labels, 1, 0};
    up_plot_style st = style("Linearity check: predicted vs measured \xCE\x94R");
    st.xlabel = "predicted \xCE\x94R = \xCE\xB1 \xC2\xB7 \xCE\xA3_t RG[t,k]";
    st.ylabel = "measured \xCE\x94R";
    up_error e = {0};
    const char *p = tpath("scatter.png");
    if (up_plot_scatter(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need[] = {0x0072B2, 0xD55E00, 0x009E73, 0xE69F00, 0xCC79A7, -1};
    /* The identity plot's square frame leaves room on the right: the PNG is cut to the
     * content (legend included) instead of centring the square in empty space. */
    int w, h;
    png_size(p, &w, &h);
    assert_true(w < 1400 && w > 900);
    assert_int_equal(h, 1000);
    assert_content(check_png(p, w, h, need), 0.01, 0.5);
    d.identity = 0;
    p = tpath("scatter_free.png");
    if (up_plot_scatter(p, &st, &d, &e)) fail_msg("%s", e.msg);
    assert_content(check_png(p, 1600, 1000, need), 0.01, 0.4);
    /* A control group is grey, and the palette goes on with the next group: the five groups
     * with the first as controls show grey and the first four palette colours, not the fifth. */
    d.control_group = 1;
    p = tpath("scatter_control.png");
    if (up_plot_scatter(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need_c[] = {0x8C8C8C, 0x0072B2, 0xD55E00, 0x009E73, 0xE69F00, -1};
    assert_content(check_png(p, 1600, 1000, need_c), 0.01, 0.4);
    assert_int_equal(count_color(p, 0xCC79A7), 0);
    d.control_group = 6;
    assert_int_equal(up_plot_scatter(p, &st, &d, &e), UP_ERR_INVALID);
}

/* Coinciding series (same points) are drawn nested: the first drawn keeps a visible ring
 * of its colour around the later one instead of vanishing under it. */
static void test_lines_overlap(void **state) {
    (void)state;
    double x[5] = {-4, -2, 0, 2, 4}, y[5] = {0, 1, 1, 1, 1}, y2[5] = {0.2, 0.4, 0.5, 0.7, 0.9};
    up_plot_series sr[3] = {{"#1 first", 5, x, y, NULL, 0}, {"#2 same", 5, x, y, NULL, 0}, {"#3 other", 5, x, y2, NULL, 0}};
    up_plot_lines_data d = up_plot_lines_default();
    d.n_series = 3, d.series = sr;
    up_plot_style st = style("Refusal rate");
    up_error e = {0};
    const char *p = tpath("lines_overlap.png");
    if (up_plot_lines(p, &st, &d, &e)) fail_msg("%s", e.msg);
    long first = count_color(p, 0x0072B2), second = count_color(p, 0xD55E00), other = count_color(p, 0x009E73);
    /* the hidden series shows about as much colour as one drawn alone */
    if (!(first > other / 2)) fail_msg("first of two coinciding lines: %ld pixels, a lone line %ld", first, other);
    assert_true(second > other / 2);
}

/* The heatmap's colour range comes from the scale columns only: a cell at their maximum gets
 * the map's end colour although another column is 100 times larger. */
static void test_heatmap_scale_columns(void **state) {
    (void)state;
    double v[2 * 4] = {0.1, 0.05, -0.02, 10, 0.03, 0.1, 0.01, 8};
    static const char *cols[4] = {"How", "\xE2\x90\xA3", "person", "<start_of_turn>"};
    unsigned char scale[4] = {1, 1, 1, 0}, marked[4] = {0, 1, 1, 0};
    up_plot_heatmap_data d = up_plot_heatmap_default();
    d.rows = 2, d.cols = 4, d.values = v, d.col_labels = cols, d.cmap = UP_PLOT_CMAP_DIVERGING;
    up_plot_style st = style("RG[t, k]");
    up_error e = {0};
    const char *whole = tpath("heat_whole.png"), *scaled = tpath("heat_scaled.png"), *mk = tpath("heat_marked.png");
    if (up_plot_heatmap(whole, &st, &d, &e)) fail_msg("%s", e.msg);
    d.scale_cols = scale;
    if (up_plot_heatmap(scaled, &st, &d, &e)) fail_msg("%s", e.msg);
    long end_whole = count_color(whole, 0x67001F), end_scaled = count_color(scaled, 0x67001F);
    /* the last column's two cells, then those two plus the two cells at 0.1 */
    if (!(end_scaled > 1.7 * end_whole)) fail_msg("end colour: %ld pixels scaled, %ld not", end_scaled, end_whole);
    d.marked_cols = marked, d.mark_label = "S_k averages these 2 tokens";
    if (up_plot_heatmap(mk, &st, &d, &e)) fail_msg("%s", e.msg);
    int w, h;
    png_size(mk, &w, &h);
    assert_content(check_png(mk, w, h, NULL), 0.1, 0.95);
    /* the bracket and its label add ink over the grid; the grey labels change pixels too */
    assert_true(count_color(mk, 0xFFFFFF) != count_color(scaled, 0xFFFFFF));
}

static void test_selection(void **state) {
    (void)state;
    enum { P = 5, L = 26 };
    double by[P * L], in[P * L], kl[P * L];
    unsigned dr[P * L];
    for (int p = 0; p < P; p++)
        for (int l = 0; l < L; l++) {
            int i = p * L + l;
            double bump = exp(-0.5 * pow((l - 10 - p * 0.5) / 3.0, 2));
            by[i] = 4 - 7 * bump * (1 - 0.12 * p);
            in[i] = -3 + 6 * bump * (1 - 0.1 * p) - 0.04 * l;
            kl[i] = 0.004 * exp(0.22 * l) * (1 + p);
            dr[i] = (l >= 21) | (kl[i] > 0.1) << 1 | (in[i] < 0) << 2;
        }
    in[2 * L + 4] = NAN;
    static const char *pos[P] = {"pos \xE2\x88\x92" "5 <end_of_turn>", "pos \xE2\x88\x92" "4 \\n",
                                 "pos \xE2\x88\x92" "3 <start_of_turn>", "pos \xE2\x88\x92" "2 model",
                                 "pos \xE2\x88\x92" "1 \\n"};
    up_plot_selection_data d = up_plot_selection_default();
    d.n_pos = P, d.n_layers = L, d.bypass = by, d.induce = in, d.kl = kl, d.dropped = dr, d.pos_labels = pos;
    d.best = 3 * L + 11, d.max_kl = 0.1, d.min_induce = 0, d.max_layer = 21;
    up_plot_style st = style("Direction selection (Arditi et al.)");
    up_error e = {0};
    const char *p = tpath("selection.png");
    if (up_plot_selection(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need[] = {0x0072B2, 0xD55E00, 0x009E73, 0xE69F00, 0xCC79A7, -1};
    assert_content(check_png(p, 1600, 1000, need), 0.02, 0.5);

    /* Layers ≥ max_layer are dropped, so the shade starts at the first whole such layer:
     * 20.4 and 21 shade the same layers (21..25), 20 one more. */
    long shade[3];
    double cut[3] = {20.4, 21, 20};
    for (int i = 0; i < 3; i++) {
        d.max_layer = cut[i];
        p = tpath("selection_cut.png");
        if (up_plot_selection(p, &st, &d, &e)) fail_msg("%s", e.msg);
        shade[i] = count_color(p, 0xEDEDED);
    }
    if (shade[0] != shade[1] || !(shade[2] > shade[1]))
        fail_msg("shaded pixels: %ld (20.4), %ld (21), %ld (20)", shade[0], shade[1], shade[2]);
}

static void test_matrix(void **state) {
    (void)state;
    enum { N = 6 };
    static const char *names[N] = {"L3/16k", "L5/16k", "L5/65k", "L7/16k", "mean over positions", "last position"};
    double m[N * N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) m[i * N + j] = i == j ? 1 : 0.9 / (1 + abs(i - j)) - 0.02 * (i + j);
    up_plot_heatmap_data d = up_plot_heatmap_default();
    d.rows = d.cols = N, d.values = m, d.row_labels = d.col_labels = names;
    d.colorbar_label = "Jaccard@20";
    up_plot_style st = style("Top-20 overlap between settings (Jaccard@20)");
    up_error e = {0};
    st.xlabel = st.ylabel = "setting";
    const char *p = tpath("matrix.png");
    if (up_plot_matrix(p, &st, &d, &e)) fail_msg("%s", e.msg);
    int need[] = {0xFDE725, -1}; /* viridis top: the diagonal at exactly 1 */
    /* Square cells leave width over: the PNG is cut to the content, not centred in it. */
    int w, h;
    png_size(p, &w, &h);
    assert_true(w < 1400 && w > 600);
    assert_true(h <= 1000);
    assert_content(check_png(p, w, h, need), 0.15, 0.95);
    st.width = 1600; /* a width asked for is kept */
    p = tpath("matrix_1600.png");
    if (up_plot_matrix(p, &st, &d, &e)) fail_msg("%s", e.msg);
    png_size(p, &w, &h);
    assert_int_equal(w, 1600);
}

/* ---- edge cases ---- */

static void test_empty(void **state) {
    (void)state;
    up_plot_style st = style("Nothing to show");
    up_error e = {0};
    up_plot_bars_data b = {0};
    assert_int_equal(up_plot_bars(tpath("empty_bars.png"), &st, &b, &e), UP_OK);
    up_plot_heatmap_data h = up_plot_heatmap_default();
    assert_int_equal(up_plot_heatmap(tpath("empty_heatmap.png"), &st, &h, &e), UP_OK);
    assert_int_equal(up_plot_matrix(tpath("empty_matrix.png"), &st, &h, &e), UP_OK);
    up_plot_lines_data l = up_plot_lines_default();
    assert_int_equal(up_plot_lines(tpath("empty_lines.png"), &st, &l, &e), UP_OK);
    up_plot_series one = {"only NaN", 2, NULL, (double[]){NAN, INFINITY}, NULL, 0};
    l.n_series = 1, l.series = &one;
    assert_int_equal(up_plot_lines(tpath("empty_lines_nan.png"), &st, &l, &e), UP_OK);
    up_plot_scatter_data sc = {0};
    assert_int_equal(up_plot_scatter(tpath("empty_scatter.png"), &st, &sc, &e), UP_OK);
    up_plot_selection_data se = up_plot_selection_default();
    assert_int_equal(up_plot_selection(tpath("empty_selection.png"), &st, &se, &e), UP_OK);
    /* "no data" is drawn: some text, mostly white */
    stats s = check_png(tpath("empty_bars.png"), 1600, 1000, NULL);
    assert_true(s.nonwhite > 0.001 && s.nonwhite < 0.95);
}

static void test_nan_and_constant(void **state) {
    (void)state;
    up_plot_style st = style("NaN and constant data");
    up_error e = {0};
    const char *labels[] = {"a", "b", "c", "d"};
    double nanv[] = {NAN, 0.5, INFINITY, -0.25};
    up_plot_bars_data b = {4, labels, nanv, 0, NULL, NULL, NULL};
    if (up_plot_bars(tpath("nan_bars.png"), &st, &b, &e)) fail_msg("%s", e.msg);
    double same[] = {0.3, 0.3, 0.3, 0.3};
    b.values = same;
    if (up_plot_bars(tpath("const_bars.png"), &st, &b, &e)) fail_msg("%s", e.msg);
    double zeros[] = {0, 0, 0, 0};
    b.values = zeros;
    if (up_plot_bars(tpath("zero_bars.png"), &st, &b, &e)) fail_msg("%s", e.msg);

    up_plot_heatmap_data h = up_plot_heatmap_default();
    double allnan[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
    h.rows = 2, h.cols = 3, h.values = allnan;
    if (up_plot_heatmap(tpath("nan_heatmap.png"), &st, &h, &e)) fail_msg("%s", e.msg);
    double c6[6] = {2, 2, 2, 2, 2, 2};
    h.values = c6;
    h.annotate = 1;
    if (up_plot_heatmap(tpath("const_heatmap.png"), &st, &h, &e)) fail_msg("%s", e.msg);
    h.cmap = UP_PLOT_CMAP_DIVERGING;
    if (up_plot_heatmap(tpath("const_heatmap_div.png"), &st, &h, &e)) fail_msg("%s", e.msg);

    double xs[] = {1, 2, 3, 4}, ys[] = {5, 5, 5, 5};
    up_plot_series sr = {"flat", 4, xs, ys, NULL, 0};
    up_plot_lines_data l = up_plot_lines_default();
    l.n_series = 1, l.series = &sr;
    if (up_plot_lines(tpath("const_lines.png"), &st, &l, &e)) fail_msg("%s", e.msg);
    l.ylog = 1; /* log axis with a single value */
    if (up_plot_lines(tpath("const_lines_log.png"), &st, &l, &e)) fail_msg("%s", e.msg);
    up_plot_scatter_data sc = {4, ys, ys, NULL, NULL, 0, NULL, 1, 0};
    if (up_plot_scatter(tpath("const_scatter.png"), &st, &sc, &e)) fail_msg("%s", e.msg);
    double xn[] = {NAN, 1, 2, INFINITY};
    sc.x = xn;
    if (up_plot_scatter(tpath("nan_scatter.png"), &st, &sc, &e)) fail_msg("%s", e.msg);

    up_plot_selection_data se = up_plot_selection_default();
    double one[3] = {NAN, 1, 1}, kl0[3] = {0, 0, 0};
    se.n_pos = 1, se.n_layers = 3, se.bypass = one, se.induce = one, se.kl = kl0, se.best = 0; /* chosen is NaN */
    if (up_plot_selection(tpath("nan_selection.png"), &st, &se, &e)) fail_msg("%s", e.msg);
}

static void test_long_and_odd_labels(void **state) {
    (void)state;
    char longl[2000];
    memset(longl, 'x', sizeof longl - 1);
    memcpy(longl, "L12/65k #65535 \xE2\x80\x94 ", 19);
    longl[sizeof longl - 1] = 0;
    const char *labels[] = {longl, "bad \xff\xfe utf8 \xC0\xAF", "ctrl \x01\x02\t\n\r", "", NULL,
                            "\xE2\x80\x94\xE2\x80\x94\xE2\x80\x94 dashes \xCE\xB1\xCE\xB2"};
    double v[] = {1.5, -0.5, 0.25, 2, -1, 0.1};
    up_plot_style st = style(longl); /* even the title is too long */
    st.subtitle = longl;
    st.xlabel = "bad \xff";
    up_error e = {0};
    up_plot_bars_data b = {6, labels, v, 3, "%+.2f", longl, "neg"};
    if (up_plot_bars(tpath("long_bars.png"), &st, &b, &e)) fail_msg("%s", e.msg);
    up_plot_heatmap_data h = up_plot_heatmap_default();
    h.rows = 2, h.cols = 6, h.values = (double[12]){1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6};
    h.row_labels = labels, h.col_labels = labels, h.annotate = 1, h.colorbar_label = longl;
    if (up_plot_heatmap(tpath("long_heatmap.png"), &st, &h, &e)) fail_msg("%s", e.msg);
    up_plot_series sr[6];
    for (int i = 0; i < 6; i++) sr[i] = (up_plot_series){labels[i], 6, NULL, v, NULL, i == 5};
    up_plot_lines_data l = up_plot_lines_default();
    l.n_series = 6, l.series = sr, l.x_labels = labels, l.n_x_labels = 6;
    if (up_plot_lines(tpath("long_lines.png"), &st, &l, &e)) fail_msg("%s", e.msg);
    int grp[6] = {0, 1, 2, 3, 4, 5};
    up_plot_scatter_data sc = {6, v, v, grp, labels, 6, labels, 0, 0};
    if (up_plot_scatter(tpath("long_scatter.png"), &st, &sc, &e)) fail_msg("%s", e.msg);
    /* the title chunk is cleaned UTF-8 even though the title was too long for the figure */
    up_png_image img;
    assert_int_equal(up_png_read(tpath("long_bars.png"), &img, &e), UP_OK);
    assert_non_null(up_png_text(&img, "Title"));
    up_png_image_free(&img);
}

static void test_many_tokens(void **state) {
    (void)state;
    enum { T = 300, K = 12 };
    double *v = malloc(sizeof(double) * T * K);
    const char *tok[T];
    char tb[T][24];
    for (int t = 0; t < T; t++) {
        snprintf(tb[t], sizeof tb[t], t % 11 == 0 ? "\n" : " token%d", t);
        tok[t] = tb[t];
        for (int k = 0; k < K; k++) v[k * T + t] = rg(t, k) * (t > 280 ? 4 : 1);
    }
    up_plot_heatmap_data h = up_plot_heatmap_default();
    h.rows = K, h.cols = T, h.values = v, h.col_labels = tok, h.annotate = 1; /* too small: skipped */
    up_plot_style st = style("300 tokens");
    st.xlabel = "token";
    up_error e = {0};
    const char *p = tpath("heatmap_300.png");
    if (up_plot_heatmap(p, &st, &h, &e)) fail_msg("%s", e.msg);
    assert_content(check_png(p, 1600, 1000, NULL), 0.3, 0.97);
    /* many latents too: 300 rows of bars */
    const char *lab[T];
    for (int i = 0; i < T; i++) lab[i] = tok[i];
    up_plot_bars_data b = {T, lab, v, 150, NULL, NULL, NULL};
    p = tpath("bars_300.png");
    if (up_plot_bars(p, &st, &b, &e)) fail_msg("%s", e.msg);
    check_png(p, 1600, 1000, NULL);
    free(v);
}

static void test_sizes_and_determinism(void **state) {
    (void)state;
    double v[] = {0.3, -0.2, 0.1};
    up_plot_bars_data b = {3, NULL, v, 0, NULL, NULL, NULL};
    up_plot_style st = style("small");
    st.width = 640, st.height = 400;
    up_error e = {0};
    if (up_plot_bars(tpath("small.png"), &st, &b, &e)) fail_msg("%s", e.msg);
    check_png(tpath("small.png"), 640, 400, NULL);
    st.width = 3200, st.height = 2000; /* print size: scale 4 */
    if (up_plot_bars(tpath("big.png"), &st, &b, &e)) fail_msg("%s", e.msg);
    check_png(tpath("big.png"), 3200, 2000, NULL);
    st.width = 900, st.height = 1400, st.scale = 1.5, st.font_size = 14; /* portrait, explicit scale */
    if (up_plot_bars(tpath("portrait.png"), &st, &b, &e)) fail_msg("%s", e.msg);
    check_png(tpath("portrait.png"), 900, 1400, NULL);

    st = style("same twice");
    assert_int_equal(up_plot_bars(tpath("det1.png"), &st, &b, &e), UP_OK);
    assert_int_equal(up_plot_bars(tpath("det2.png"), &st, &b, &e), UP_OK);
    up_png_image a, c;
    assert_int_equal(up_png_read(tpath("det1.png"), &a, &e), UP_OK);
    assert_int_equal(up_png_read(tpath("det2.png"), &c, &e), UP_OK);
    assert_memory_equal(a.pixels, c.pixels, (size_t)a.w * a.h * 4);
    up_png_image_free(&a);
    up_png_image_free(&c);
}

static void test_bad_arguments(void **state) {
    (void)state;
    up_plot_style st = style("bad");
    up_error e = {0};
    double v[] = {1, 2};
    up_plot_bars_data b = {2, NULL, v, 0, "%s", NULL, NULL}; /* would read a pointer */
    assert_int_equal(up_plot_bars(tpath("bad.png"), &st, &b, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "value_format"));
    b.value_format = "%f %f";
    assert_int_equal(up_plot_bars(tpath("bad.png"), &st, &b, &e), UP_ERR_INVALID);
    b.value_format = "%.1f%%";
    assert_int_equal(up_plot_bars(tpath("ok.png"), &st, &b, &e), UP_OK);
    b.value_format = NULL, b.n = -1;
    assert_int_equal(up_plot_bars(tpath("bad.png"), &st, &b, &e), UP_ERR_INVALID);
    b.n = 2, b.values = NULL;
    assert_int_equal(up_plot_bars(tpath("bad.png"), &st, &b, &e), UP_ERR_INVALID);
    b.values = v;
    assert_int_equal(up_plot_bars(NULL, &st, &b, &e), UP_ERR_INVALID);
    up_plot_style big = st;
    big.width = 100000;
    assert_int_equal(up_plot_bars(tpath("bad.png"), &big, &b, &e), UP_ERR_INVALID);
    const char *badkey[] = {"bad  key"}, *val[] = {"v"};
    big = st, big.meta_keys = badkey, big.meta_values = val, big.n_meta = 1;
    assert_int_equal(up_plot_bars(tpath("bad.png"), &big, &b, &e), UP_ERR_INVALID);
    assert_int_equal(up_plot_bars(tpath("no/such/dir/x.png"), &st, &b, &e), UP_ERR_IO);

    int grp[] = {0, 3};
    const char *gn[] = {"a", "b"};
    up_plot_scatter_data sc = {2, v, v, grp, gn, 2, NULL, 0, 0};
    assert_int_equal(up_plot_scatter(tpath("bad.png"), &st, &sc, &e), UP_ERR_INVALID);
    up_plot_lines_data l = up_plot_lines_default();
    l.bars = 1; /* bars need categories */
    assert_int_equal(up_plot_lines(tpath("bad.png"), &st, &l, &e), UP_ERR_INVALID);
    up_plot_selection_data se = up_plot_selection_default();
    se.n_pos = 1, se.n_layers = 2, se.bypass = se.induce = se.kl = v, se.best = 2;
    assert_int_equal(up_plot_selection(tpath("bad.png"), &st, &se, &e), UP_ERR_INVALID);
    struct stat sb;
    assert_int_not_equal(stat(tpath("bad.png"), &sb), 0); /* nothing was written */
}

/* fontconfig keeps its configuration until FcFini, which only fontconfig's own users call;
 * LeakSanitizer (UP_SANITIZE builds) reads this hook and ignores those blocks. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfontconfig.so"; }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticks),      cmocka_unit_test(test_bars),
        cmocka_unit_test(test_bars_all_negative),
        cmocka_unit_test(test_heatmap),    cmocka_unit_test(test_lines),
        cmocka_unit_test(test_scatter),    cmocka_unit_test(test_selection),
        cmocka_unit_test(test_lines_overlap), cmocka_unit_test(test_heatmap_scale_columns),
        cmocka_unit_test(test_matrix),     cmocka_unit_test(test_empty),
        cmocka_unit_test(test_nan_and_constant), cmocka_unit_test(test_long_and_odd_labels),
        cmocka_unit_test(test_many_tokens), cmocka_unit_test(test_sizes_and_determinism),
        cmocka_unit_test(test_bad_arguments),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    cairo_debug_reset_static_data(); /* frees cairo's font caches, so LeakSanitizer stays quiet */
    return rc;
}
