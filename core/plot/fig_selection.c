/* fig_selection — up_plot_selection (see plot.h): the direction choice as three panels
 * (bypass, induce, KL) over layers, one line per position, thresholds dashed, filtered
 * candidates hollow and the chosen one ringed. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

up_plot_selection_data up_plot_selection_default(void) {
    up_plot_selection_data d;
    memset(&d, 0, sizeof d);
    d.best = -1;
    d.max_kl = d.min_induce = d.max_layer = NAN;
    return d;
}

up_status up_plot_selection(const char *path, const up_plot_style *style, const up_plot_selection_data *d,
                            up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    PLOT_CHECK(d && d->n_pos >= 0 && d->n_layers >= 0, "%s: selection: no data struct or negative size",
          path ? path : "plot");
    int N = d->n_pos * d->n_layers;
    PLOT_CHECK(N == 0 || (d->bypass && d->induce && d->kl), "%s: selection: bypass, induce and kl are required", path);
    PLOT_CHECK(d->best >= -1 && d->best < N,
          "%s: selection: best = %d is outside -1..%d", path, d->best, N - 1);
    canvas cv, *c = &cv;
    up_status s = plot_canvas_open(c, &st, path, err);
    if (s) return s;
    double top = plot_header(c, &st);
    char(*pl)[LABEL_CAP] = plot_labels_copy(d->pos_labels, d->n_pos, "pos %d", -d->n_pos);
    legend_item *items = malloc((size_t)(d->n_pos + 3) * sizeof *items);
    if (!pl || !items) {
        free(pl), free(items), plot_canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    int ni = 0;
    for (int p = 0; p < d->n_pos; p++)
        items[ni++] = (legend_item){pl[p], plot_series_color(p), p / 8 + p, SW_LINE, 0, 0, 0};
    if (d->dropped) {
        items[ni++] = (legend_item){"kept", plot_hex(C_SOFT), 0, 0, 0, 0, 0};
        items[ni++] = (legend_item){"filtered out", plot_hex(C_SOFT), 0, 0, 0, 1, 0};
    }
    if (d->best >= 0) items[ni++] = (legend_item){"chosen", plot_hex(C_TEXT), -1, 0, 0, 0, 1};
    top += plot_legend_row(c, items, ni, PAD, top, c->W - 2 * PAD, 1) + c->fs * 0.3;
    double lh = plot_line_h(c, c->fs), llh = plot_line_h(c, plot_label_size(c));
    const char *xlab = st.xlabel && *st.xlabel ? st.xlabel : "layer";
    double bottom = c->H - PAD - llh - 4 - lh - TICK - 3;
    if (N == 0) {
        frame f = {PAD, top, c->W - PAD, c->H - PAD};
        plot_no_data(c, &f);
        free(pl), free(items);
        return plot_canvas_finish(c, &st, path, err);
    }
    const double *metric[3] = {d->bypass, d->induce, d->kl};
    static const char *const title[3] = {"bypass score (harmful, ablated)", "induce score (harmless, +r)",
                                         "KL(base \xE2\x80\x96 ablated), nats"};
    double slot = (c->W - 2 * PAD) / 3;
    for (int k = 0; k < 3; k++) {
        const double *v = metric[k];
        int all_pos = 1;
        double mn = INFINITY, mx = -INFINITY;
        for (int i = 0; i < N; i++)
            if (isfinite(v[i])) mn = fmin(mn, v[i]), mx = fmax(mx, v[i]), all_pos &= v[i] > 0;
        double thr = k == 1 ? d->min_induce : k == 2 ? d->max_kl : NAN;
        /* KL spans decades (1e-3 where the direction is harmless, >1 where it breaks the model),
         * so a log axis keeps both ends readable. */
        int lg = k == 2 && all_pos && isfinite(mn) && mx / mn > 20;
        if (isfinite(thr) && (!lg || thr > 0)) mn = fmin(mn, thr), mx = fmax(mx, thr);
        axis ya, xa;
        plot_axis_init(&ya, mn, mx, (int)((bottom - top) / 65) + 2, 0.06, 0.06, lg);
        double ptop = top + llh + 4;
        double px0 = PAD + k * slot + plot_ticks_w(c, &ya) + TICK + 5, px1 = PAD + (k + 1) * slot - (k < 2 ? 16 : 0);
        frame f = {px0, ptop, px1, bottom};
        plot_axis_x(c, &xa, 0, d->n_layers - 1, 0, f.x0, f.x1, 1);
        xa.p0 = f.x0, xa.p1 = f.x1, ya.p0 = f.y1, ya.p1 = f.y0;
        char tb[LABEL_CAP];
        plot_text_at(c, plot_fit(c, title[k], plot_label_size(c), 1, slot - 8, tb), f.x0, top, plot_label_size(c), 1,
                     plot_hex(C_TEXT), 0, 0, 0);
        /* Layers ≥ max_layer are dropped: the shade starts half a layer before the first
         * whole layer at or past it (6 for 6.0, 7 for 6.4), so a kept layer is never shaded. */
        double first_dropped = ceil(d->max_layer - 1e-9);
        if (isfinite(d->max_layer) && first_dropped - 0.5 < xa.hi) {
            double sx0 = fmax(f.x0, plot_amap(&xa, first_dropped - 0.5));
            cairo_rectangle(c->cr, sx0, f.y0, f.x1 - sx0, f.y1 - f.y0);
            cairo_set_source_rgb(c->cr, 0.93, 0.93, 0.93);
            cairo_fill(c->cr);
        }
        plot_grid_y(c, &f, &ya);
        plot_grid_x(c, &f, &xa);
        plot_ticks_y(c, &f, &ya);
        plot_ticks_x(c, &f, &xa);
        plot_clip_to(c, &f, 8);
        cairo_t *cr = c->cr;
        if (isfinite(thr) && (!lg || thr > 0)) {
            double y = plot_amap(&ya, thr);
            cairo_save(cr);
            cairo_set_dash(cr, (double[]){5, 4}, 2, 0);
            plot_stroke_line(c, f.x0, y, f.x1, y, plot_hex(C_TEXT), 1.1);
            cairo_restore(cr);
            char buf[64], num[32];
            snprintf(num, sizeof num, "%g", thr);
            plot_use_minus(num, sizeof num);
            snprintf(buf, sizeof buf, "%s %s", k == 1 ? "min" : "max", num);
            plot_text_at(c, buf, f.x1 - 3, y - 2, c->fs * 0.85, 0, plot_hex(C_SOFT), 1, 1, 0);
        }
        for (int p = 0; p < d->n_pos; p++) {
            const double *row = v + (size_t)p * d->n_layers;
            int pen = 0;
            for (int l = 0; l < d->n_layers; l++) {
                if (!isfinite(row[l]) || (lg && row[l] <= 0)) {
                    pen = 0;
                    continue;
                }
                if (pen) cairo_line_to(cr, plot_amap(&xa, l), plot_amap(&ya, row[l]));
                else cairo_move_to(cr, plot_amap(&xa, l), plot_amap(&ya, row[l]));
                pen = 1;
            }
            plot_set_rgb(cr, plot_series_color(p));
            cairo_set_line_width(cr, 1.6);
            cairo_stroke(cr);
            double r = d->n_layers > 40 ? 2.2 : 3.0;
            for (int l = 0; l < d->n_layers; l++) {
                if (!isfinite(row[l]) || (lg && row[l] <= 0)) continue;
                int dropped = d->dropped && d->dropped[(size_t)p * d->n_layers + l];
                plot_marker(c, p / 8 + p, plot_amap(&xa, l), plot_amap(&ya, row[l]), r, plot_series_color(p), dropped);
            }
        }
        if (d->best >= 0 && isfinite(v[d->best]) && (!lg || v[d->best] > 0)) {
            int bl = d->best % d->n_layers;
            double bx = plot_amap(&xa, bl), by = plot_amap(&ya, v[d->best]);
            cairo_new_sub_path(cr);
            cairo_arc(cr, bx, by, 7.5, 0, 2 * M_PI);
            plot_set_rgb(cr, plot_hex(C_TEXT));
            cairo_set_line_width(cr, 1.8);
            cairo_stroke(cr);
        }
        cairo_restore(cr);
        plot_spines(c, &f);
        if (d->best >= 0 && k == 0) {
            char buf[LABEL_CAP + 64];
            snprintf(buf, sizeof buf, "chosen: %s, layer %d", pl[d->best / d->n_layers], d->best % d->n_layers);
            char fb[LABEL_CAP];
            plot_fit(c, buf, c->fs * 0.95, 0, f.x1 - f.x0 - 8, fb);
            double w = plot_text_w(c, fb, c->fs * 0.95, 0);
            cairo_rectangle(cr, f.x1 - w - 10, f.y0 + 2, w + 8, lh + 2);
            cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
            cairo_fill(cr);
            plot_text_at(c, fb, f.x1 - 6, f.y0 + 3, c->fs * 0.95, 0, plot_hex(C_TEXT), 1, 0, 0);
        }
        plot_xlabel_at(c, xlab, (f.x0 + f.x1) / 2, f.y1 + TICK + 3 + lh + 2, slot);
    }
    free(pl), free(items);
    return plot_canvas_finish(c, &st, path, err);
}
