/* fig_bars — up_plot_bars: ranked latents as horizontal bars (see plot.h). Positive bars
 * point right in vermillion, negative left in blue, each with its value beyond its end; a
 * dashed rule separates the top-k from the bottom-k. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

up_status up_plot_bars(const char *path, const up_plot_style *style, const up_plot_bars_data *d, up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    PLOT_CHECK(d && d->n >= 0, "%s: bars: no data struct or n < 0", path ? path : "plot");
    PLOT_CHECK(d->n == 0 || d->values, "%s: bars: values is NULL with n = %d", path, d->n);
    char shared[16];
    if (!d->value_format && d->n > 0 && d->values) plot_shared_format(d->values, d->n, shared, sizeof shared);
    else snprintf(shared, sizeof shared, "%%.3g");
    const char *vfmt = d->value_format ? d->value_format : shared;
    PLOT_CHECK(plot_format_ok(vfmt), "%s: bars: value_format \"%s\" must hold exactly one double conversion", path,
               vfmt);
    canvas cv, *c = &cv;
    up_status s = plot_canvas_open(c, &st, path, err);
    if (s) return s;
    int n = d->n;
    char(*lab)[LABEL_CAP] = plot_labels_copy(d->labels, n, "#%d", 0);
    if (!lab) {
        plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    double top = plot_header(c, &st);
    legend_item li[2];
    int nl = 0;
    if (d->pos_label) li[nl++] = (legend_item){d->pos_label, plot_hex(C_POS), -1, 0, 1, 0, 0};
    if (d->neg_label) li[nl++] = (legend_item){d->neg_label, plot_hex(C_NEG), -1, 0, 1, 0, 0};
    if (nl) top += plot_legend_row(c, li, nl, PAD, top, c->W - 2 * PAD, 1) + c->fs * 0.4;

    double vmin = 0, vmax = 0;
    int finite = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(d->values[i])) finite++, vmin = fmin(vmin, d->values[i]), vmax = fmax(vmax, d->values[i]);
    double lh = plot_line_h(c, c->fs);
    double bottom = c->H - PAD - lh - TICK - 2 - (st.xlabel && *st.xlabel ? plot_line_h(c, plot_label_size(c)) + 4 : 0);
    if (finite == 0) {
        frame f = {PAD, top, c->W - PAD, bottom};
        plot_no_data(c, &f);
        free(lab);
        return plot_canvas_finish(c, &st, path, err);
    }
    int gap = d->n_top > 0 && d->n_top < n;
    double pitch = (bottom - top) / (n + (gap ? 0.8 : 0));
    double lab_w = plot_ylabels_width(c, lab, n, c->W * 0.42);
    double x0 = PAD + lab_w + 8;
    /* Value labels sit beyond the bar ends, so reserve their width on each side that has bars. */
    double vsize = fmin(c->fs * 0.9, pitch * 0.72);
    int show_vals = vsize >= c->fs * 0.55;
    double vw = 0;
    char buf[64];
    if (show_vals)
        for (int i = 0; i < n; i++) {
            plot_fmt_value(vfmt, d->values[i], buf, sizeof buf);
            vw = fmax(vw, plot_text_w(c, buf, vsize, 0));
        }
    vw = show_vals ? vw + 6 : 0;
    frame f = {x0, top, c->W - PAD, bottom};
    axis xa;
    double p0 = f.x0 + (vmin < 0 || vmax <= 0 ? vw : 0), p1 = f.x1 - (vmax > 0 || vmin >= 0 ? vw : 0);
    /* With no value labels on the right (all bars negative) the axis ends at the frame, and
     * the last tick label, centred there, would run off the canvas: pull the end in by the
     * overflow and lay the ticks out again. */
    for (int pass = 0; pass < 2; pass++) {
        for (int target = (int)((p1 - p0) / 100) + 2;; target--) {
            plot_axis_init(&xa, vmin, vmax, target, vmin < 0 ? 0.02 : 0, vmax > 0 ? 0.02 : 0, 0);
            xa.p0 = p0, xa.p1 = p1;
            if (target <= 2 || plot_xticks_fit(c, &xa)) break;
        }
        if (xa.n == 0) break;
        plot_fmt_tick(&xa, xa.ticks[xa.n - 1], buf, sizeof buf);
        const double over = plot_amap(&xa, xa.ticks[xa.n - 1]) + plot_text_w(c, buf, c->fs, 0) / 2 - (c->W - PAD / 2.0);
        if (over <= 0) break;
        p1 -= over;
    }
    frame ff = {xa.p0, f.y0, xa.p1, f.y1}; /* grid and ticks span the mapped range only */
    plot_grid_x(c, &ff, &xa);
    plot_ticks_x(c, &ff, &xa);
    plot_stroke_line(c, ff.x0, f.y1, ff.x1, f.y1, plot_hex(C_SPINE), 0.9);
    double zx = plot_amap(&xa, 0);
    char lb[LABEL_CAP];
    for (int i = 0; i < n; i++) {
        double yc = top + (i + (gap && i >= d->n_top ? 0.8 : 0) + 0.5) * pitch;
        double v = d->values[i];
        if (isfinite(v)) {
            double vx = plot_amap(&xa, v);
            double th = fmin(0.72 * pitch, c->fs * 2.2); /* few bars stay bars, not slabs */
            cairo_rectangle(c->cr, fmin(zx, vx), yc - th / 2, fabs(vx - zx), th);
            plot_set_rgb(c->cr, plot_hex(v >= 0 ? C_POS : C_NEG));
            cairo_fill(c->cr);
            if (show_vals) {
                plot_fmt_value(vfmt, v, buf, sizeof buf);
                plot_text_at(c, buf, v >= 0 ? vx + 4 : vx - 4, yc, vsize, 0, plot_hex(C_TEXT), v >= 0 ? 0 : 1, 0.5, 0);
            }
        } else if (show_vals) {
            plot_text_at(c, "n/a", zx + 4, yc, vsize, 0, plot_hex(C_SOFT), 0, 0.5, 0);
        }
    }
    plot_stroke_line(c, zx, f.y0, zx, f.y1, plot_hex(C_SPINE), 1.0);
    if (gap) {
        double y = top + (d->n_top + 0.4) * pitch;
        cairo_save(c->cr);
        cairo_set_dash(c->cr, (double[]){3, 3}, 2, 0);
        plot_stroke_line(c, PAD, y, f.x1, y, plot_hex(0xB0B0B0), 0.8);
        cairo_restore(c->cr);
    }
    /* Labels: shrink with the row pitch; rows of the second group sit after the gap. */
    double size = fmin(c->fs, pitch * 0.8);
    if (size < c->fs * 0.6) size = c->fs * 0.6;
    int every = pitch >= size * 1.1 ? 1 : (int)ceil(size * 1.1 / pitch);
    for (int i = 0; i < n; i += every) {
        double yc = top + (i + (gap && i >= d->n_top ? 0.8 : 0) + 0.5) * pitch;
        plot_text_at(c, plot_fit(c, lab[i], size, 0, lab_w, lb), x0 - 8, yc, size, 0, plot_hex(C_TEXT), 1, 0.5, 0);
    }
    plot_xlabel_at(c, st.xlabel, (ff.x0 + ff.x1) / 2, f.y1 + TICK + 2 + lh + 4, c->W - 2 * PAD);
    free(lab);
    return plot_canvas_finish(c, &st, path, err);
}
