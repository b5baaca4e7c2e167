/* fig_scatter — up_plot_scatter (see plot.h): predicted vs measured, with the y = x line,
 * equal axes and the n / r / slope box when `identity`, and point labels placed where they
 * cover nothing. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct box {
    double x0, y0, x1, y1;
} box;

static int boxes_overlap(box a, box b) { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1; }

up_status up_plot_scatter(const char *path, const up_plot_style *style, const up_plot_scatter_data *d,
                          up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    PLOT_CHECK(d && d->n >= 0 && (d->n == 0 || (d->x && d->y)), "%s: scatter: no data struct, n < 0 or x/y NULL",
          path ? path : "plot");
    PLOT_CHECK(!d->group || (d->n_groups > 0 && d->group_names), "%s: scatter: group needs group_names", path);
    PLOT_CHECK(d->control_group >= 0 && d->control_group <= (d->group ? d->n_groups : 0),
               "%s: scatter: control_group %d is outside 0..%d", path, d->control_group, d->group ? d->n_groups : 0);
    if (d->group)
        for (int i = 0; i < d->n; i++)
            PLOT_CHECK(d->group[i] >= 0 && d->group[i] < d->n_groups, "%s: scatter: group[%d] = %d is outside 0..%d",
                       path, i, d->group[i], d->n_groups - 1);
    canvas cv, *c = &cv;
    up_status s = plot_canvas_open(c, &st, path, err);
    if (s) return s;
    double top = plot_header(c, &st);
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    int m = 0;
    double sxx = 0, sxy = 0, syy = 0, sx1 = 0, sy1 = 0;
    for (int i = 0; i < d->n; i++) {
        double x = d->x[i], y = d->y[i];
        if (!isfinite(x) || !isfinite(y)) continue;
        m++;
        xmn = fmin(xmn, x), xmx = fmax(xmx, x), ymn = fmin(ymn, y), ymx = fmax(ymx, y);
        sx1 += x, sy1 += y, sxx += x * x, sxy += x * y, syy += y * y;
    }
    int ng = d->group ? d->n_groups : 0;
    legend_item *items = malloc((size_t)(ng + 1) * sizeof *items);
    if (!items) {
        plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    /* Colours and markers: the palette in group order, skipping the control group (grey). */
    int *color_of = malloc((size_t)(ng + 1) * sizeof *color_of);
    if (!color_of) {
        free(items), plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int g = 0, nc = 0; g < ng; g++) color_of[g] = g == d->control_group - 1 ? -1 : nc++;
    for (int g = 0; g < ng; g++)
        items[g] = (legend_item){d->group_names[g] ? d->group_names[g] : "",
                                 color_of[g] < 0 ? plot_hex(C_CONTROL) : plot_series_color(color_of[g]),
                                 color_of[g] < 0 ? 0 : color_of[g] / 8 + color_of[g], 0, 0, 0, 0};
    int ni = ng;
    if (d->identity) items[ni++] = (legend_item){"y = x", plot_hex(C_CONTROL), -1, SW_DASH, 0, 0, 0};
    double lh = plot_line_h(c, c->fs), llh = plot_line_h(c, plot_label_size(c));
    double bottom_fixed = PAD + (st.xlabel && *st.xlabel ? llh + 4 : 0) + lh + TICK + 3;
    legend L = plot_legend_plan(c, items, ni, c->W * 0.3, c->H - top - PAD);
    double right = PAD + (ni ? L.w + 14 : 0);
    if (m == 0) {
        frame f = {PAD, top, c->W - right, c->H - PAD};
        plot_no_data(c, &f);
        if (ni) plot_legend_draw(c, &L, f.x1 + 14, top);
        free(items), free(color_of);
        return plot_canvas_finish(c, &st, path, err);
    }
    if (d->identity) { /* one range for both, so y = x is the diagonal */
        xmn = ymn = fmin(xmn, ymn);
        xmx = ymx = fmax(xmx, ymx);
    }
    double est_h = c->H - top - bottom_fixed;
    axis ya, xa;
    plot_axis_init(&ya, ymn, ymx, (int)(est_h / 65) + 2, 0.06, 0.06, 0);
    double ylab_w = st.ylabel && *st.ylabel ? llh + 6 : 0;
    double x0 = PAD + ylab_w + plot_ticks_w(c, &ya) + TICK + 5;
    frame f = {x0, top, c->W - right, c->H - bottom_fixed};
    if (d->identity) { /* square frame: equal units on both axes; the room it leaves is cut off */
        double side = fmin(f.x1 - f.x0, f.y1 - f.y0);
        f.x1 = f.x0 + side, f.y1 = f.y0 + side;
        plot_axis_init(&ya, ymn, ymx, (int)(side / 65) + 2, 0.06, 0.06, 0);
        plot_canvas_crop(c, &st, f.x1 + (ni ? 14 + L.w : 0) + PAD, f.y1 + bottom_fixed);
    }
    plot_axis_x(c, &xa, xmn, xmx, 0.06, f.x0, f.x1, 0);
    if (d->identity) ya = xa; /* the same ticks on both axes */
    xa.p0 = f.x0, xa.p1 = f.x1, ya.p0 = f.y1, ya.p1 = f.y0;
    plot_grid_y(c, &f, &ya);
    plot_grid_x(c, &f, &xa);
    plot_ticks_y(c, &f, &ya);
    plot_ticks_x(c, &f, &xa);
    plot_clip_to(c, &f, 0);
    cairo_t *cr = c->cr;
    if (d->identity) {
        cairo_save(cr);
        cairo_set_dash(cr, (double[]){5, 4}, 2, 0);
        double a = fmax(xa.lo, ya.lo), b = fmin(xa.hi, ya.hi);
        plot_stroke_line(c, plot_amap(&xa, a), plot_amap(&ya, a), plot_amap(&xa, b), plot_amap(&ya, b),
                         plot_hex(C_CONTROL), 1.2);
        cairo_restore(cr);
        double zx = plot_amap(&xa, 0), zy = plot_amap(&ya, 0); /* faint zero lines: sign agreement matters */
        plot_stroke_line(c, zx, f.y0, zx, f.y1, plot_hex(0xC8C8C8), 0.8);
        plot_stroke_line(c, f.x0, zy, f.x1, zy, plot_hex(0xC8C8C8), 0.8);
    }
    double r = d->n > 400 ? 2.6 : 3.8;
    for (int pass = 0; pass < 2; pass++) /* controls first, behind the others */
        for (int i = 0; i < d->n; i++) {
            double x = d->x[i], y = d->y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            int g = d->group ? d->group[i] : 0, ci = d->group ? color_of[g] : 0;
            if ((ci < 0) != (pass == 0)) continue;
            plot_marker(c, ci < 0 ? 0 : ci / 8 + ci, plot_amap(&xa, x), plot_amap(&ya, y), ci < 0 ? r * 0.85 : r,
                        ci < 0 ? plot_hex(C_CONTROL) : plot_series_color(ci), 0);
        }
    cairo_restore(cr);
    plot_spines(c, &f);
    box stats_box = {0, 0, 0, 0};
    if (d->identity && m >= 2) {
        /* r and the slope through the origin: measured ≈ slope × predicted when linear. */
        double cov = sxy - sx1 * sy1 / m, vx = sxx - sx1 * sx1 / m, vy = syy - sy1 * sy1 / m;
        char buf[128], rbuf[32], sbuf[32];
        if (vx > 0 && vy > 0) snprintf(rbuf, sizeof rbuf, "%.3f", cov / sqrt(vx * vy));
        else snprintf(rbuf, sizeof rbuf, "n/a");
        if (sxx > 0) snprintf(sbuf, sizeof sbuf, "%.3g", sxy / sxx);
        else snprintf(sbuf, sizeof sbuf, "n/a");
        plot_use_minus(rbuf, sizeof rbuf), plot_use_minus(sbuf, sizeof sbuf);
        snprintf(buf, sizeof buf, "n = %d   r = %s   slope = %s", m, rbuf, sbuf);
        double w = plot_text_w(c, buf, c->fs, 0);
        stats_box = (box){f.x0 + 6, f.y0 + 4, f.x0 + 16 + w, f.y0 + 8 + lh};
        cairo_rectangle(cr, f.x0 + 6, f.y0 + 4, w + 10, lh + 4);
        cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
        cairo_fill(cr);
        plot_text_at(c, buf, f.x0 + 11, f.y0 + 6, c->fs, 0, plot_hex(C_TEXT), 0, 0, 0);
    }
    /* Point labels: the first of eight spots around the point that covers no point, no earlier
     * label and not the statistics, and stays inside the frame; a label with no free spot is
     * left out rather than piled on. */
    if (d->labels) {
        double size = c->fs * 0.85, h = plot_line_h(c, size);
        int cap = d->n + 201, nb = 0;
        box *placed = malloc((size_t)cap * sizeof *placed);
        if (placed && stats_box.x1 > stats_box.x0) placed[nb++] = stats_box;
        for (int i = 0; placed && i < d->n; i++)
            if (isfinite(d->x[i]) && isfinite(d->y[i])) {
                double px = plot_amap(&xa, d->x[i]), py = plot_amap(&ya, d->y[i]);
                placed[nb++] = (box){px - r, py - r, px + r, py + r};
            }
        char buf[LABEL_CAP];
        static const double dx[8] = {1, 1, 1, -1, -1, -1, 0, 0}, dy[8] = {-1, 0, 1, -1, 0, 1, -1, 1};
        for (int i = 0; placed && i < d->n && nb < cap; i++) {
            if (!d->labels[i] || !d->labels[i][0] || !isfinite(d->x[i]) || !isfinite(d->y[i])) continue;
            plot_fit(c, d->labels[i], size, 0, c->W * 0.2, buf);
            double w = plot_text_w(c, buf, size, 0), px = plot_amap(&xa, d->x[i]), py = plot_amap(&ya, d->y[i]);
            for (int k = 0; k < 8; k++) {
                double bx = dx[k] > 0 ? px + r + 2 : dx[k] < 0 ? px - r - 2 - w : px - w / 2;
                double by = dy[k] < 0 ? py - r - h + 1 : dy[k] > 0 ? py + r - 1 : py - h / 2;
                if (dx[k] == 0) by = dy[k] < 0 ? py - r - 2 - h : py + r + 2;
                box b = {bx, by, bx + w, by + h};
                if (b.x0 < f.x0 || b.x1 > f.x1 || b.y0 < f.y0 || b.y1 > f.y1) continue;
                int clash = 0;
                for (int j = 0; j < nb && !clash; j++) clash = boxes_overlap(b, placed[j]);
                if (clash) continue;
                placed[nb++] = b;
                plot_text_at(c, buf, b.x0, b.y0, size, 0, plot_hex(C_TEXT), 0, 0, 0);
                break;
            }
        }
        free(placed);
    }
    if (ni) plot_legend_draw(c, &L, f.x1 + 14, f.y0);
    plot_xlabel_at(c, st.xlabel, (f.x0 + f.x1) / 2, f.y1 + TICK + 3 + lh + 2, c->W - 2 * PAD);
    plot_ylabel_at(c, st.ylabel, PAD, (f.y0 + f.y1) / 2, f.y1 - f.y0);
    free(items), free(color_of);
    return plot_canvas_finish(c, &st, path, err);
}
