/* legend — point markers, legend swatches and legends (vertical or in a row); see plot_impl.h. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdio.h>

static void marker_path(cairo_t *cr, int kind, double x, double y, double r) {
    switch (kind % 6) {
    case 0: cairo_new_sub_path(cr), cairo_arc(cr, x, y, r, 0, 2 * M_PI); break;
    case 1: cairo_rectangle(cr, x - 0.85 * r, y - 0.85 * r, 1.7 * r, 1.7 * r); break;
    case 2:
        cairo_move_to(cr, x, y - 1.15 * r), cairo_line_to(cr, x + r, y + 0.6 * r),
            cairo_line_to(cr, x - r, y + 0.6 * r);
        cairo_close_path(cr);
        break;
    case 3:
        cairo_move_to(cr, x, y - 1.2 * r), cairo_line_to(cr, x + r, y), cairo_line_to(cr, x, y + 1.2 * r);
        cairo_line_to(cr, x - r, y), cairo_close_path(cr);
        break;
    case 4:
        cairo_move_to(cr, x, y + 1.15 * r), cairo_line_to(cr, x + r, y - 0.6 * r),
            cairo_line_to(cr, x - r, y - 0.6 * r);
        cairo_close_path(cr);
        break;
    default:
        for (int i = 0; i < 6; i++) {
            double a = M_PI / 6 + i * M_PI / 3;
            if (i == 0) cairo_move_to(cr, x + r * cos(a), y + r * sin(a));
            else cairo_line_to(cr, x + r * cos(a), y + r * sin(a));
        }
        cairo_close_path(cr);
    }
}

/* Filled with a thin white rim (so overlapping markers stay apart), or hollow: white inside,
 * coloured outline (a filtered or dropped point). */
void plot_marker(canvas *c, int kind, double x, double y, double r, rgb col, int hollow) {
    cairo_t *cr = c->cr;
    marker_path(cr, kind, x, y, r);
    if (hollow) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_fill_preserve(cr);
        plot_set_rgb(cr, col);
        cairo_set_line_width(cr, 1.3);
    } else {
        plot_set_rgb(cr, col);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, 0.6);
    }
    cairo_stroke(cr);
}

static void swatch(canvas *c, const legend_item *it, double x, double y, double size) {
    cairo_t *cr = c->cr;
    if (it->patch) {
        cairo_rectangle(cr, x + 4, y - size * 0.4, SWATCH - 8, size * 0.8);
        plot_set_rgb(cr, it->color);
        cairo_fill(cr);
    }
    if (it->line) {
        cairo_save(cr);
        if (it->line == SW_DASH) cairo_set_dash(cr, (double[]){4, 3}, 2, 0);
        plot_stroke_line(c, x, y, x + SWATCH, y, it->color, 1.8);
        cairo_restore(cr);
    }
    if (it->marker >= 0) plot_marker(c, it->marker, x + SWATCH / 2, y, size * 0.32, it->color, it->hollow);
    if (it->ring) {
        cairo_new_sub_path(cr);
        cairo_arc(cr, x + SWATCH / 2, y, size * 0.5, 0, 2 * M_PI);
        plot_set_rgb(cr, it->color);
        cairo_set_line_width(cr, 1.6);
        cairo_stroke(cr);
    }
}

/* A vertical legend at most max_w wide and max_h tall: the font shrinks to 80 % before
 * entries are dropped. */
legend plot_legend_plan(canvas *c, const legend_item *items, int n, double max_w, double max_h) {
    legend L = {items, n, n, c->fs, 0, 0, 0};
    if (n == 0) return L;
    for (;;) {
        L.row = L.size * 1.55;
        if (n * L.row <= max_h || L.size <= c->fs * 0.8) break;
        L.size *= 0.93;
    }
    if (n * L.row > max_h) L.shown = (int)(max_h / L.row) - 1;
    if (L.shown < 1) L.shown = 1;
    char buf[LABEL_CAP];
    double tw = 0;
    for (int i = 0; i < L.shown; i++)
        tw = fmax(tw, plot_text_w(c, plot_fit(c, items[i].label, L.size, 0, max_w - SWATCH - 6, buf), L.size, 0));
    if (L.shown < n) tw = fmax(tw, plot_text_w(c, "\xE2\x80\xA6 999 more", L.size, 0));
    L.w = SWATCH + 6 + tw;
    L.h = (L.shown + (L.shown < n)) * L.row;
    return L;
}

void plot_legend_draw(canvas *c, const legend *L, double x, double y) {
    char buf[LABEL_CAP];
    for (int i = 0; i < L->shown; i++) {
        double cy = y + (i + 0.5) * L->row;
        swatch(c, &L->items[i], x, cy, L->size);
        plot_text_at(c, plot_fit(c, L->items[i].label, L->size, 0, L->w - SWATCH - 6, buf), x + SWATCH + 6, cy, L->size,
                     0, plot_hex(C_TEXT), 0, 0.5, 0);
    }
    if (L->shown < L->n) {
        snprintf(buf, sizeof buf, "\xE2\x80\xA6 %d more", L->n - L->shown);
        plot_text_at(c, buf, x + SWATCH + 6, y + (L->shown + 0.5) * L->row, L->size, 0, plot_hex(C_SOFT), 0, 0.5, 0);
    }
}

/* A legend laid out in a row (wrapping) across [x, x + max_w]; returns its height. */
double plot_legend_row(canvas *c, const legend_item *items, int n, double x, double y, double max_w, int draw) {
    if (n == 0) return 0;
    double size = c->fs, row = size * 1.6, cx = x, cy = y;
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i++) {
        plot_fit(c, items[i].label, size, 0, max_w * 0.5, buf);
        double w = SWATCH + 5 + plot_text_w(c, buf, size, 0) + 16;
        if (cx > x && cx + w > x + max_w) cx = x, cy += row;
        if (draw) {
            swatch(c, &items[i], cx, cy + row / 2, size);
            plot_text_at(c, buf, cx + SWATCH + 5, cy + row / 2, size, 0, plot_hex(C_TEXT), 0, 0.5, 0);
        }
        cx += w;
    }
    return cy + row - y;
}
