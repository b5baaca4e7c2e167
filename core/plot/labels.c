/* labels — category labels along an axis: rotated, shrunk and thinned to fit; see plot_impl.h. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

xlabels plot_xlabels_plan(canvas *c, char (*lab)[LABEL_CAP], int n, double pitch, double max_ext) {
    xlabels X = {c->fs, 0, 0, 0, 0, 1};
    double wmax = 0;
    for (int i = 0; i < n; i++) wmax = fmax(wmax, plot_text_w(c, lab[i], X.size, 0));
    X.max_len = wmax;
    if (wmax <= pitch * 0.92) {
        X.height = plot_line_h(c, X.size);
        return X;
    }
    double min = c->fs * 0.6;
    X.angle = n <= 40 && pitch * sin(M_PI / 4) >= min * 1.15 ? M_PI / 4 : M_PI / 2;
    double room = pitch * sin(X.angle);
    X.size = fmin(c->fs, room / 1.15);
    if (X.size < min) X.size = min;
    X.every = (int)ceil(X.size * 1.15 / room - 1e-9);
    if (X.every < 1) X.every = 1;
    X.max_len = max_ext / sin(X.angle);
    wmax = 0;
    for (int i = 0; i < n; i += X.every) {
        double w = fmin(plot_text_w(c, lab[i], X.size, 0), X.max_len);
        wmax = fmax(wmax, w);
        /* at 45° a label reaches left of its cell by w·cos 45° */
        if (X.angle < M_PI / 2) X.overhang = fmax(X.overhang, w * cos(X.angle) - (i + 0.5) * pitch);
    }
    X.height = wmax * sin(X.angle) + plot_line_h(c, X.size) * cos(X.angle);
    return X;
}

void plot_xlabels_draw(canvas *c, const xlabels *X, char (*lab)[LABEL_CAP], int n, double x0, double pitch,
                         double y, const unsigned char *dim) {
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i += X->every) {
        double x = x0 + (i + 0.5) * pitch;
        rgb col = plot_hex(dim && dim[i] ? C_DIM : C_TEXT);
        plot_fit(c, lab[i], X->size, 0, X->angle == 0 ? fmax(pitch * 0.98, X->max_len) : X->max_len, buf);
        if (X->angle == 0) plot_text_at(c, buf, x, y, X->size, 0, col, 0.5, 0, 0);
        else plot_text_at(c, buf, x, y, X->size, 0, col, 1, 0.5, X->angle);
    }
}

/* Category labels along y (right-aligned at x), sized to the row pitch, thinned when crowded. */
void plot_ylabels_draw(canvas *c, char (*lab)[LABEL_CAP], int n, double x, double y0, double pitch, double max_w) {
    double size = fmin(c->fs, pitch * 0.8);
    if (size < c->fs * 0.6) size = c->fs * 0.6;
    int every = pitch >= size * 1.1 ? 1 : (int)ceil(size * 1.1 / pitch);
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i += every)
        plot_text_at(c, plot_fit(c, lab[i], size, 0, max_w, buf), x, y0 + (i + 0.5) * pitch, size, 0, plot_hex(C_TEXT),
                     1, 0.5, 0);
}

double plot_ylabels_width(canvas *c, char (*lab)[LABEL_CAP], int n, double max_w) {
    double w = 0;
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i++) w = fmax(w, plot_text_w(c, plot_fit(c, lab[i], c->fs, 0, max_w, buf), c->fs, 0));
    return w;
}

/* Cleaned copies of n labels (NULL array or entry → its 0-based index, or `fallback` format). */
char (*plot_labels_copy(const char *const *src, int n, const char *fallback, int offset))[LABEL_CAP] {
    char(*lab)[LABEL_CAP] = malloc((size_t)(n > 0 ? n : 1) * LABEL_CAP);
    if (!lab) return NULL;
    for (int i = 0; i < n; i++) {
        if (src && src[i]) plot_clean(src[i], lab[i], LABEL_CAP);
        else snprintf(lab[i], LABEL_CAP, fallback, i + offset);
    }
    return lab;
}
