/* fig_lines — up_plot_lines (see plot.h): curves y(x) with markers and error bars, or
 * grouped bars over categories; controls are grey and dashed, drawn behind the others. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

up_plot_lines_data up_plot_lines_default(void) {
    up_plot_lines_data d;
    memset(&d, 0, sizeof d);
    d.baseline = d.ymin = d.ymax = NAN;
    return d;
}

static double sx(const up_plot_series *s, int i) { return s->x ? s->x[i] : i; }

/* Coinciding lines (e.g. two latents whose refusal rate is 1 at every α) would hide one
 * another. Each segment and marker shared by several series is drawn nested instead: the
 * first drawn widest, each later one narrower on top, so every colour stays visible. Two
 * points coincide when they are closer than ex, ey (a fraction of each axis's span). */
typedef struct overlap {
    const up_plot_series *series;
    const int *order; /* (n) draw position of each series */
    int n;
    double ex, ey;
} overlap;

static int same_point(const overlap *o, const up_plot_series *a, int i, const up_plot_series *b, int j) {
    if (i < 0 || j < 0 || i >= a->n || j >= b->n) return 0;
    double xa = sx(a, i), ya = a->y[i], xb = sx(b, j), yb = b->y[j];
    return isfinite(xa) && isfinite(ya) && isfinite(xb) && isfinite(yb) && fabs(xa - xb) <= o->ex &&
           fabs(ya - yb) <= o->ey;
}

/* For point i of series k (seg: the segment i → i+1 instead): how many series share it
 * (*share, itself included) and how many of those are drawn before k (*below). */
static void shared(const overlap *o, int k, int i, int seg, int *share, int *below) {
    const up_plot_series *a = &o->series[k];
    *share = 1, *below = 0;
    for (int m = 0; m < o->n; m++) {
        if (m == k) continue;
        const up_plot_series *b = &o->series[m];
        int hit = 0;
        for (int j = 0; j < b->n && !hit; j++)
            hit = seg ? (same_point(o, a, i, b, j) && same_point(o, a, i + 1, b, j + 1)) ||
                            (same_point(o, a, i, b, j + 1) && same_point(o, a, i + 1, b, j))
                      : same_point(o, a, i, b, j);
        if (hit) (*share)++, *below += o->order[m] < o->order[k];
    }
}

up_status up_plot_lines(const char *path, const up_plot_style *style, const up_plot_lines_data *d, up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    PLOT_CHECK(d && d->n_series >= 0 && (d->n_series == 0 || d->series), "%s: lines: no data struct or series",
          path ? path : "plot");
    PLOT_CHECK(d->n_x_labels >= 0 && (d->n_x_labels == 0 || d->x_labels), "%s: lines: bad x_labels", path);
    PLOT_CHECK(!d->bars || d->n_x_labels > 0, "%s: lines: grouped bars need x_labels (the categories)", path);
    for (int k = 0; k < d->n_series; k++) {
        const up_plot_series *s = &d->series[k];
        PLOT_CHECK(s->n >= 0 && (s->n == 0 || s->y), "%s: lines: series %d has n = %d and y = NULL", path, k, s->n);
        PLOT_CHECK(!d->bars || s->n <= d->n_x_labels, "%s: lines: series %d has %d values for %d categories", path, k,
              s->n, d->n_x_labels);
    }
    canvas cv, *c = &cv;
    up_status s = plot_canvas_open(c, &st, path, err);
    if (s) return s;
    int cat = d->n_x_labels > 0, ylog = d->ylog && !d->bars;
    double top = plot_header(c, &st);
    /* data ranges */
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    int points = 0;
    for (int k = 0; k < d->n_series; k++) {
        const up_plot_series *sr = &d->series[k];
        for (int i = 0; i < sr->n; i++) {
            double x = d->bars ? i : sx(sr, i), y = sr->y[i];
            if (!isfinite(x) || !isfinite(y) || (ylog && y <= 0)) continue;
            points++;
            xmn = fmin(xmn, x), xmx = fmax(xmx, x);
            double e = sr->err && isfinite(sr->err[i]) ? fabs(sr->err[i]) : 0;
            ymn = fmin(ymn, ylog && y - e <= 0 ? y : y - e), ymx = fmax(ymx, y + e);
        }
    }
    if (isfinite(d->baseline) && (!ylog || d->baseline > 0)) ymn = fmin(ymn, d->baseline), ymx = fmax(ymx, d->baseline);
    if (d->bars && points) ymn = fmin(ymn, 0), ymx = fmax(ymx, 0);
    if (isfinite(d->ymin)) ymn = d->ymin;
    if (isfinite(d->ymax)) ymx = d->ymax;

    /* Draw order (controls first, behind the others) and whether any lines coincide. */
    int *order = malloc((size_t)(d->n_series + 1) * sizeof *order);
    if (!order) {
        plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    int n_order = 0, n_points = 0, nested = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < d->n_series; k++)
            if (!!d->series[k].control == (pass == 0)) order[k] = n_order++;
    for (int k = 0; k < d->n_series; k++) n_points += d->series[k].n;
    overlap ov = {d->series, order, d->n_series, 1e-9 * fmax(fabs(xmx - xmn), 1e-300),
                  0.004 * fmax(fabs(ymx - ymn), 1e-300)};
    if (ylog) ov.ey = 0; /* exact only: a log axis has no single span to compare with */
    if (!d->bars && n_points <= 4000)
        for (int k = 0; k < d->n_series && !nested; k++)
            for (int i = 0; i + 1 < d->series[k].n && !nested; i++) {
                int share, below;
                shared(&ov, k, i, 1, &share, &below);
                nested = share > 1;
            }

    /* legend on the right */
    legend_item *items = malloc((size_t)(d->n_series + 2) * sizeof *items);
    char(*xl)[LABEL_CAP] = plot_labels_copy(d->x_labels, d->n_x_labels, "%d", 0);
    if (!items || !xl) {
        free(items), free(xl), free(order), plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    int ni = 0, n_color = 0;
    int *color_of = calloc((size_t)d->n_series + 1, sizeof *color_of); /* controls take no palette slot */
    for (int k = 0; k < d->n_series; k++) {
        const up_plot_series *sr = &d->series[k];
        color_of[k] = sr->control ? -1 : n_color++;
        if (!sr->name || !*sr->name) continue;
        rgb col = sr->control ? plot_hex(C_CONTROL) : plot_series_color(color_of[k]);
        int mk = d->no_markers ? -1 : sr->control ? 0 : color_of[k] / 8 + color_of[k];
        items[ni++] = d->bars ? (legend_item){sr->name, col, -1, 0, 1, 0, 0}
                              : (legend_item){sr->name, col, mk, sr->control ? SW_DASH : SW_LINE, 0, 0, 0};
    }
    if (isfinite(d->baseline))
        items[ni++] =
            (legend_item){d->baseline_label ? d->baseline_label : "baseline", plot_hex(C_SPINE), -1, SW_DASH, 0, 0, 0};
    if (nested) items[ni++] = (legend_item){"coinciding lines: drawn nested", plot_hex(C_SOFT), -1, SW_NONE, 0, 0, 0};
    double lh = plot_line_h(c, c->fs), llh = plot_line_h(c, plot_label_size(c));
    double bottom_fixed = PAD + (st.xlabel && *st.xlabel ? llh + 4 : 0);
    legend L = plot_legend_plan(c, items, ni, c->W * 0.3, c->H - top - bottom_fixed);
    double right = PAD + (ni ? L.w + 14 : 0);
    if (points == 0) {
        frame f = {PAD, top, c->W - right, c->H - PAD};
        plot_no_data(c, &f);
        if (ni) plot_legend_draw(c, &L, f.x1 + 14, top);
        free(items), free(xl), free(color_of), free(order);
        return plot_canvas_finish(c, &st, path, err);
    }
    axis ya;
    double est_h = c->H - top - bottom_fixed - lh - 10;
    plot_axis_init(&ya, ymn, ymx, (int)(est_h / 65) + 2, d->bars && ymn >= 0 ? 0 : 0.05,
              d->bars && ymx <= 0 ? 0 : 0.05, ylog);
    double ylab_w = st.ylabel && *st.ylabel ? llh + 6 : 0;
    double x0 = PAD + ylab_w + plot_ticks_w(c, &ya) + TICK + 5, x1 = c->W - right;
    axis xa;
    xlabels X = {0};
    if (cat) {
        plot_axis_index(&xa, d->n_x_labels, d->n_x_labels);
        X = plot_xlabels_plan(c, xl, d->n_x_labels, (x1 - x0) / d->n_x_labels, c->H * 0.22);
        if (X.overhang > x0 - PAD) {
            x0 = PAD + X.overhang;
            X = plot_xlabels_plan(c, xl, d->n_x_labels, (x1 - x0) / d->n_x_labels, c->H * 0.22);
        }
    } else {
        X.height = lh;
    }
    frame f = {x0, top, x1, c->H - bottom_fixed - X.height - TICK - 3};
    if (!cat) plot_axis_x(c, &xa, xmn, xmx, 0.03, f.x0, f.x1, 0);
    xa.p0 = f.x0, xa.p1 = f.x1, ya.p0 = f.y1, ya.p1 = f.y0;
    plot_grid_y(c, &f, &ya);
    if (!cat) plot_grid_x(c, &f, &xa);
    plot_ticks_y(c, &f, &ya);
    if (cat) {
        for (int i = 0; i < d->n_x_labels; i++) {
            double x = plot_amap(&xa, i);
            plot_stroke_line(c, x, f.y1, x, f.y1 + TICK, plot_hex(C_SPINE), 0.8);
        }
        plot_xlabels_draw(c, &X, xl, d->n_x_labels, f.x0, (f.x1 - f.x0) / d->n_x_labels, f.y1 + TICK + 2,
                          NULL);
    } else {
        plot_ticks_x(c, &f, &xa);
    }

    plot_clip_to(c, &f, 6);
    cairo_t *cr = c->cr;
    if (isfinite(d->baseline) && (!ylog || d->baseline > 0)) {
        cairo_save(cr);
        cairo_set_dash(cr, (double[]){5, 4}, 2, 0);
        double y = plot_amap(&ya, d->baseline);
        plot_stroke_line(c, f.x0, y, f.x1, y, plot_hex(C_SPINE), 1.2);
        cairo_restore(cr);
    }
    if (d->bars) {
        double zero = ylog ? f.y1 : plot_amap(&ya, fmax(ya.lo, fmin(ya.hi, 0)));
        double bw = 0.8 / fmax(1, d->n_series);
        for (int k = 0; k < d->n_series; k++) {
            const up_plot_series *sr = &d->series[k];
            rgb col = sr->control ? plot_hex(C_CONTROL) : plot_series_color(color_of[k]);
            for (int i = 0; i < sr->n; i++) {
                double y = sr->y[i];
                if (!isfinite(y)) continue;
                double xa0 = plot_amap(&xa, i - 0.4 + k * bw), xa1 = plot_amap(&xa, i - 0.4 + (k + 1) * bw);
                double yv = plot_amap(&ya, y);
                /* A bar of (nearly) zero height keeps a sliver in its colour: 0 is a value,
                 * and an empty slot would read as missing. */
                if (fabs(yv - zero) < 2.5) yv = zero + (y < 0 ? 2.5 : -2.5);
                cairo_rectangle(cr, xa0 + 0.5, fmin(zero, yv), xa1 - xa0 - 1, fabs(yv - zero));
                plot_set_rgb(cr, col);
                cairo_fill(cr);
                if (sr->err && isfinite(sr->err[i])) {
                    double xm = (xa0 + xa1) / 2, e = fabs(sr->err[i]);
                    double ya0 = plot_amap(&ya, y - e), ya1 = plot_amap(&ya, y + e);
                    plot_stroke_line(c, xm, ya0, xm, ya1, plot_hex(C_TEXT), 1.0);
                    plot_stroke_line(c, xm - 2.5, ya0, xm + 2.5, ya0, plot_hex(C_TEXT), 1.0);
                    plot_stroke_line(c, xm - 2.5, ya1, xm + 2.5, ya1, plot_hex(C_TEXT), 1.0);
                }
            }
        }
        plot_stroke_line(c, f.x0, zero, f.x1, zero, plot_hex(C_SPINE), 0.9);
        /* Few bars: each value printed at its end (past the error bar, if any), so a reader
         * gets the number and not only its height; all or none, at one size. */
        double size = c->fs * 0.82, pitch = (f.x1 - f.x0) / d->n_x_labels * bw, wmax = 0;
        char buf[64], vfmt[16] = "%.2f";
        double vmax = 0;
        int n_bars = 0;
        for (int k = 0; k < d->n_series; k++)
            for (int i = 0; i < d->series[k].n; i++)
                if (isfinite(d->series[k].y[i])) vmax = fmax(vmax, fabs(d->series[k].y[i]));
        plot_shared_format(&vmax, 1, vfmt, sizeof vfmt);
        for (int k = 0; k < d->n_series; k++)
            for (int i = 0; i < d->series[k].n; i++) {
                plot_fmt_value(vfmt, d->series[k].y[i], buf, sizeof buf);
                wmax = fmax(wmax, plot_text_w(c, buf, size, 0));
                n_bars++;
            }
        if (n_bars <= 48 && wmax <= pitch * 1.15) {
            cairo_restore(cr); /* the clip: a label may sit just above the frame */
            for (int k = 0; k < d->n_series; k++) {
                const up_plot_series *sr = &d->series[k];
                for (int i = 0; i < sr->n; i++) {
                    double y = sr->y[i], e = sr->err && isfinite(sr->err[i]) ? fabs(sr->err[i]) : 0;
                    if (!isfinite(y)) continue;
                    double end = y < 0 ? fmax(ya.lo, y - e) : fmin(ya.hi, y + e);
                    plot_fmt_value(vfmt, y, buf, sizeof buf);
                    plot_use_minus(buf, sizeof buf);
                    double xm = plot_amap(&xa, i - 0.4 + (k + 0.5) * bw), yv = plot_amap(&ya, end);
                    plot_text_at(c, buf, xm, y < 0 ? yv + 2 : yv - 2, size, 0, plot_hex(C_TEXT), 0.5, y < 0 ? 0 : 1, 0);
                }
            }
            plot_clip_to(c, &f, 6);
        }
    } else {
        /* Controls first so the latents' lines stay on top. */
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < d->n_series; k++) {
                const up_plot_series *sr = &d->series[k];
                if (!!sr->control != (pass == 0)) continue;
                rgb col = sr->control ? plot_hex(C_CONTROL) : plot_series_color(color_of[k]);
                int mk = sr->control ? 0 : color_of[k] / 8 + color_of[k];
                if (sr->err)
                    for (int i = 0; i < sr->n; i++) {
                        double x = sx(sr, i), y = sr->y[i], e = fabs(sr->err[i]);
                        if (!isfinite(x) || !isfinite(y) || !isfinite(e)) continue;
                        double lo = ylog && y - e <= 0 ? ya.lo : y - e;
                        double px = plot_amap(&xa, x), ya0 = plot_amap(&ya, lo), ya1 = plot_amap(&ya, y + e);
                        plot_stroke_line(c, px, ya0, px, ya1, col, 1.0);
                        plot_stroke_line(c, px - 2.5, ya0, px + 2.5, ya0, col, 1.0);
                        plot_stroke_line(c, px - 2.5, ya1, px + 2.5, ya1, col, 1.0);
                    }
                double lw = sr->control ? 1.4 : 1.9, mr = sr->control ? 2.6 : 3.4;
                cairo_save(cr);
                if (sr->control) cairo_set_dash(cr, (double[]){4, 3}, 2, 0);
                cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
                plot_set_rgb(cr, col);
                /* One stroke per run of segments of the same width; a missing point breaks
                 * the line rather than bridging it. */
                double run_w = -1;
                for (int i = 0; i + 1 < sr->n; i++) {
                    double x0p = sx(sr, i), y0p = sr->y[i], x1p = sx(sr, i + 1), y1p = sr->y[i + 1];
                    if (!isfinite(x0p) || !isfinite(y0p) || !isfinite(x1p) || !isfinite(y1p) ||
                        (ylog && (y0p <= 0 || y1p <= 0))) {
                        if (run_w > 0) cairo_stroke(cr);
                        run_w = -1;
                        continue;
                    }
                    int share = 1, below = 0;
                    if (nested) shared(&ov, k, i, 1, &share, &below);
                    double w = lw + 2.2 * (share - 1 - below);
                    if (w != run_w) {
                        if (run_w > 0) cairo_stroke(cr);
                        cairo_set_line_width(cr, w);
                        cairo_move_to(cr, plot_amap(&xa, x0p), plot_amap(&ya, y0p));
                        run_w = w;
                    }
                    cairo_line_to(cr, plot_amap(&xa, x1p), plot_amap(&ya, y1p));
                }
                if (run_w > 0) cairo_stroke(cr);
                cairo_restore(cr);
                if (!d->no_markers)
                    for (int i = 0; i < sr->n; i++) {
                        double x = sx(sr, i), y = sr->y[i];
                        if (!isfinite(x) || !isfinite(y) || (ylog && y <= 0)) continue;
                        int share = 1, below = 0;
                        if (nested) shared(&ov, k, i, 0, &share, &below);
                        plot_marker(c, mk, plot_amap(&xa, x), plot_amap(&ya, y), mr + 1.7 * (share - 1 - below),
                                    col, 0);
                    }
            }
    }
    cairo_restore(cr); /* clip */
    plot_spines(c, &f);
    if (ni) plot_legend_draw(c, &L, f.x1 + 14, f.y0);
    plot_xlabel_at(c, st.xlabel, (f.x0 + f.x1) / 2, f.y1 + TICK + 3 + X.height + 2, c->W - 2 * PAD);
    plot_ylabel_at(c, st.ylabel, PAD, (f.y0 + f.y1) / 2, f.y1 - f.y0);
    free(items), free(xl), free(color_of), free(order);
    return plot_canvas_finish(c, &st, path, err);
}
