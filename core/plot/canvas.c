/* canvas — a figure's lifecycle (open, header, finish → PNG) and its basic shapes; see
 * plot_impl.h. */
#include "plot/plot_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/png.h"

up_plot_style up_plot_style_default(void) {
    up_plot_style s;
    memset(&s, 0, sizeof s);
    return s;
}

up_status plot_canvas_open(canvas *c, const up_plot_style *st, const char *path, up_error *err) {
    memset(c, 0, sizeof *c);
    if (!path || !*path) return up_error_set(err, UP_ERR_INVALID, "plot: empty path");
    int w = st->width > 0 ? st->width : UP_PLOT_DEFAULT_WIDTH, h = st->height > 0 ? st->height : UP_PLOT_DEFAULT_HEIGHT;
    if (st->width < 0 || st->height < 0 || w < 64 || h < 64 || w > 16384 || h > 16384)
        return up_error_set(err, UP_ERR_INVALID, "%s: figure size %dx%d is outside 64..16384 pixels", path, w, h);
    if (!(st->scale >= 0) || st->scale > 64 || !(st->font_size >= 0) || st->font_size > 200)
        return up_error_set(err, UP_ERR_INVALID, "%s: bad scale %g or font size %g", path, st->scale, st->font_size);
    if (st->n_meta < 0 || (st->n_meta > 0 && (!st->meta_keys || !st->meta_values)))
        return up_error_set(err, UP_ERR_INVALID, "%s: bad meta list", path);
    c->scale = st->scale > 0 ? st->scale : fmax(0.1, fmin(w / 800.0, h / 500.0));
    c->W = w / c->scale, c->H = h / c->scale;
    c->fs = st->font_size > 0 ? st->font_size : 11;
    c->font = st->font && *st->font ? st->font : "DejaVu Sans";
    c->surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
    if (cairo_surface_status(c->surf) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(c->surf);
        c->surf = NULL;
        return up_error_set(err, UP_ERR_NOMEM, "%s: cannot create a %dx%d image", path, w, h);
    }
    c->cr = cairo_create(c->surf);
    cairo_scale(c->cr, c->scale, c->scale);
    cairo_set_source_rgb(c->cr, 1, 1, 1);
    cairo_paint(c->cr);
    /* Grey anti-aliasing (subpixel colour fringes would be baked into the PNG) and unhinted
     * metrics, so text widths, and with them the layout, do not depend on the pixel size. */
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
    cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
    cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_SLIGHT);
    cairo_set_font_options(c->cr, fo);
    cairo_font_options_destroy(fo);
    cairo_set_line_join(c->cr, CAIRO_LINE_JOIN_ROUND);
    return UP_OK;
}

void plot_canvas_close(canvas *c) {
    if (c->cr) cairo_destroy(c->cr);
    if (c->surf) cairo_surface_destroy(c->surf);
    c->cr = NULL, c->surf = NULL;
}

static int has_key(const up_plot_style *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (st->meta_keys[i] && !strcmp(st->meta_keys[i], key)) return 1;
    return 0;
}

/* Converts the surface to RGB (the background is opaque, so alpha carries nothing) and writes
 * it with the style's text chunks. Closes the canvas. */
up_status plot_canvas_finish(canvas *c, const up_plot_style *st, const char *path, up_error *err) {
    up_status s = UP_OK;
    cairo_status_t cs = cairo_status(c->cr);
    if (cs != CAIRO_STATUS_SUCCESS) {
        s = up_error_set(err, UP_ERR_INVALID, "%s: drawing failed: %s", path, cairo_status_to_string(cs));
        plot_canvas_close(c);
        return s;
    }
    cairo_surface_flush(c->surf);
    int w = cairo_image_surface_get_width(c->surf), h = cairo_image_surface_get_height(c->surf);
    if (c->keep_w > 0) w = (int)fmin(w, ceil(c->keep_w * c->scale));
    if (c->keep_h > 0) h = (int)fmin(h, ceil(c->keep_h * c->scale));
    int stride = cairo_image_surface_get_stride(c->surf);
    const unsigned char *data = cairo_image_surface_get_data(c->surf);
    uint8_t *px = malloc((size_t)w * h * 3);
    int n = st->n_meta;
    const char **keys = malloc((size_t)(n + 2) * sizeof *keys), **vals = malloc((size_t)(n + 2) * sizeof *vals);
    char title[LABEL_CAP];
    if (!px || !keys || !vals) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint32_t p;
            memcpy(&p, data + (size_t)y * stride + 4 * (size_t)x, 4); /* native-endian ARGB */
            uint8_t *o = px + ((size_t)y * w + x) * 3;
            o[0] = (uint8_t)(p >> 16), o[1] = (uint8_t)(p >> 8), o[2] = (uint8_t)p;
        }
    for (int i = 0; i < n; i++) keys[i] = st->meta_keys[i], vals[i] = st->meta_values[i];
    if (st->title && *st->title && !has_key(st, "Title")) {
        plot_clean(st->title, title, sizeof title);
        keys[n] = "Title", vals[n++] = title;
    }
    if (!has_key(st, "Software")) keys[n] = "Software", vals[n++] = "upstream (cairo " CAIRO_VERSION_STRING ")";
    s = up_png_write(path, w, h, 3, (size_t)w * 3, px, keys, vals, n, err);
done:
    free(px);
    free(keys);
    free(vals);
    plot_canvas_close(c);
    return s;
}

/* Title and subtitle, left-aligned; returns the y where the figure body starts. */
double plot_header(canvas *c, const up_plot_style *st) {
    double y = PAD;
    char buf[LABEL_CAP];
    c->header_r = 0;
    if (st->title && *st->title) {
        double size = c->fs * 1.45;
        plot_text_at(c, plot_fit(c, st->title, size, 1, c->W - 2 * PAD, buf), PAD, y, size, 1, plot_hex(C_TEXT), 0, 0,
                     0);
        c->header_r = fmax(c->header_r, PAD + plot_text_w(c, buf, size, 1));
        y += plot_line_h(c, size) + 1;
    }
    if (st->subtitle && *st->subtitle) {
        double size = c->fs * 1.02;
        plot_text_at(c, plot_fit(c, st->subtitle, size, 0, c->W - 2 * PAD, buf), PAD, y, size, 0, plot_hex(C_SOFT), 0,
                     0, 0);
        c->header_r = fmax(c->header_r, PAD + plot_text_w(c, buf, size, 0));
        y += plot_line_h(c, size);
    }
    return y + (y > PAD ? c->fs * 0.8 : 0);
}

void plot_canvas_crop(canvas *c, const up_plot_style *st, double w, double h) {
    if (st->width <= 0 && w < c->W) c->keep_w = fmax(w, c->header_r + PAD);
    if (st->height <= 0 && h < c->H) c->keep_h = h;
}

void plot_stroke_line(canvas *c, double x0, double y0, double x1, double y1, rgb col, double lw) {
    cairo_move_to(c->cr, x0, y0);
    cairo_line_to(c->cr, x1, y1);
    plot_set_rgb(c->cr, col);
    cairo_set_line_width(c->cr, lw);
    cairo_stroke(c->cr);
}

void plot_no_data(canvas *c, const frame *f) {
    cairo_rectangle(c->cr, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
    cairo_set_source_rgb(c->cr, 0.97, 0.97, 0.97);
    cairo_fill(c->cr);
    plot_text_at(c, "no data", (f->x0 + f->x1) / 2, (f->y0 + f->y1) / 2, c->fs * 1.6, 0, plot_hex(C_SOFT), 0.5, 0.5, 0);
}

void plot_clip_to(canvas *c, const frame *f, double slack) {
    cairo_save(c->cr);
    cairo_rectangle(c->cr, f->x0 - slack, f->y0 - slack, f->x1 - f->x0 + 2 * slack, f->y1 - f->y0 + 2 * slack);
    cairo_clip(c->cr);
}
