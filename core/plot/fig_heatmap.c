/* fig_heatmap — up_plot_heatmap and up_plot_matrix (see plot.h): a grid of coloured cells
 * with row and column labels and a colour bar; the matrix variant has square, annotated
 * cells and gives up the space they leave (plot_canvas_crop). */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

up_plot_heatmap_data up_plot_heatmap_default(void) {
    up_plot_heatmap_data d;
    memset(&d, 0, sizeof d);
    d.vmin = d.vmax = NAN;
    return d;
}

static up_status heatmap(const char *path, const up_plot_style *style, const up_plot_heatmap_data *d, int matrix,
                         up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    PLOT_CHECK(d && d->rows >= 0 && d->cols >= 0, "%s: heatmap: no data struct or negative size", path ? path : "plot");
    PLOT_CHECK((double)d->rows * d->cols <= 1e8, "%s: heatmap: %d x %d cells is too many", path, d->rows, d->cols);
    PLOT_CHECK(d->rows * d->cols == 0 || d->values, "%s: heatmap: values is NULL", path);
    const char *vfmt = d->value_format ? d->value_format : "%.2f";
    PLOT_CHECK(plot_format_ok(vfmt), "%s: heatmap: value_format \"%s\" must hold exactly one double conversion", path,
               vfmt);
    canvas cv, *c = &cv;
    up_status s = plot_canvas_open(c, &st, path, err);
    if (s) return s;
    int R = d->rows, C = d->cols;
    double top = plot_header(c, &st);
    double lh = plot_line_h(c, c->fs), llh = plot_line_h(c, plot_label_size(c));
    if (R == 0 || C == 0) {
        frame f = {PAD, top, c->W - PAD, c->H - PAD};
        plot_no_data(c, &f);
        return plot_canvas_finish(c, &st, path, err);
    }
    char(*rl)[LABEL_CAP] = plot_labels_copy(d->row_labels, R, "%d", 0);
    char(*cl)[LABEL_CAP] = plot_labels_copy(d->col_labels, C, "%d", 0);
    if (!rl || !cl) {
        free(rl), free(cl), plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    /* The automatic range comes from the scaled columns only (when they hold a value), so one
     * extreme column, e.g. the chat template's last token, cannot wash out the rest. */
    double mn = INFINITY, mx = -INFINITY, all_mn = INFINITY, all_mx = -INFINITY;
    int missing = 0;
    for (int pass = 0; pass < 2 && !isfinite(mn); pass++)
        for (size_t i = 0; i < (size_t)R * C; i++) {
            double v = d->values[i];
            if (!isfinite(v)) {
                missing = 1;
                continue;
            }
            all_mn = fmin(all_mn, v), all_mx = fmax(all_mx, v);
            if (pass == 0 && d->scale_cols && !d->scale_cols[i % C]) continue;
            mn = fmin(mn, v), mx = fmax(mx, v);
        }
    up_plot_cmap cm = d->cmap;
    if (cm == UP_PLOT_CMAP_AUTO) cm = all_mn < 0 ? UP_PLOT_CMAP_DIVERGING : UP_PLOT_CMAP_SEQUENTIAL;
    double lo, hi;
    if (!isfinite(mn)) mn = 0, mx = 0;
    if (cm == UP_PLOT_CMAP_DIVERGING) {
        /* Centred at 0 so white always means "no effect", whatever the data's skew. */
        double L = fmax(isnan(d->vmin) ? fabs(mn) : fabs(d->vmin), isnan(d->vmax) ? fabs(mx) : fabs(d->vmax));
        if (!(L > 0) || !isfinite(L)) L = 1;
        lo = -L, hi = L;
    } else {
        lo = isnan(d->vmin) ? mn : d->vmin;
        hi = isnan(d->vmax) ? mx : d->vmax;
        if (matrix && isnan(d->vmin) && isnan(d->vmax) && mn >= 0 && mx <= 1) lo = 0, hi = 1;
        if (!(hi > lo)) {
            double w = fabs(lo) > 0 ? fabs(lo) * 0.1 : 1;
            lo -= w, hi += w;
        }
    }
    const unsigned *stops = cm == UP_PLOT_CMAP_DIVERGING ? plot_rdbu : plot_viridis;
    int beyond_lo = isfinite(all_mn) && all_mn < lo, beyond_hi = isfinite(all_mx) && all_mx > hi;
    /* Marked columns: a bracket (and its label) above the grid over each run of them. */
    int n_marked = 0;
    for (int k = 0; d->marked_cols && k < C; k++) n_marked += !!d->marked_cols[k];
    unsigned char *dim = NULL;
    if (n_marked) {
        dim = malloc((size_t)C);
        if (!dim) {
            free(rl), free(cl), plot_canvas_close(c);
            return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
        }
        for (int k = 0; k < C; k++) dim[k] = !d->marked_cols[k];
        top += (d->mark_label && *d->mark_label ? lh : 0) + 9;
    }

    /* Colour bar block on the right: bar, tick labels, rotated title. */
    axis ca;
    plot_axis_init(&ca, lo, hi, 6, 0, 0, 0);
    double cb_w = 12 + TICK + 3 + plot_ticks_w(c, &ca) + (d->colorbar_label && *d->colorbar_label ? 6 + llh : 0);
    if (missing) cb_w = fmax(cb_w, 12 + 5 + plot_text_w(c, "n/a", c->fs, 0));
    double ylab_w = st.ylabel && *st.ylabel ? llh + 6 : 0;
    double rl_w = plot_ylabels_width(c, rl, R, c->W * 0.28);
    double x0 = PAD + ylab_w + rl_w + 6, x1 = c->W - PAD - cb_w - 16;
    double pitch_x = (x1 - x0) / C;
    double max_ext = c->H * 0.25;
    xlabels X = plot_xlabels_plan(c, cl, C, pitch_x, max_ext);
    if (X.overhang > x0 - PAD - ylab_w) { /* 45° labels reaching into the left margin */
        x0 = PAD + ylab_w + fmax(rl_w + 6, X.overhang);
        pitch_x = (x1 - x0) / C;
        X = plot_xlabels_plan(c, cl, C, pitch_x, max_ext);
    }
    double xl_h = st.xlabel && *st.xlabel ? llh + 4 : 0;
    double y1 = c->H - PAD - xl_h - X.height - 5;
    double pitch_y = (y1 - top) / R;
    if (matrix) { /* square cells read as a matrix */
        double cell = fmin(pitch_x, pitch_y);
        pitch_x = pitch_y = cell;
        x1 = x0 + cell * C, y1 = top + cell * R;
        X = plot_xlabels_plan(c, cl, C, pitch_x, max_ext);
        /* The space the square cells give up is cut off the PNG rather than left empty. */
        plot_canvas_crop(c, &st, x1 + 16 + cb_w + PAD, y1 + 5 + X.height + xl_h + PAD);
    }
    /* Cells: edges snapped to whole pixels and drawn without anti-aliasing, so neighbouring
     * cells meet exactly instead of showing hairline seams. */
    cairo_save(c->cr);
    cairo_set_antialias(c->cr, CAIRO_ANTIALIAS_NONE);
    for (int r = 0; r < R; r++) {
        double ya = round((top + r * pitch_y) * c->scale) / c->scale,
               yb = round((top + (r + 1) * pitch_y) * c->scale) / c->scale;
        for (int k = 0; k < C; k++) {
            double xa = round((x0 + k * pitch_x) * c->scale) / c->scale;
            double xb = round((x0 + (k + 1) * pitch_x) * c->scale) / c->scale;
            double v = d->values[(size_t)r * C + k];
            plot_set_rgb(c->cr, isfinite(v) ? plot_cmap_at(stops, (v - lo) / (hi - lo)) : plot_hex(C_MISSING));
            cairo_rectangle(c->cr, xa, ya, xb - xa, yb - ya);
            cairo_fill(c->cr);
        }
    }
    cairo_restore(c->cr);
    if (d->annotate) {
        /* One size for every cell, the largest at which the widest value fits its cell. */
        char buf[64];
        double wmax = 0;
        for (size_t i = 0; i < (size_t)R * C; i++) {
            plot_fmt_value(vfmt, d->values[i], buf, sizeof buf);
            wmax = fmax(wmax, plot_text_w(c, buf, c->fs, 0));
        }
        double size = fmin(c->fs * 1.05, fmin(c->fs * pitch_x * 0.86 / fmax(wmax, 1e-9), pitch_y * 0.6));
        if (size >= c->fs * 0.55)
            for (int r = 0; r < R; r++)
                for (int k = 0; k < C; k++) {
                    double v = d->values[(size_t)r * C + k];
                    rgb bg = isfinite(v) ? plot_cmap_at(stops, (v - lo) / (hi - lo)) : plot_hex(C_MISSING);
                    plot_fmt_value(vfmt, v, buf, sizeof buf);
                    plot_text_at(c, buf, x0 + (k + 0.5) * pitch_x, top + (r + 0.5) * pitch_y, size, 0,
                            plot_luminance(bg) < 0.45 ? plot_hex(0xFFFFFF) : plot_hex(C_TEXT), 0.5, 0.5, 0);
                }
    }
    cairo_rectangle(c->cr, x0, top, x1 - x0, y1 - top);
    plot_set_rgb(c->cr, plot_hex(0x9A9A9A));
    cairo_set_line_width(c->cr, 0.6);
    cairo_stroke(c->cr);
    if (n_marked) {
        /* A rule between marked and unmarked columns, and a bracket over each marked run with
         * the label over the widest run. */
        int best_a = 0, best_b = -1;
        for (int a = 0; a < C;) {
            int b = a;
            while (b + 1 < C && !dim[b + 1] == !dim[a]) b++;
            if (a > 0) plot_stroke_line(c, x0 + a * pitch_x, top, x0 + a * pitch_x, y1, plot_hex(C_SPINE), 1.0);
            if (!dim[a]) {
                double xa = x0 + a * pitch_x + 1.5, xb = x0 + (b + 1) * pitch_x - 1.5, yb = top - 3;
                cairo_move_to(c->cr, xa, yb + 0.5);
                cairo_line_to(c->cr, xa, yb - 4);
                cairo_line_to(c->cr, xb, yb - 4);
                cairo_line_to(c->cr, xb, yb + 0.5);
                plot_set_rgb(c->cr, plot_hex(C_SPINE));
                cairo_set_line_width(c->cr, 1.0);
                cairo_stroke(c->cr);
                if (b - a > best_b - best_a) best_a = a, best_b = b;
            }
            a = b + 1;
        }
        if (d->mark_label && *d->mark_label) {
            char mb[LABEL_CAP];
            double cx = x0 + (best_a + best_b + 1) * pitch_x / 2;
            double room = 2 * fmin(cx - PAD, c->W - PAD - cx);
            plot_text_at(c, plot_fit(c, d->mark_label, c->fs, 0, room, mb), cx, top - 8, c->fs, 0, plot_hex(C_TEXT),
                         0.5, 1, 0);
        }
    }
    plot_ylabels_draw(c, rl, R, x0 - 6, top, pitch_y, rl_w);
    plot_xlabels_draw(c, &X, cl, C, x0, pitch_x, y1 + 4, dim);
    plot_xlabel_at(c, st.xlabel, (x0 + x1) / 2, y1 + 5 + X.height + 2, c->W - 2 * PAD);
    plot_ylabel_at(c, st.ylabel, PAD, (top + y1) / 2, y1 - top);

    /* Colour bar: cairo's gradient through the same 11 stops as the cells. */
    const double tip = 9; /* a pointed end: values beyond the colour range exist */
    double bx = x1 + 16, by0 = top + (beyond_hi ? tip : 0),
           by1 = fmin(y1, top + fmax(c->H * 0.55, fmin(y1 - top, 120))) - (beyond_lo ? tip : 0);
    if (missing) by1 = fmin(by1, y1 - lh * 1.6 - (beyond_lo ? tip : 0));
    if (by1 - by0 < 30) by1 = by0 + 30;
    for (int end = 0; end < 2; end++) {
        if (!(end ? beyond_hi : beyond_lo)) continue;
        double yb = end ? by0 : by1, ya = end ? by0 - tip : by1 + tip;
        cairo_move_to(c->cr, bx, yb);
        cairo_line_to(c->cr, bx + 6, ya);
        cairo_line_to(c->cr, bx + 12, yb);
        cairo_close_path(c->cr);
        plot_set_rgb(c->cr, plot_hex(stops[end ? 10 : 0]));
        cairo_fill_preserve(c->cr);
        plot_set_rgb(c->cr, plot_hex(0x9A9A9A));
        cairo_set_line_width(c->cr, 0.6);
        cairo_stroke(c->cr);
    }
    cairo_pattern_t *g = cairo_pattern_create_linear(0, by1, 0, by0);
    for (int i = 0; i < 11; i++) {
        rgb col = plot_hex(stops[i]);
        cairo_pattern_add_color_stop_rgb(g, i / 10.0, col.r, col.g, col.b);
    }
    cairo_rectangle(c->cr, bx, by0, 12, by1 - by0);
    cairo_set_source(c->cr, g);
    cairo_fill(c->cr);
    cairo_pattern_destroy(g);
    cairo_rectangle(c->cr, bx, by0, 12, by1 - by0);
    plot_set_rgb(c->cr, plot_hex(0x9A9A9A));
    cairo_set_line_width(c->cr, 0.6);
    cairo_stroke(c->cr);
    ca.p0 = by1, ca.p1 = by0;
    char buf[64];
    double tw = 0;
    for (int i = 0; i < ca.n; i++) {
        double y = plot_amap(&ca, ca.ticks[i]);
        plot_stroke_line(c, bx + 12, y, bx + 12 + TICK, y, plot_hex(C_SPINE), 0.8);
        plot_fmt_tick(&ca, ca.ticks[i], buf, sizeof buf);
        plot_text_at(c, buf, bx + 12 + TICK + 3, y, c->fs, 0, plot_hex(C_TEXT), 0, 0.5, 0);
        tw = fmax(tw, plot_text_w(c, buf, c->fs, 0));
    }
    if (d->colorbar_label && *d->colorbar_label) {
        char lb[LABEL_CAP];
        plot_text_at(c, plot_fit(c, d->colorbar_label, plot_label_size(c), 0, by1 - by0, lb),
                     bx + 12 + TICK + 3 + tw + 6, (by0 + by1) / 2, plot_label_size(c), 0, plot_hex(C_TEXT), 0.5, 0,
                     M_PI / 2);
    }
    if (missing) {
        double y = fmin(y1, c->H - PAD) - lh * 0.6;
        cairo_rectangle(c->cr, bx, y - 6, 12, 12);
        plot_set_rgb(c->cr, plot_hex(C_MISSING));
        cairo_fill(c->cr);
        plot_text_at(c, "n/a", bx + 17, y, c->fs, 0, plot_hex(C_TEXT), 0, 0.5, 0);
    }
    free(rl), free(cl), free(dim);
    return plot_canvas_finish(c, &st, path, err);
}

up_status up_plot_heatmap(const char *path, const up_plot_style *style, const up_plot_heatmap_data *d,
                          up_error *err) {
    return heatmap(path, style, d, 0, err);
}

up_status up_plot_matrix(const char *path, const up_plot_style *style, const up_plot_heatmap_data *d,
                         up_error *err) {
    if (!d) return heatmap(path, style, d, 1, err);
    up_plot_heatmap_data m = *d;
    m.annotate = 1;
    return heatmap(path, style, &m, 1, err);
}
