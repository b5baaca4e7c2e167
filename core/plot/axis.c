/* axis — nice ticks, axes, grid lines, spines and axis titles; see plot_impl.h. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int up_plot_ticks(double lo, double hi, int target, double *ticks, double *step) {
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (lo > hi) {
        double t = lo;
        lo = hi, hi = t;
    }
    if (hi - lo <= 1e-12 * fmax(fabs(lo), fabs(hi)) || hi == lo) {
        double d = fabs(lo) > 1e-300 ? fabs(lo) * 0.1 : 1;
        lo -= d, hi += d;
    }
    if (target < 2) target = 2;
    if (target > MAX_TICKS) target = MAX_TICKS;
    double raw = (hi - lo) / target, mag = pow(10, floor(log10(raw))), s;
    for (;;) {
        double f = raw / mag;
        s = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
        double k0 = ceil(lo / s - 1e-9), k1 = floor(hi / s + 1e-9);
        if (k1 - k0 + 1 <= MAX_TICKS) {
            int n = 0;
            for (double k = k0; k <= k1; k++) {
                double v = k * s;
                ticks[n++] = fabs(v) < s * 1e-9 ? 0 : v;
            }
            *step = s;
            return n;
        }
        raw *= 2; /* only reached for huge ranges with a tiny target: coarsen */
    }
}

/* An axis over the data range [lo, hi] padded by pad_lo/pad_hi of the span; degenerate and
 * empty ranges are widened so every axis has a non-zero span and at least two ticks. */
void plot_axis_init(axis *a, double lo, double hi, int target, double pad_lo, double pad_hi, int log_scale) {
    memset(a, 0, sizeof *a);
    a->log = log_scale;
    if (!isfinite(lo) || !isfinite(hi) || lo > hi) lo = log_scale ? 1 : 0, hi = log_scale ? 10 : 1;
    if (log_scale) {
        double l0 = log10(lo), l1 = log10(hi);
        if (l1 - l0 < 1e-9) l0 -= 0.5, l1 += 0.5;
        double span = l1 - l0;
        l0 -= pad_lo * span, l1 += pad_hi * span;
        a->lo = pow(10, l0), a->hi = pow(10, l1);
        int k0 = (int)ceil(l0 - 1e-9), k1 = (int)floor(l1 + 1e-9);
        int every = (k1 - k0) / 8 + 1;
        for (int k = k0; k <= k1 && a->n < MAX_TICKS; k += every) a->ticks[a->n++] = pow(10, k);
        if (a->n < 3) { /* less than two decades: add the 2s and 5s */
            a->n = 0;
            for (int k = (int)floor(l0); k <= k1 && a->n < MAX_TICKS - 3; k++)
                for (int m = 0; m < 3; m++) {
                    double v = (m == 0 ? 1 : m == 1 ? 2 : 5) * pow(10, k);
                    if (v >= a->lo * (1 - 1e-9) && v <= a->hi * (1 + 1e-9)) a->ticks[a->n++] = v;
                }
        }
        a->step = 0;
        return;
    }
    if (hi - lo <= 1e-12 * fmax(fabs(lo), fabs(hi)) || hi == lo) {
        double d = fabs(lo) > 1e-300 ? fabs(lo) * 0.1 : 1;
        lo -= d, hi += d;
    }
    double span = hi - lo;
    a->lo = lo - pad_lo * span, a->hi = hi + pad_hi * span;
    a->n = up_plot_ticks(a->lo, a->hi, target, a->ticks, &a->step);
}

/* Integer ticks for layer or category indices 0..n-1 (never 0.5 steps). */
void plot_axis_index(axis *a, int n, int target) {
    plot_axis_init(a, -0.5, n - 0.5, target, 0, 0, 0);
    if (a->step >= 1) {
        /* up_plot_ticks may start at a negative multiple; keep 0..n-1 */
        int m = 0;
        for (int i = 0; i < a->n; i++)
            if (a->ticks[i] >= 0 && a->ticks[i] <= n - 1) a->ticks[m++] = a->ticks[i];
        a->n = m;
        return;
    }
    a->n = 0, a->step = 1;
    for (int i = 0; i < n && a->n < MAX_TICKS; i++) a->ticks[a->n++] = i;
}

void plot_fmt_tick(const axis *a, double v, char *buf, size_t cap) {
    double m = fabs(v);
    if (a->log || (v != 0 && (m >= 1e6 || m < 1e-4))) {
        snprintf(buf, cap, "%g", v);
    } else {
        int dec = a->step >= 1 || a->step <= 0 ? 0 : (int)ceil(-log10(a->step) - 1e-9);
        if (dec > 9) dec = 9;
        snprintf(buf, cap, "%.*f", dec, v);
        if (buf[0] == '-' && strspn(buf, "-0.") == strlen(buf)) memmove(buf, buf + 1, strlen(buf)); /* "-0.0" */
    }
    plot_use_minus(buf, cap);
}

double plot_ticks_w(canvas *c, const axis *a) {
    double w = 0;
    char buf[64];
    for (int i = 0; i < a->n; i++) {
        plot_fmt_tick(a, a->ticks[i], buf, sizeof buf);
        w = fmax(w, plot_text_w(c, buf, c->fs, 0));
    }
    return w;
}

/* Whether the tick labels of a horizontal axis (p0, p1 set) leave a gap between neighbours. */
int plot_xticks_fit(canvas *c, const axis *a) {
    char buf[64];
    double prev = -INFINITY;
    for (int i = 0; i < a->n; i++) {
        plot_fmt_tick(a, a->ticks[i], buf, sizeof buf);
        double x = plot_amap(a, a->ticks[i]), w = plot_text_w(c, buf, c->fs, 0);
        if (x - w / 2 < prev + c->fs * 0.8) return 0;
        prev = x + w / 2;
    }
    return 1;
}

/* A numeric x axis mapped to [p0, p1] with as many ticks as fit: about one per 100 units,
 * fewer when the labels are wide (long decimals on a narrow panel). index: layer or category
 * numbers 0..n-1 (hi + 1 of them), integer ticks only. */
void plot_axis_x(canvas *c, axis *a, double lo, double hi, double pad, double p0, double p1, int index) {
    for (int target = (int)((p1 - p0) / 100) + 2;; target--) {
        if (index) plot_axis_index(a, (int)hi + 1, target);
        else plot_axis_init(a, lo, hi, target, pad, pad, 0);
        a->p0 = p0, a->p1 = p1;
        if (target <= 2 || plot_xticks_fit(c, a)) return;
    }
}

void plot_grid_y(canvas *c, const frame *f, const axis *ya) {
    for (int i = 0; i < ya->n; i++) {
        double y = plot_amap(ya, ya->ticks[i]);
        if (y < f->y0 - 0.5 || y > f->y1 + 0.5) continue;
        plot_stroke_line(c, f->x0, y, f->x1, y, plot_hex(C_GRID), 0.7);
    }
}

void plot_grid_x(canvas *c, const frame *f, const axis *xa) {
    for (int i = 0; i < xa->n; i++) {
        double x = plot_amap(xa, xa->ticks[i]);
        if (x < f->x0 - 0.5 || x > f->x1 + 0.5) continue;
        plot_stroke_line(c, x, f->y0, x, f->y1, plot_hex(C_GRID), 0.7);
    }
}

void plot_ticks_y(canvas *c, const frame *f, const axis *ya) {
    char buf[64];
    for (int i = 0; i < ya->n; i++) {
        double y = plot_amap(ya, ya->ticks[i]);
        if (y < f->y0 - 0.5 || y > f->y1 + 0.5) continue;
        plot_stroke_line(c, f->x0 - TICK, y, f->x0, y, plot_hex(C_SPINE), 0.8);
        plot_fmt_tick(ya, ya->ticks[i], buf, sizeof buf);
        plot_text_at(c, buf, f->x0 - TICK - 3, y, c->fs, 0, plot_hex(C_TEXT), 1, 0.5, 0);
    }
}

void plot_ticks_x(canvas *c, const frame *f, const axis *xa) {
    char buf[64];
    for (int i = 0; i < xa->n; i++) {
        double x = plot_amap(xa, xa->ticks[i]);
        if (x < f->x0 - 0.5 || x > f->x1 + 0.5) continue;
        plot_stroke_line(c, x, f->y1, x, f->y1 + TICK, plot_hex(C_SPINE), 0.8);
        plot_fmt_tick(xa, xa->ticks[i], buf, sizeof buf);
        plot_text_at(c, buf, x, f->y1 + TICK + 2, c->fs, 0, plot_hex(C_TEXT), 0.5, 0, 0);
    }
}

/* Left and bottom spines only: the frame's other sides carry no information. */
void plot_spines(canvas *c, const frame *f) {
    cairo_move_to(c->cr, f->x0, f->y0);
    cairo_line_to(c->cr, f->x0, f->y1);
    cairo_line_to(c->cr, f->x1, f->y1);
    plot_set_rgb(c->cr, plot_hex(C_SPINE));
    cairo_set_line_width(c->cr, 0.9);
    cairo_stroke(c->cr);
}

/* Axis titles: x centred below `y`, y rotated and centred on the frame at `x` (its top edge). */
void plot_xlabel_at(canvas *c, const char *s, double cx, double y, double max_w) {
    char buf[LABEL_CAP];
    if (s && *s)
        plot_text_at(c, plot_fit(c, s, plot_label_size(c), 0, max_w, buf), cx, y, plot_label_size(c), 0,
                     plot_hex(C_TEXT), 0.5, 0, 0);
}

void plot_ylabel_at(canvas *c, const char *s, double x, double cy, double max_w) {
    char buf[LABEL_CAP];
    if (s && *s)
        plot_text_at(c, plot_fit(c, s, plot_label_size(c), 0, max_w, buf), x, cy, plot_label_size(c), 0,
                     plot_hex(C_TEXT), 0.5, 0, M_PI / 2);
}
