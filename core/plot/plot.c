/* plot — see plot.h.
 *
 * Every figure follows the same steps on a canvas of W × H layout units: the header (title,
 * subtitle), margins measured from the text that will sit in them, axes with nice ticks, the
 * data clipped to the plot frame, then legends and axis labels. Text is measured before it is
 * placed, so nothing is clipped by the image edge and labels shorten ("…") rather than
 * overlap. */
#include "plot/plot.h"

#include <cairo.h>
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/png.h"

#define LABEL_CAP 256 /* bytes of one cleaned label, ellipsis included */
#define PAD 14.0      /* outer margin, layout units */
#define TICK 4.0      /* tick mark length */
#define MAX_TICKS 64

/* ---- colours ---- */

typedef struct rgb {
    double r, g, b;
} rgb;

static rgb hex(unsigned v) {
    return (rgb){((v >> 16) & 255) / 255.0, ((v >> 8) & 255) / 255.0, (v & 255) / 255.0};
}

/* Okabe & Ito (2008), ordered so the first few are the most distinct on white; the yellow
 * is last because it is the hardest to see against the background. */
static const unsigned okabe_ito[8] = {0x0072B2, 0xD55E00, 0x009E73, 0xE69F00,
                                      0xCC79A7, 0x56B4E9, 0x000000, 0xF0E442};
#define C_POS 0xD55E00     /* raises the objective: vermillion, the warm end of the diverging map */
#define C_NEG 0x0072B2     /* lowers it: blue, the cold end */
#define C_CONTROL 0x8C8C8C
#define C_MISSING 0xBDBDBD
#define C_GRID 0xE6E6E6
#define C_SPINE 0x4D4D4D
#define C_TEXT 0x1A1A1A
#define C_SOFT 0x595959

static rgb series_color(int i) { return hex(okabe_ito[i % 8]); }

/* ColorBrewer RdBu (11 classes), negative (blue) to positive (red), white-ish at 0. */
static const unsigned rdbu[11] = {0x053061, 0x2166AC, 0x4393C3, 0x92C5DE, 0xD1E5F0, 0xF7F7F7,
                                  0xFDDBC7, 0xF4A582, 0xD6604D, 0xB2182B, 0x67001F};
/* viridis sampled at 0, 0.1, …, 1: perceptually uniform and readable in greyscale. */
static const unsigned viridis[11] = {0x440154, 0x482475, 0x414487, 0x355F8D, 0x2A788E, 0x21918C,
                                     0x22A884, 0x44BF70, 0x7AD151, 0xBDDF26, 0xFDE725};

/* t in [0, 1] along an 11-stop map, linear between stops. */
static rgb cmap_at(const unsigned *stops, double t) {
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double f = t * 10;
    int i = (int)f;
    if (i >= 10) i = 9;
    f -= i;
    rgb a = hex(stops[i]), b = hex(stops[i + 1]);
    return (rgb){a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f};
}

/* Relative luminance, to pick black or white text on a cell. */
static double luminance(rgb c) { return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b; }

/* ---- canvas and text ---- */

typedef struct canvas {
    cairo_surface_t *surf;
    cairo_t *cr;
    double W, H;     /* layout units */
    double scale;    /* pixels per unit */
    double fs;       /* tick label size; other sizes derive from it */
    const char *font;
} canvas;

static void set_rgb(cairo_t *cr, rgb c) { cairo_set_source_rgb(cr, c.r, c.g, c.b); }

static void use_font(canvas *c, double size, int bold) {
    cairo_select_font_face(c->cr, c->font, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(c->cr, size);
}

static double text_w(canvas *c, const char *s, double size, int bold) {
    use_font(c, size, bold);
    cairo_text_extents_t e;
    cairo_text_extents(c->cr, s, &e);
    return e.x_advance;
}

/* Height of one line of text (ascent + descent of the font, not of the glyphs drawn), so
 * rows of labels line up whatever letters they hold. */
static double line_h(canvas *c, double size) {
    use_font(c, size, 0);
    cairo_font_extents_t fe;
    cairo_font_extents(c->cr, &fe);
    return fe.ascent + fe.descent;
}

/* Draws s with (x, y) at fraction ha of its advance (0 left, 1 right) and fraction va of its
 * line box (0 top, 0.5 middle, 1 bottom), rotated `angle` radians counter-clockwise about it. */
static void text_at(canvas *c, const char *s, double x, double y, double size, int bold, rgb col, double ha,
                    double va, double angle) {
    cairo_t *cr = c->cr;
    cairo_save(cr);
    use_font(c, size, bold);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    cairo_text_extents_t te;
    cairo_text_extents(cr, s, &te);
    cairo_translate(cr, x, y);
    if (angle != 0) cairo_rotate(cr, -angle);
    cairo_move_to(cr, -ha * te.x_advance, fe.ascent - va * (fe.ascent + fe.descent));
    set_rgb(cr, col);
    cairo_show_text(cr, s);
    cairo_restore(cr);
}

/* Copies in to out as valid UTF-8 that cairo accepts: invalid sequences and C0/C1 controls
 * become U+FFFD, except the common whitespace controls, shown escaped ("\n") since tokens
 * are often exactly a newline. Stops with "…" when out would overflow. */
static void clean(const char *in, char *out, size_t cap) {
    static const char repl[] = "\xEF\xBF\xBD", ell[] = "\xE2\x80\xA6";
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    size_t o = 0;
    while (*p) {
        const char *piece;
        size_t len;
        char esc[3] = {'\\', 0, 0};
        unsigned c = *p;
        if (c < 0x80) {
            len = 1, piece = (const char *)p;
            if (c == '\n' || c == '\t' || c == '\r') esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r', piece = esc, len = 2;
            else if (c < 0x20 || c == 0x7f) piece = repl, len = 3;
            p++;
        } else {
            int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            unsigned cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
            for (int i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80) {
                    n = 0;
                    break;
                }
                cp = cp << 6 | (p[i] & 0x3f);
            }
            if (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) n = 0;
            if (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) n = 0;
            if (n == 2 && cp < 0xa0) n = 0; /* C1 controls */
            if (n) piece = (const char *)p, len = (size_t)n, p += n;
            else piece = repl, len = 3, p++;
        }
        if (o + len + sizeof ell > cap) {
            memcpy(out + o, ell, sizeof ell); /* includes the NUL */
            return;
        }
        memcpy(out + o, piece, len);
        o += len;
    }
    out[o] = 0;
}

/* clean(s) shortened with "…" until it is at most max_w wide at this size. Returns buf. */
static char *fit(canvas *c, const char *s, double size, int bold, double max_w, char *buf) {
    clean(s, buf, LABEL_CAP);
    if (text_w(c, buf, size, bold) <= max_w) return buf;
    size_t bound[LABEL_CAP];
    int nb = 0;
    for (size_t i = 0; buf[i]; i++)
        if (((unsigned char)buf[i] & 0xc0) != 0x80) bound[nb++] = i;
    char tmp[LABEL_CAP + 4];
    int lo = 0, hi = nb - 1, best = -1; /* longest prefix of k characters that fits with "…" */
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        size_t end = bound[mid];
        while (end > 0 && buf[end - 1] == ' ') end--;
        memcpy(tmp, buf, end);
        memcpy(tmp + end, "\xE2\x80\xA6", 4);
        if (text_w(c, tmp, size, bold) <= max_w) best = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    if (best < 0) {
        strcpy(buf, text_w(c, "\xE2\x80\xA6", size, bold) <= max_w ? "\xE2\x80\xA6" : "");
        return buf;
    }
    size_t end = bound[best];
    while (end > 0 && buf[end - 1] == ' ') end--;
    memcpy(buf + end, "\xE2\x80\xA6", 4);
    return buf;
}

/* Typographic minus for a leading '-' (cap must leave 2 spare bytes). */
static void use_minus(char *buf, size_t cap) {
    if (buf[0] != '-' || strlen(buf) + 3 > cap) return;
    memmove(buf + 3, buf + 1, strlen(buf));
    memcpy(buf, "\xE2\x88\x92", 3);
}

/* A user's value format must print exactly one double and nothing else that reads memory. */
static int format_ok(const char *f) {
    int conv = 0;
    for (const char *p = f; *p; p++) {
        if (*p != '%') continue;
        if (*++p == '%') continue;
        while (*p && strchr("-+ #0", *p)) p++;
        while (isdigit((unsigned char)*p)) p++;
        if (*p == '.')
            for (p++; isdigit((unsigned char)*p);) p++;
        if (*p == 'l') p++;
        if (!*p || !strchr("eEfFgGaA", *p)) return 0;
        conv++;
    }
    return conv == 1;
}

static void fmt_value(const char *fmt, double v, char *buf, size_t cap) {
    if (!isfinite(v)) {
        snprintf(buf, cap, "n/a");
        return;
    }
    snprintf(buf, cap, fmt, v);
    use_minus(buf, cap);
}

/* ---- axes ---- */

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

typedef struct axis {
    double lo, hi; /* data values at p0 and p1 */
    int log;
    int n;
    double ticks[MAX_TICKS];
    double step;
    double p0, p1; /* layout coordinates of lo and hi */
} axis;

/* An axis over the data range [lo, hi] padded by pad_lo/pad_hi of the span; degenerate and
 * empty ranges are widened so every axis has a non-zero span and at least two ticks. */
static void axis_init(axis *a, double lo, double hi, int target, double pad_lo, double pad_hi, int log_scale) {
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
static void axis_index(axis *a, int n, int target) {
    axis_init(a, -0.5, n - 0.5, target, 0, 0, 0);
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

static double amap(const axis *a, double v) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->p0 + t * (a->p1 - a->p0);
}

static void fmt_tick(const axis *a, double v, char *buf, size_t cap) {
    double m = fabs(v);
    if (a->log || (v != 0 && (m >= 1e6 || m < 1e-4))) {
        snprintf(buf, cap, "%g", v);
    } else {
        int dec = a->step >= 1 || a->step <= 0 ? 0 : (int)ceil(-log10(a->step) - 1e-9);
        if (dec > 9) dec = 9;
        snprintf(buf, cap, "%.*f", dec, v);
        if (buf[0] == '-' && strspn(buf, "-0.") == strlen(buf)) memmove(buf, buf + 1, strlen(buf)); /* "-0.0" */
    }
    use_minus(buf, cap);
}

static double ticks_w(canvas *c, const axis *a) {
    double w = 0;
    char buf[64];
    for (int i = 0; i < a->n; i++) {
        fmt_tick(a, a->ticks[i], buf, sizeof buf);
        w = fmax(w, text_w(c, buf, c->fs, 0));
    }
    return w;
}

/* Whether the tick labels of a horizontal axis (p0, p1 set) leave a gap between neighbours. */
static int xticks_fit(canvas *c, const axis *a) {
    char buf[64];
    double prev = -INFINITY;
    for (int i = 0; i < a->n; i++) {
        fmt_tick(a, a->ticks[i], buf, sizeof buf);
        double x = amap(a, a->ticks[i]), w = text_w(c, buf, c->fs, 0);
        if (x - w / 2 < prev + c->fs * 0.8) return 0;
        prev = x + w / 2;
    }
    return 1;
}

/* A numeric x axis mapped to [p0, p1] with as many ticks as fit: about one per 100 units,
 * fewer when the labels are wide (long decimals on a narrow panel). index: layer or category
 * numbers 0..n-1 (hi + 1 of them), integer ticks only. */
static void axis_x(canvas *c, axis *a, double lo, double hi, double pad, double p0, double p1, int index) {
    for (int target = (int)((p1 - p0) / 100) + 2;; target--) {
        if (index) axis_index(a, (int)hi + 1, target);
        else axis_init(a, lo, hi, target, pad, pad, 0);
        a->p0 = p0, a->p1 = p1;
        if (target <= 2 || xticks_fit(c, a)) return;
    }
}

typedef struct frame {
    double x0, y0, x1, y1; /* plot area, layout units; y0 is the top */
} frame;

static void stroke_line(canvas *c, double x0, double y0, double x1, double y1, rgb col, double lw) {
    cairo_move_to(c->cr, x0, y0);
    cairo_line_to(c->cr, x1, y1);
    set_rgb(c->cr, col);
    cairo_set_line_width(c->cr, lw);
    cairo_stroke(c->cr);
}

static void grid_y(canvas *c, const frame *f, const axis *ya) {
    for (int i = 0; i < ya->n; i++) {
        double y = amap(ya, ya->ticks[i]);
        if (y < f->y0 - 0.5 || y > f->y1 + 0.5) continue;
        stroke_line(c, f->x0, y, f->x1, y, hex(C_GRID), 0.7);
    }
}

static void grid_x(canvas *c, const frame *f, const axis *xa) {
    for (int i = 0; i < xa->n; i++) {
        double x = amap(xa, xa->ticks[i]);
        if (x < f->x0 - 0.5 || x > f->x1 + 0.5) continue;
        stroke_line(c, x, f->y0, x, f->y1, hex(C_GRID), 0.7);
    }
}

static void ticks_y(canvas *c, const frame *f, const axis *ya) {
    char buf[64];
    for (int i = 0; i < ya->n; i++) {
        double y = amap(ya, ya->ticks[i]);
        if (y < f->y0 - 0.5 || y > f->y1 + 0.5) continue;
        stroke_line(c, f->x0 - TICK, y, f->x0, y, hex(C_SPINE), 0.8);
        fmt_tick(ya, ya->ticks[i], buf, sizeof buf);
        text_at(c, buf, f->x0 - TICK - 3, y, c->fs, 0, hex(C_TEXT), 1, 0.5, 0);
    }
}

static void ticks_x(canvas *c, const frame *f, const axis *xa) {
    char buf[64];
    for (int i = 0; i < xa->n; i++) {
        double x = amap(xa, xa->ticks[i]);
        if (x < f->x0 - 0.5 || x > f->x1 + 0.5) continue;
        stroke_line(c, x, f->y1, x, f->y1 + TICK, hex(C_SPINE), 0.8);
        fmt_tick(xa, xa->ticks[i], buf, sizeof buf);
        text_at(c, buf, x, f->y1 + TICK + 2, c->fs, 0, hex(C_TEXT), 0.5, 0, 0);
    }
}

/* Left and bottom spines only: the frame's other sides carry no information. */
static void spines(canvas *c, const frame *f) {
    cairo_move_to(c->cr, f->x0, f->y0);
    cairo_line_to(c->cr, f->x0, f->y1);
    cairo_line_to(c->cr, f->x1, f->y1);
    set_rgb(c->cr, hex(C_SPINE));
    cairo_set_line_width(c->cr, 0.9);
    cairo_stroke(c->cr);
}

static double label_size(const canvas *c) { return c->fs * 1.12; }

/* Axis titles: x centred below `y`, y rotated and centred on the frame at `x` (its top edge). */
static void xlabel_at(canvas *c, const char *s, double cx, double y, double max_w) {
    char buf[LABEL_CAP];
    if (s && *s) text_at(c, fit(c, s, label_size(c), 0, max_w, buf), cx, y, label_size(c), 0, hex(C_TEXT), 0.5, 0, 0);
}

static void ylabel_at(canvas *c, const char *s, double x, double cy, double max_w) {
    char buf[LABEL_CAP];
    if (s && *s)
        text_at(c, fit(c, s, label_size(c), 0, max_w, buf), x, cy, label_size(c), 0, hex(C_TEXT), 0.5, 0, M_PI / 2);
}

static void no_data(canvas *c, const frame *f) {
    cairo_rectangle(c->cr, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
    cairo_set_source_rgb(c->cr, 0.97, 0.97, 0.97);
    cairo_fill(c->cr);
    text_at(c, "no data", (f->x0 + f->x1) / 2, (f->y0 + f->y1) / 2, c->fs * 1.6, 0, hex(C_SOFT), 0.5, 0.5, 0);
}

static void clip_to(canvas *c, const frame *f, double slack) {
    cairo_save(c->cr);
    cairo_rectangle(c->cr, f->x0 - slack, f->y0 - slack, f->x1 - f->x0 + 2 * slack, f->y1 - f->y0 + 2 * slack);
    cairo_clip(c->cr);
}

/* ---- markers and legends ---- */

static void marker_path(cairo_t *cr, int kind, double x, double y, double r) {
    switch (kind % 6) {
    case 0: cairo_new_sub_path(cr), cairo_arc(cr, x, y, r, 0, 2 * M_PI); break;
    case 1: cairo_rectangle(cr, x - 0.85 * r, y - 0.85 * r, 1.7 * r, 1.7 * r); break;
    case 2:
        cairo_move_to(cr, x, y - 1.15 * r), cairo_line_to(cr, x + r, y + 0.6 * r), cairo_line_to(cr, x - r, y + 0.6 * r);
        cairo_close_path(cr);
        break;
    case 3:
        cairo_move_to(cr, x, y - 1.2 * r), cairo_line_to(cr, x + r, y), cairo_line_to(cr, x, y + 1.2 * r);
        cairo_line_to(cr, x - r, y), cairo_close_path(cr);
        break;
    case 4:
        cairo_move_to(cr, x, y + 1.15 * r), cairo_line_to(cr, x + r, y - 0.6 * r), cairo_line_to(cr, x - r, y - 0.6 * r);
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
static void marker(canvas *c, int kind, double x, double y, double r, rgb col, int hollow) {
    cairo_t *cr = c->cr;
    marker_path(cr, kind, x, y, r);
    if (hollow) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_fill_preserve(cr);
        set_rgb(cr, col);
        cairo_set_line_width(cr, 1.3);
    } else {
        set_rgb(cr, col);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, 0.6);
    }
    cairo_stroke(cr);
}

enum { SW_NONE = 0, SW_LINE = 1, SW_DASH = 2 };

typedef struct legend_item {
    const char *label;
    rgb color;
    int marker; /* marker kind, -1 none */
    int line;   /* SW_* */
    int patch;  /* a filled box (bars, cells) */
    int hollow;
    int ring;   /* the "chosen" ring */
} legend_item;

#define SWATCH 22.0

static void swatch(canvas *c, const legend_item *it, double x, double y, double size) {
    cairo_t *cr = c->cr;
    if (it->patch) {
        cairo_rectangle(cr, x + 4, y - size * 0.4, SWATCH - 8, size * 0.8);
        set_rgb(cr, it->color);
        cairo_fill(cr);
    }
    if (it->line) {
        cairo_save(cr);
        if (it->line == SW_DASH) cairo_set_dash(cr, (double[]){4, 3}, 2, 0);
        stroke_line(c, x, y, x + SWATCH, y, it->color, 1.8);
        cairo_restore(cr);
    }
    if (it->marker >= 0) marker(c, it->marker, x + SWATCH / 2, y, size * 0.32, it->color, it->hollow);
    if (it->ring) {
        cairo_new_sub_path(cr);
        cairo_arc(cr, x + SWATCH / 2, y, size * 0.5, 0, 2 * M_PI);
        set_rgb(cr, it->color);
        cairo_set_line_width(cr, 1.6);
        cairo_stroke(cr);
    }
}

typedef struct legend {
    const legend_item *items;
    int n;
    int shown;        /* entries that fit; the rest are summarised as "… k more" */
    double size, w, h, row;
} legend;

/* A vertical legend at most max_w wide and max_h tall: the font shrinks to 80 % before
 * entries are dropped. */
static legend legend_plan(canvas *c, const legend_item *items, int n, double max_w, double max_h) {
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
    for (int i = 0; i < L.shown; i++) tw = fmax(tw, text_w(c, fit(c, items[i].label, L.size, 0, max_w - SWATCH - 6, buf), L.size, 0));
    if (L.shown < n) tw = fmax(tw, text_w(c, "\xE2\x80\xA6 999 more", L.size, 0));
    L.w = SWATCH + 6 + tw;
    L.h = (L.shown + (L.shown < n)) * L.row;
    return L;
}

static void legend_draw(canvas *c, const legend *L, double x, double y) {
    char buf[LABEL_CAP];
    for (int i = 0; i < L->shown; i++) {
        double cy = y + (i + 0.5) * L->row;
        swatch(c, &L->items[i], x, cy, L->size);
        text_at(c, fit(c, L->items[i].label, L->size, 0, L->w - SWATCH - 6, buf), x + SWATCH + 6, cy, L->size, 0,
                hex(C_TEXT), 0, 0.5, 0);
    }
    if (L->shown < L->n) {
        snprintf(buf, sizeof buf, "\xE2\x80\xA6 %d more", L->n - L->shown);
        text_at(c, buf, x + SWATCH + 6, y + (L->shown + 0.5) * L->row, L->size, 0, hex(C_SOFT), 0, 0.5, 0);
    }
}

/* A legend laid out in a row (wrapping) across [x, x + max_w]; returns its height. */
static double legend_row(canvas *c, const legend_item *items, int n, double x, double y, double max_w, int draw) {
    if (n == 0) return 0;
    double size = c->fs, row = size * 1.6, cx = x, cy = y;
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i++) {
        fit(c, items[i].label, size, 0, max_w * 0.5, buf);
        double w = SWATCH + 5 + text_w(c, buf, size, 0) + 16;
        if (cx > x && cx + w > x + max_w) cx = x, cy += row;
        if (draw) {
            swatch(c, &items[i], cx, cy + row / 2, size);
            text_at(c, buf, cx + SWATCH + 5, cy + row / 2, size, 0, hex(C_TEXT), 0, 0.5, 0);
        }
        cx += w;
    }
    return cy + row - y;
}

/* ---- labels along an axis ---- */

/* How category labels along x fit cells `pitch` wide: horizontal when they fit, else rotated
 * 45° (few) or 90° (many), shrinking to 60 % of the tick size and then showing every k-th. */
typedef struct xlabels {
    double size, angle, max_len, height, overhang;
    int every;
} xlabels;

static xlabels xlabels_plan(canvas *c, char (*lab)[LABEL_CAP], int n, double pitch, double max_ext) {
    xlabels X = {c->fs, 0, 0, 0, 0, 1};
    double wmax = 0;
    for (int i = 0; i < n; i++) wmax = fmax(wmax, text_w(c, lab[i], X.size, 0));
    X.max_len = wmax;
    if (wmax <= pitch * 0.92) {
        X.height = line_h(c, X.size);
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
        double w = fmin(text_w(c, lab[i], X.size, 0), X.max_len);
        wmax = fmax(wmax, w);
        /* at 45° a label reaches left of its cell by w·cos 45° */
        if (X.angle < M_PI / 2) X.overhang = fmax(X.overhang, w * cos(X.angle) - (i + 0.5) * pitch);
    }
    X.height = wmax * sin(X.angle) + line_h(c, X.size) * cos(X.angle);
    return X;
}

static void xlabels_draw(canvas *c, const xlabels *X, char (*lab)[LABEL_CAP], int n, double x0, double pitch,
                         double y) {
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i += X->every) {
        double x = x0 + (i + 0.5) * pitch;
        fit(c, lab[i], X->size, 0, X->angle == 0 ? fmax(pitch * 0.98, X->max_len) : X->max_len, buf);
        if (X->angle == 0) text_at(c, buf, x, y, X->size, 0, hex(C_TEXT), 0.5, 0, 0);
        else text_at(c, buf, x, y, X->size, 0, hex(C_TEXT), 1, 0.5, X->angle);
    }
}

/* Category labels along y (right-aligned at x), sized to the row pitch, thinned when crowded. */
static void ylabels_draw(canvas *c, char (*lab)[LABEL_CAP], int n, double x, double y0, double pitch, double max_w) {
    double size = fmin(c->fs, pitch * 0.8);
    if (size < c->fs * 0.6) size = c->fs * 0.6;
    int every = pitch >= size * 1.1 ? 1 : (int)ceil(size * 1.1 / pitch);
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i += every)
        text_at(c, fit(c, lab[i], size, 0, max_w, buf), x, y0 + (i + 0.5) * pitch, size, 0, hex(C_TEXT), 1, 0.5, 0);
}

static double ylabels_width(canvas *c, char (*lab)[LABEL_CAP], int n, double max_w) {
    double w = 0;
    char buf[LABEL_CAP];
    for (int i = 0; i < n; i++) w = fmax(w, text_w(c, fit(c, lab[i], c->fs, 0, max_w, buf), c->fs, 0));
    return w;
}

/* Cleaned copies of n labels (NULL array or entry → its 0-based index, or `fallback` format). */
static char (*labels_copy(const char *const *src, int n, const char *fallback, int offset))[LABEL_CAP] {
    char(*lab)[LABEL_CAP] = malloc((size_t)(n > 0 ? n : 1) * LABEL_CAP);
    if (!lab) return NULL;
    for (int i = 0; i < n; i++) {
        if (src && src[i]) clean(src[i], lab[i], LABEL_CAP);
        else snprintf(lab[i], LABEL_CAP, fallback, i + offset);
    }
    return lab;
}

/* ---- figure lifecycle ---- */

up_plot_style up_plot_style_default(void) {
    up_plot_style s;
    memset(&s, 0, sizeof s);
    return s;
}

static up_status canvas_open(canvas *c, const up_plot_style *st, const char *path, up_error *err) {
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

static void canvas_close(canvas *c) {
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
static up_status canvas_finish(canvas *c, const up_plot_style *st, const char *path, up_error *err) {
    up_status s = UP_OK;
    cairo_status_t cs = cairo_status(c->cr);
    if (cs != CAIRO_STATUS_SUCCESS) {
        s = up_error_set(err, UP_ERR_INVALID, "%s: drawing failed: %s", path, cairo_status_to_string(cs));
        canvas_close(c);
        return s;
    }
    cairo_surface_flush(c->surf);
    int w = cairo_image_surface_get_width(c->surf), h = cairo_image_surface_get_height(c->surf);
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
        clean(st->title, title, sizeof title);
        keys[n] = "Title", vals[n++] = title;
    }
    if (!has_key(st, "Software")) keys[n] = "Software", vals[n++] = "upstream (cairo " CAIRO_VERSION_STRING ")";
    s = up_png_write(path, w, h, 3, (size_t)w * 3, px, keys, vals, n, err);
done:
    free(px);
    free(keys);
    free(vals);
    canvas_close(c);
    return s;
}

/* Title and subtitle, left-aligned; returns the y where the figure body starts. */
static double header(canvas *c, const up_plot_style *st) {
    double y = PAD;
    char buf[LABEL_CAP];
    if (st->title && *st->title) {
        double size = c->fs * 1.45;
        text_at(c, fit(c, st->title, size, 1, c->W - 2 * PAD, buf), PAD, y, size, 1, hex(C_TEXT), 0, 0, 0);
        y += line_h(c, size) + 1;
    }
    if (st->subtitle && *st->subtitle) {
        double size = c->fs * 1.02;
        text_at(c, fit(c, st->subtitle, size, 0, c->W - 2 * PAD, buf), PAD, y, size, 0, hex(C_SOFT), 0, 0, 0);
        y += line_h(c, size);
    }
    return y + (y > PAD ? c->fs * 0.8 : 0);
}

#define CHECK(cond, ...)                                                                                  \
    do {                                                                                                  \
        if (!(cond)) return up_error_set(err, UP_ERR_INVALID, __VA_ARGS__);                                \
    } while (0)

/* ---- 1. ranked latents ---- */

up_status up_plot_bars(const char *path, const up_plot_style *style, const up_plot_bars_data *d, up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    CHECK(d && d->n >= 0, "%s: bars: no data struct or n < 0", path ? path : "plot");
    CHECK(d->n == 0 || d->values, "%s: bars: values is NULL with n = %d", path, d->n);
    const char *vfmt = d->value_format ? d->value_format : "%.3g";
    CHECK(format_ok(vfmt), "%s: bars: value_format \"%s\" must hold exactly one double conversion", path, vfmt);
    canvas cv, *c = &cv;
    up_status s = canvas_open(c, &st, path, err);
    if (s) return s;
    int n = d->n;
    char(*lab)[LABEL_CAP] = labels_copy(d->labels, n, "#%d", 0);
    if (!lab) {
        canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    double top = header(c, &st);
    legend_item li[2];
    int nl = 0;
    if (d->pos_label) li[nl++] = (legend_item){d->pos_label, hex(C_POS), -1, 0, 1, 0, 0};
    if (d->neg_label) li[nl++] = (legend_item){d->neg_label, hex(C_NEG), -1, 0, 1, 0, 0};
    if (nl) top += legend_row(c, li, nl, PAD, top, c->W - 2 * PAD, 1) + c->fs * 0.4;

    double vmin = 0, vmax = 0;
    int finite = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(d->values[i])) finite++, vmin = fmin(vmin, d->values[i]), vmax = fmax(vmax, d->values[i]);
    double lh = line_h(c, c->fs);
    double bottom = c->H - PAD - lh - TICK - 2 - (st.xlabel && *st.xlabel ? line_h(c, label_size(c)) + 4 : 0);
    if (finite == 0) {
        frame f = {PAD, top, c->W - PAD, bottom};
        no_data(c, &f);
        free(lab);
        return canvas_finish(c, &st, path, err);
    }
    int gap = d->n_top > 0 && d->n_top < n;
    double pitch = (bottom - top) / (n + (gap ? 0.8 : 0));
    double lab_w = ylabels_width(c, lab, n, c->W * 0.42);
    double x0 = PAD + lab_w + 8;
    /* Value labels sit beyond the bar ends, so reserve their width on each side that has bars. */
    double vsize = fmin(c->fs * 0.9, pitch * 0.72);
    int show_vals = vsize >= c->fs * 0.55;
    double vw = 0;
    char buf[64];
    if (show_vals)
        for (int i = 0; i < n; i++) {
            fmt_value(vfmt, d->values[i], buf, sizeof buf);
            vw = fmax(vw, text_w(c, buf, vsize, 0));
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
            axis_init(&xa, vmin, vmax, target, vmin < 0 ? 0.02 : 0, vmax > 0 ? 0.02 : 0, 0);
            xa.p0 = p0, xa.p1 = p1;
            if (target <= 2 || xticks_fit(c, &xa)) break;
        }
        if (xa.n == 0) break;
        fmt_tick(&xa, xa.ticks[xa.n - 1], buf, sizeof buf);
        const double over = amap(&xa, xa.ticks[xa.n - 1]) + text_w(c, buf, c->fs, 0) / 2 - (c->W - PAD / 2.0);
        if (over <= 0) break;
        p1 -= over;
    }
    frame ff = {xa.p0, f.y0, xa.p1, f.y1}; /* grid and ticks span the mapped range only */
    grid_x(c, &ff, &xa);
    ticks_x(c, &ff, &xa);
    stroke_line(c, ff.x0, f.y1, ff.x1, f.y1, hex(C_SPINE), 0.9);
    double zx = amap(&xa, 0);
    char lb[LABEL_CAP];
    for (int i = 0; i < n; i++) {
        double yc = top + (i + (gap && i >= d->n_top ? 0.8 : 0) + 0.5) * pitch;
        double v = d->values[i];
        if (isfinite(v)) {
            double vx = amap(&xa, v);
            double th = fmin(0.72 * pitch, c->fs * 2.2); /* few bars stay bars, not slabs */
            cairo_rectangle(c->cr, fmin(zx, vx), yc - th / 2, fabs(vx - zx), th);
            set_rgb(c->cr, hex(v >= 0 ? C_POS : C_NEG));
            cairo_fill(c->cr);
            if (show_vals) {
                fmt_value(vfmt, v, buf, sizeof buf);
                text_at(c, buf, v >= 0 ? vx + 4 : vx - 4, yc, vsize, 0, hex(C_TEXT), v >= 0 ? 0 : 1, 0.5, 0);
            }
        } else if (show_vals) {
            text_at(c, "n/a", zx + 4, yc, vsize, 0, hex(C_SOFT), 0, 0.5, 0);
        }
    }
    stroke_line(c, zx, f.y0, zx, f.y1, hex(C_SPINE), 1.0);
    if (gap) {
        double y = top + (d->n_top + 0.4) * pitch;
        cairo_save(c->cr);
        cairo_set_dash(c->cr, (double[]){3, 3}, 2, 0);
        stroke_line(c, PAD, y, f.x1, y, hex(0xB0B0B0), 0.8);
        cairo_restore(c->cr);
    }
    /* Labels: shrink with the row pitch; rows of the second group sit after the gap. */
    double size = fmin(c->fs, pitch * 0.8);
    if (size < c->fs * 0.6) size = c->fs * 0.6;
    int every = pitch >= size * 1.1 ? 1 : (int)ceil(size * 1.1 / pitch);
    for (int i = 0; i < n; i += every) {
        double yc = top + (i + (gap && i >= d->n_top ? 0.8 : 0) + 0.5) * pitch;
        text_at(c, fit(c, lab[i], size, 0, lab_w, lb), x0 - 8, yc, size, 0, hex(C_TEXT), 1, 0.5, 0);
    }
    xlabel_at(c, st.xlabel, (ff.x0 + ff.x1) / 2, f.y1 + TICK + 2 + lh + 4, c->W - 2 * PAD);
    free(lab);
    return canvas_finish(c, &st, path, err);
}

/* ---- 2 and 6a. heatmaps ---- */

up_plot_heatmap_data up_plot_heatmap_default(void) {
    up_plot_heatmap_data d;
    memset(&d, 0, sizeof d);
    d.vmin = d.vmax = NAN;
    return d;
}

static up_status heatmap(const char *path, const up_plot_style *style, const up_plot_heatmap_data *d, int matrix,
                         up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    CHECK(d && d->rows >= 0 && d->cols >= 0, "%s: heatmap: no data struct or negative size", path ? path : "plot");
    CHECK((double)d->rows * d->cols <= 1e8, "%s: heatmap: %d x %d cells is too many", path, d->rows, d->cols);
    CHECK(d->rows * d->cols == 0 || d->values, "%s: heatmap: values is NULL", path);
    const char *vfmt = d->value_format ? d->value_format : "%.2f";
    CHECK(format_ok(vfmt), "%s: heatmap: value_format \"%s\" must hold exactly one double conversion", path, vfmt);
    canvas cv, *c = &cv;
    up_status s = canvas_open(c, &st, path, err);
    if (s) return s;
    int R = d->rows, C = d->cols;
    double top = header(c, &st);
    double lh = line_h(c, c->fs), llh = line_h(c, label_size(c));
    if (R == 0 || C == 0) {
        frame f = {PAD, top, c->W - PAD, c->H - PAD};
        no_data(c, &f);
        return canvas_finish(c, &st, path, err);
    }
    char(*rl)[LABEL_CAP] = labels_copy(d->row_labels, R, "%d", 0);
    char(*cl)[LABEL_CAP] = labels_copy(d->col_labels, C, "%d", 0);
    if (!rl || !cl) {
        free(rl), free(cl), canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    double mn = INFINITY, mx = -INFINITY;
    int missing = 0;
    for (size_t i = 0; i < (size_t)R * C; i++) {
        double v = d->values[i];
        if (isfinite(v)) mn = fmin(mn, v), mx = fmax(mx, v);
        else missing = 1;
    }
    up_plot_cmap cm = d->cmap;
    if (cm == UP_PLOT_CMAP_AUTO) cm = mn < 0 ? UP_PLOT_CMAP_DIVERGING : UP_PLOT_CMAP_SEQUENTIAL;
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
    const unsigned *stops = cm == UP_PLOT_CMAP_DIVERGING ? rdbu : viridis;

    /* Colour bar block on the right: bar, tick labels, rotated title. */
    axis ca;
    axis_init(&ca, lo, hi, 6, 0, 0, 0);
    double cb_w = 12 + TICK + 3 + ticks_w(c, &ca) + (d->colorbar_label && *d->colorbar_label ? 6 + llh : 0);
    if (missing) cb_w = fmax(cb_w, 12 + 5 + text_w(c, "n/a", c->fs, 0));
    double ylab_w = st.ylabel && *st.ylabel ? llh + 6 : 0;
    double rl_w = ylabels_width(c, rl, R, c->W * 0.28);
    double x0 = PAD + ylab_w + rl_w + 6, x1 = c->W - PAD - cb_w - 16;
    double pitch_x = (x1 - x0) / C;
    double max_ext = c->H * 0.25;
    xlabels X = xlabels_plan(c, cl, C, pitch_x, max_ext);
    if (X.overhang > x0 - PAD - ylab_w) { /* 45° labels reaching into the left margin */
        x0 = PAD + ylab_w + fmax(rl_w + 6, X.overhang);
        pitch_x = (x1 - x0) / C;
        X = xlabels_plan(c, cl, C, pitch_x, max_ext);
    }
    double xl_h = st.xlabel && *st.xlabel ? llh + 4 : 0;
    double y1 = c->H - PAD - xl_h - X.height - 5;
    double pitch_y = (y1 - top) / R;
    if (matrix) { /* square cells read as a matrix */
        double cell = fmin(pitch_x, pitch_y);
        pitch_x = pitch_y = cell;
        /* centre the block (labels, grid, colour bar) in the width the grid gave up */
        double shift = (x1 - (x0 + cell * C)) / 2;
        x0 += shift;
        x1 = x0 + cell * C, y1 = top + cell * R;
        X = xlabels_plan(c, cl, C, pitch_x, max_ext);
    }
    /* Cells: edges snapped to whole pixels and drawn without anti-aliasing, so neighbouring
     * cells meet exactly instead of showing hairline seams. */
    cairo_save(c->cr);
    cairo_set_antialias(c->cr, CAIRO_ANTIALIAS_NONE);
    for (int r = 0; r < R; r++) {
        double ya = round((top + r * pitch_y) * c->scale) / c->scale, yb = round((top + (r + 1) * pitch_y) * c->scale) / c->scale;
        for (int k = 0; k < C; k++) {
            double xa = round((x0 + k * pitch_x) * c->scale) / c->scale;
            double xb = round((x0 + (k + 1) * pitch_x) * c->scale) / c->scale;
            double v = d->values[(size_t)r * C + k];
            set_rgb(c->cr, isfinite(v) ? cmap_at(stops, (v - lo) / (hi - lo)) : hex(C_MISSING));
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
            fmt_value(vfmt, d->values[i], buf, sizeof buf);
            wmax = fmax(wmax, text_w(c, buf, c->fs, 0));
        }
        double size = fmin(c->fs * 1.05, fmin(c->fs * pitch_x * 0.86 / fmax(wmax, 1e-9), pitch_y * 0.6));
        if (size >= c->fs * 0.55)
            for (int r = 0; r < R; r++)
                for (int k = 0; k < C; k++) {
                    double v = d->values[(size_t)r * C + k];
                    rgb bg = isfinite(v) ? cmap_at(stops, (v - lo) / (hi - lo)) : hex(C_MISSING);
                    fmt_value(vfmt, v, buf, sizeof buf);
                    text_at(c, buf, x0 + (k + 0.5) * pitch_x, top + (r + 0.5) * pitch_y, size, 0,
                            luminance(bg) < 0.45 ? hex(0xFFFFFF) : hex(C_TEXT), 0.5, 0.5, 0);
                }
    }
    cairo_rectangle(c->cr, x0, top, x1 - x0, y1 - top);
    set_rgb(c->cr, hex(0x9A9A9A));
    cairo_set_line_width(c->cr, 0.6);
    cairo_stroke(c->cr);
    ylabels_draw(c, rl, R, x0 - 6, top, pitch_y, rl_w);
    xlabels_draw(c, &X, cl, C, x0, pitch_x, y1 + 4);
    xlabel_at(c, st.xlabel, (x0 + x1) / 2, y1 + 5 + X.height + 2, c->W - 2 * PAD);
    ylabel_at(c, st.ylabel, PAD, (top + y1) / 2, y1 - top);

    /* Colour bar: cairo's gradient through the same 11 stops as the cells. */
    double bx = x1 + 16, by0 = top, by1 = fmin(y1, top + fmax(c->H * 0.55, fmin(y1 - top, 120)));
    if (missing) by1 = fmin(by1, y1 - lh * 1.6);
    if (by1 - by0 < 30) by1 = by0 + 30;
    cairo_pattern_t *g = cairo_pattern_create_linear(0, by1, 0, by0);
    for (int i = 0; i < 11; i++) {
        rgb col = hex(stops[i]);
        cairo_pattern_add_color_stop_rgb(g, i / 10.0, col.r, col.g, col.b);
    }
    cairo_rectangle(c->cr, bx, by0, 12, by1 - by0);
    cairo_set_source(c->cr, g);
    cairo_fill(c->cr);
    cairo_pattern_destroy(g);
    cairo_rectangle(c->cr, bx, by0, 12, by1 - by0);
    set_rgb(c->cr, hex(0x9A9A9A));
    cairo_set_line_width(c->cr, 0.6);
    cairo_stroke(c->cr);
    ca.p0 = by1, ca.p1 = by0;
    char buf[64];
    double tw = 0;
    for (int i = 0; i < ca.n; i++) {
        double y = amap(&ca, ca.ticks[i]);
        stroke_line(c, bx + 12, y, bx + 12 + TICK, y, hex(C_SPINE), 0.8);
        fmt_tick(&ca, ca.ticks[i], buf, sizeof buf);
        text_at(c, buf, bx + 12 + TICK + 3, y, c->fs, 0, hex(C_TEXT), 0, 0.5, 0);
        tw = fmax(tw, text_w(c, buf, c->fs, 0));
    }
    if (d->colorbar_label && *d->colorbar_label) {
        char lb[LABEL_CAP];
        text_at(c, fit(c, d->colorbar_label, label_size(c), 0, by1 - by0, lb), bx + 12 + TICK + 3 + tw + 6,
                (by0 + by1) / 2, label_size(c), 0, hex(C_TEXT), 0.5, 0, M_PI / 2);
    }
    if (missing) {
        double y = fmin(y1, c->H - PAD) - lh * 0.6;
        cairo_rectangle(c->cr, bx, y - 6, 12, 12);
        set_rgb(c->cr, hex(C_MISSING));
        cairo_fill(c->cr);
        text_at(c, "n/a", bx + 17, y, c->fs, 0, hex(C_TEXT), 0, 0.5, 0);
    }
    free(rl), free(cl);
    return canvas_finish(c, &st, path, err);
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

/* ---- 3 and 6b. lines and grouped bars ---- */

up_plot_lines_data up_plot_lines_default(void) {
    up_plot_lines_data d;
    memset(&d, 0, sizeof d);
    d.baseline = d.ymin = d.ymax = NAN;
    return d;
}

static double sx(const up_plot_series *s, int i) { return s->x ? s->x[i] : i; }

up_status up_plot_lines(const char *path, const up_plot_style *style, const up_plot_lines_data *d, up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    CHECK(d && d->n_series >= 0 && (d->n_series == 0 || d->series), "%s: lines: no data struct or series",
          path ? path : "plot");
    CHECK(d->n_x_labels >= 0 && (d->n_x_labels == 0 || d->x_labels), "%s: lines: bad x_labels", path);
    CHECK(!d->bars || d->n_x_labels > 0, "%s: lines: grouped bars need x_labels (the categories)", path);
    for (int k = 0; k < d->n_series; k++) {
        const up_plot_series *s = &d->series[k];
        CHECK(s->n >= 0 && (s->n == 0 || s->y), "%s: lines: series %d has n = %d and y = NULL", path, k, s->n);
        CHECK(!d->bars || s->n <= d->n_x_labels, "%s: lines: series %d has %d values for %d categories", path, k,
              s->n, d->n_x_labels);
    }
    canvas cv, *c = &cv;
    up_status s = canvas_open(c, &st, path, err);
    if (s) return s;
    int cat = d->n_x_labels > 0, ylog = d->ylog && !d->bars;
    double top = header(c, &st);
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

    /* legend on the right */
    legend_item *items = malloc((size_t)(d->n_series + 1) * sizeof *items);
    char(*xl)[LABEL_CAP] = labels_copy(d->x_labels, d->n_x_labels, "%d", 0);
    if (!items || !xl) {
        free(items), free(xl), canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    int ni = 0, n_color = 0;
    int *color_of = calloc((size_t)d->n_series + 1, sizeof *color_of); /* controls take no palette slot */
    for (int k = 0; k < d->n_series; k++) {
        const up_plot_series *sr = &d->series[k];
        color_of[k] = sr->control ? -1 : n_color++;
        if (!sr->name || !*sr->name) continue;
        rgb col = sr->control ? hex(C_CONTROL) : series_color(color_of[k]);
        int mk = d->no_markers ? -1 : sr->control ? 0 : color_of[k] / 8 + color_of[k];
        items[ni++] = d->bars ? (legend_item){sr->name, col, -1, 0, 1, 0, 0}
                              : (legend_item){sr->name, col, mk, sr->control ? SW_DASH : SW_LINE, 0, 0, 0};
    }
    if (isfinite(d->baseline))
        items[ni++] = (legend_item){d->baseline_label ? d->baseline_label : "baseline", hex(C_SPINE), -1, SW_DASH, 0, 0, 0};
    double lh = line_h(c, c->fs), llh = line_h(c, label_size(c));
    double bottom_fixed = PAD + (st.xlabel && *st.xlabel ? llh + 4 : 0);
    legend L = legend_plan(c, items, ni, c->W * 0.3, c->H - top - bottom_fixed);
    double right = PAD + (ni ? L.w + 14 : 0);
    if (points == 0) {
        frame f = {PAD, top, c->W - right, c->H - PAD};
        no_data(c, &f);
        if (ni) legend_draw(c, &L, f.x1 + 14, top);
        free(items), free(xl), free(color_of);
        return canvas_finish(c, &st, path, err);
    }
    axis ya;
    double est_h = c->H - top - bottom_fixed - lh - 10;
    axis_init(&ya, ymn, ymx, (int)(est_h / 65) + 2, d->bars && ymn >= 0 ? 0 : 0.05,
              d->bars && ymx <= 0 ? 0 : 0.05, ylog);
    double ylab_w = st.ylabel && *st.ylabel ? llh + 6 : 0;
    double x0 = PAD + ylab_w + ticks_w(c, &ya) + TICK + 5, x1 = c->W - right;
    axis xa;
    xlabels X = {0};
    if (cat) {
        axis_index(&xa, d->n_x_labels, d->n_x_labels);
        X = xlabels_plan(c, xl, d->n_x_labels, (x1 - x0) / d->n_x_labels, c->H * 0.22);
        if (X.overhang > x0 - PAD) {
            x0 = PAD + X.overhang;
            X = xlabels_plan(c, xl, d->n_x_labels, (x1 - x0) / d->n_x_labels, c->H * 0.22);
        }
    } else {
        X.height = lh;
    }
    frame f = {x0, top, x1, c->H - bottom_fixed - X.height - TICK - 3};
    if (!cat) axis_x(c, &xa, xmn, xmx, 0.03, f.x0, f.x1, 0);
    xa.p0 = f.x0, xa.p1 = f.x1, ya.p0 = f.y1, ya.p1 = f.y0;
    grid_y(c, &f, &ya);
    if (!cat) grid_x(c, &f, &xa);
    ticks_y(c, &f, &ya);
    if (cat) {
        for (int i = 0; i < d->n_x_labels; i++) {
            double x = amap(&xa, i);
            stroke_line(c, x, f.y1, x, f.y1 + TICK, hex(C_SPINE), 0.8);
        }
        xlabels_draw(c, &X, xl, d->n_x_labels, f.x0, (f.x1 - f.x0) / d->n_x_labels, f.y1 + TICK + 2);
    } else {
        ticks_x(c, &f, &xa);
    }

    clip_to(c, &f, 6);
    cairo_t *cr = c->cr;
    if (isfinite(d->baseline) && (!ylog || d->baseline > 0)) {
        cairo_save(cr);
        cairo_set_dash(cr, (double[]){5, 4}, 2, 0);
        double y = amap(&ya, d->baseline);
        stroke_line(c, f.x0, y, f.x1, y, hex(C_SPINE), 1.2);
        cairo_restore(cr);
    }
    if (d->bars) {
        double zero = ylog ? f.y1 : amap(&ya, fmax(ya.lo, fmin(ya.hi, 0)));
        double bw = 0.8 / fmax(1, d->n_series);
        for (int k = 0; k < d->n_series; k++) {
            const up_plot_series *sr = &d->series[k];
            rgb col = sr->control ? hex(C_CONTROL) : series_color(color_of[k]);
            for (int i = 0; i < sr->n; i++) {
                double y = sr->y[i];
                if (!isfinite(y)) continue;
                double xa0 = amap(&xa, i - 0.4 + k * bw), xa1 = amap(&xa, i - 0.4 + (k + 1) * bw);
                double yv = amap(&ya, y);
                cairo_rectangle(cr, xa0 + 0.5, fmin(zero, yv), xa1 - xa0 - 1, fabs(yv - zero));
                set_rgb(cr, col);
                cairo_fill(cr);
                if (sr->err && isfinite(sr->err[i])) {
                    double xm = (xa0 + xa1) / 2, e = fabs(sr->err[i]);
                    double ya0 = amap(&ya, y - e), ya1 = amap(&ya, y + e);
                    stroke_line(c, xm, ya0, xm, ya1, hex(C_TEXT), 1.0);
                    stroke_line(c, xm - 2.5, ya0, xm + 2.5, ya0, hex(C_TEXT), 1.0);
                    stroke_line(c, xm - 2.5, ya1, xm + 2.5, ya1, hex(C_TEXT), 1.0);
                }
            }
        }
        stroke_line(c, f.x0, zero, f.x1, zero, hex(C_SPINE), 0.9);
    } else {
        /* Controls first so the latents' lines stay on top. */
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < d->n_series; k++) {
                const up_plot_series *sr = &d->series[k];
                if (!!sr->control != (pass == 0)) continue;
                rgb col = sr->control ? hex(C_CONTROL) : series_color(color_of[k]);
                int mk = sr->control ? 0 : color_of[k] / 8 + color_of[k];
                if (sr->err)
                    for (int i = 0; i < sr->n; i++) {
                        double x = sx(sr, i), y = sr->y[i], e = fabs(sr->err[i]);
                        if (!isfinite(x) || !isfinite(y) || !isfinite(e)) continue;
                        double lo = ylog && y - e <= 0 ? ya.lo : y - e;
                        double px = amap(&xa, x), ya0 = amap(&ya, lo), ya1 = amap(&ya, y + e);
                        stroke_line(c, px, ya0, px, ya1, col, 1.0);
                        stroke_line(c, px - 2.5, ya0, px + 2.5, ya0, col, 1.0);
                        stroke_line(c, px - 2.5, ya1, px + 2.5, ya1, col, 1.0);
                    }
                cairo_save(cr);
                if (sr->control) cairo_set_dash(cr, (double[]){4, 3}, 2, 0);
                int pen = 0;
                for (int i = 0; i < sr->n; i++) {
                    double x = sx(sr, i), y = sr->y[i];
                    if (!isfinite(x) || !isfinite(y) || (ylog && y <= 0)) {
                        pen = 0; /* a missing point breaks the line rather than bridging it */
                        continue;
                    }
                    if (pen) cairo_line_to(cr, amap(&xa, x), amap(&ya, y));
                    else cairo_move_to(cr, amap(&xa, x), amap(&ya, y));
                    pen = 1;
                }
                set_rgb(cr, col);
                cairo_set_line_width(cr, sr->control ? 1.4 : 1.9);
                cairo_stroke(cr);
                cairo_restore(cr);
                if (!d->no_markers)
                    for (int i = 0; i < sr->n; i++) {
                        double x = sx(sr, i), y = sr->y[i];
                        if (!isfinite(x) || !isfinite(y) || (ylog && y <= 0)) continue;
                        marker(c, mk, amap(&xa, x), amap(&ya, y), sr->control ? 2.6 : 3.4, col, 0);
                    }
            }
    }
    cairo_restore(cr); /* clip */
    spines(c, &f);
    if (ni) legend_draw(c, &L, f.x1 + 14, f.y0);
    xlabel_at(c, st.xlabel, (f.x0 + f.x1) / 2, f.y1 + TICK + 3 + X.height + 2, c->W - 2 * PAD);
    ylabel_at(c, st.ylabel, PAD, (f.y0 + f.y1) / 2, f.y1 - f.y0);
    free(items), free(xl), free(color_of);
    return canvas_finish(c, &st, path, err);
}

/* ---- 4. predicted vs measured ---- */

typedef struct box {
    double x0, y0, x1, y1;
} box;

static int boxes_overlap(box a, box b) { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1; }

up_status up_plot_scatter(const char *path, const up_plot_style *style, const up_plot_scatter_data *d,
                          up_error *err) {
    up_plot_style st = style ? *style : up_plot_style_default();
    CHECK(d && d->n >= 0 && (d->n == 0 || (d->x && d->y)), "%s: scatter: no data struct, n < 0 or x/y NULL",
          path ? path : "plot");
    CHECK(!d->group || (d->n_groups > 0 && d->group_names), "%s: scatter: group needs group_names", path);
    if (d->group)
        for (int i = 0; i < d->n; i++)
            CHECK(d->group[i] >= 0 && d->group[i] < d->n_groups, "%s: scatter: group[%d] = %d is outside 0..%d", path,
                  i, d->group[i], d->n_groups - 1);
    canvas cv, *c = &cv;
    up_status s = canvas_open(c, &st, path, err);
    if (s) return s;
    double top = header(c, &st);
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
        canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int g = 0; g < ng; g++)
        items[g] = (legend_item){d->group_names[g] ? d->group_names[g] : "", series_color(g), g / 8 + g, 0, 0, 0, 0};
    int ni = ng;
    if (d->identity) items[ni++] = (legend_item){"y = x", hex(C_CONTROL), -1, SW_DASH, 0, 0, 0};
    double lh = line_h(c, c->fs), llh = line_h(c, label_size(c));
    double bottom_fixed = PAD + (st.xlabel && *st.xlabel ? llh + 4 : 0) + lh + TICK + 3;
    legend L = legend_plan(c, items, ni, c->W * 0.3, c->H - top - PAD);
    double right = PAD + (ni ? L.w + 14 : 0);
    if (m == 0) {
        frame f = {PAD, top, c->W - right, c->H - PAD};
        no_data(c, &f);
        if (ni) legend_draw(c, &L, f.x1 + 14, top);
        free(items);
        return canvas_finish(c, &st, path, err);
    }
    if (d->identity) { /* one range for both, so y = x is the diagonal */
        xmn = ymn = fmin(xmn, ymn);
        xmx = ymx = fmax(xmx, ymx);
    }
    double est_h = c->H - top - bottom_fixed;
    axis ya, xa;
    axis_init(&ya, ymn, ymx, (int)(est_h / 65) + 2, 0.06, 0.06, 0);
    double ylab_w = st.ylabel && *st.ylabel ? llh + 6 : 0;
    double x0 = PAD + ylab_w + ticks_w(c, &ya) + TICK + 5;
    frame f = {x0, top, c->W - right, c->H - bottom_fixed};
    double shift = 0;
    if (d->identity) { /* square frame: equal units on both axes, centred in the room left */
        double side = fmin(f.x1 - f.x0, f.y1 - f.y0);
        shift = (f.x1 - f.x0 - side) / 2;
        f.x0 += shift;
        f.x1 = f.x0 + side, f.y1 = f.y0 + side;
        axis_init(&ya, ymn, ymx, (int)(side / 65) + 2, 0.06, 0.06, 0);
    }
    axis_x(c, &xa, xmn, xmx, 0.06, f.x0, f.x1, 0);
    if (d->identity) ya = xa; /* the same ticks on both axes */
    xa.p0 = f.x0, xa.p1 = f.x1, ya.p0 = f.y1, ya.p1 = f.y0;
    grid_y(c, &f, &ya);
    grid_x(c, &f, &xa);
    ticks_y(c, &f, &ya);
    ticks_x(c, &f, &xa);
    clip_to(c, &f, 0);
    cairo_t *cr = c->cr;
    if (d->identity) {
        cairo_save(cr);
        cairo_set_dash(cr, (double[]){5, 4}, 2, 0);
        double a = fmax(xa.lo, ya.lo), b = fmin(xa.hi, ya.hi);
        stroke_line(c, amap(&xa, a), amap(&ya, a), amap(&xa, b), amap(&ya, b), hex(C_CONTROL), 1.2);
        cairo_restore(cr);
        double zx = amap(&xa, 0), zy = amap(&ya, 0); /* faint zero lines: sign agreement matters */
        stroke_line(c, zx, f.y0, zx, f.y1, hex(0xC8C8C8), 0.8);
        stroke_line(c, f.x0, zy, f.x1, zy, hex(0xC8C8C8), 0.8);
    }
    double r = d->n > 400 ? 2.6 : 3.8;
    for (int i = 0; i < d->n; i++) {
        double x = d->x[i], y = d->y[i];
        if (!isfinite(x) || !isfinite(y)) continue;
        int g = d->group ? d->group[i] : 0;
        marker(c, d->group ? g / 8 + g : 0, amap(&xa, x), amap(&ya, y), r, series_color(g), 0);
    }
    cairo_restore(cr);
    spines(c, &f);
    box stats_box = {0, 0, 0, 0};
    if (d->identity && m >= 2) {
        /* r and the slope through the origin: measured ≈ slope × predicted when linear. */
        double cov = sxy - sx1 * sy1 / m, vx = sxx - sx1 * sx1 / m, vy = syy - sy1 * sy1 / m;
        char buf[128], rbuf[32], sbuf[32];
        if (vx > 0 && vy > 0) snprintf(rbuf, sizeof rbuf, "%.3f", cov / sqrt(vx * vy));
        else snprintf(rbuf, sizeof rbuf, "n/a");
        if (sxx > 0) snprintf(sbuf, sizeof sbuf, "%.3g", sxy / sxx);
        else snprintf(sbuf, sizeof sbuf, "n/a");
        use_minus(rbuf, sizeof rbuf), use_minus(sbuf, sizeof sbuf);
        snprintf(buf, sizeof buf, "n = %d   r = %s   slope = %s", m, rbuf, sbuf);
        double w = text_w(c, buf, c->fs, 0);
        stats_box = (box){f.x0 + 6, f.y0 + 4, f.x0 + 16 + w, f.y0 + 8 + lh};
        cairo_rectangle(cr, f.x0 + 6, f.y0 + 4, w + 10, lh + 4);
        cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
        cairo_fill(cr);
        text_at(c, buf, f.x0 + 11, f.y0 + 6, c->fs, 0, hex(C_TEXT), 0, 0, 0);
    }
    /* Point labels: the first of eight spots around the point that covers no point, no earlier
     * label and not the statistics, and stays inside the frame; a label with no free spot is
     * left out rather than piled on. */
    if (d->labels) {
        double size = c->fs * 0.85, h = line_h(c, size);
        int cap = d->n + 201, nb = 0;
        box *placed = malloc((size_t)cap * sizeof *placed);
        if (placed && stats_box.x1 > stats_box.x0) placed[nb++] = stats_box;
        for (int i = 0; placed && i < d->n; i++)
            if (isfinite(d->x[i]) && isfinite(d->y[i])) {
                double px = amap(&xa, d->x[i]), py = amap(&ya, d->y[i]);
                placed[nb++] = (box){px - r, py - r, px + r, py + r};
            }
        char buf[LABEL_CAP];
        static const double dx[8] = {1, 1, 1, -1, -1, -1, 0, 0}, dy[8] = {-1, 0, 1, -1, 0, 1, -1, 1};
        for (int i = 0; placed && i < d->n && nb < cap; i++) {
            if (!d->labels[i] || !d->labels[i][0] || !isfinite(d->x[i]) || !isfinite(d->y[i])) continue;
            fit(c, d->labels[i], size, 0, c->W * 0.2, buf);
            double w = text_w(c, buf, size, 0), px = amap(&xa, d->x[i]), py = amap(&ya, d->y[i]);
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
                text_at(c, buf, b.x0, b.y0, size, 0, hex(C_TEXT), 0, 0, 0);
                break;
            }
        }
        free(placed);
    }
    if (ni) legend_draw(c, &L, f.x1 + 14, f.y0);
    xlabel_at(c, st.xlabel, (f.x0 + f.x1) / 2, f.y1 + TICK + 3 + lh + 2, c->W - 2 * PAD);
    ylabel_at(c, st.ylabel, PAD + shift, (f.y0 + f.y1) / 2, f.y1 - f.y0);
    free(items);
    return canvas_finish(c, &st, path, err);
}

/* ---- 5. direction selection ---- */

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
    CHECK(d && d->n_pos >= 0 && d->n_layers >= 0, "%s: selection: no data struct or negative size",
          path ? path : "plot");
    int N = d->n_pos * d->n_layers;
    CHECK(N == 0 || (d->bypass && d->induce && d->kl), "%s: selection: bypass, induce and kl are required", path);
    CHECK(d->best >= -1 && d->best < N,
          "%s: selection: best = %d is outside -1..%d", path, d->best, N - 1);
    canvas cv, *c = &cv;
    up_status s = canvas_open(c, &st, path, err);
    if (s) return s;
    double top = header(c, &st);
    char(*pl)[LABEL_CAP] = labels_copy(d->pos_labels, d->n_pos, "pos %d", -d->n_pos);
    legend_item *items = malloc((size_t)(d->n_pos + 3) * sizeof *items);
    if (!pl || !items) {
        free(pl), free(items), canvas_close(c);
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    }
    int ni = 0;
    for (int p = 0; p < d->n_pos; p++) items[ni++] = (legend_item){pl[p], series_color(p), p / 8 + p, SW_LINE, 0, 0, 0};
    if (d->dropped) {
        items[ni++] = (legend_item){"kept", hex(C_SOFT), 0, 0, 0, 0, 0};
        items[ni++] = (legend_item){"filtered out", hex(C_SOFT), 0, 0, 0, 1, 0};
    }
    if (d->best >= 0) items[ni++] = (legend_item){"chosen", hex(C_TEXT), -1, 0, 0, 0, 1};
    top += legend_row(c, items, ni, PAD, top, c->W - 2 * PAD, 1) + c->fs * 0.3;
    double lh = line_h(c, c->fs), llh = line_h(c, label_size(c));
    const char *xlab = st.xlabel && *st.xlabel ? st.xlabel : "layer";
    double bottom = c->H - PAD - llh - 4 - lh - TICK - 3;
    if (N == 0) {
        frame f = {PAD, top, c->W - PAD, c->H - PAD};
        no_data(c, &f);
        free(pl), free(items);
        return canvas_finish(c, &st, path, err);
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
        axis_init(&ya, mn, mx, (int)((bottom - top) / 65) + 2, 0.06, 0.06, lg);
        double ptop = top + llh + 4;
        double px0 = PAD + k * slot + ticks_w(c, &ya) + TICK + 5, px1 = PAD + (k + 1) * slot - (k < 2 ? 16 : 0);
        frame f = {px0, ptop, px1, bottom};
        axis_x(c, &xa, 0, d->n_layers - 1, 0, f.x0, f.x1, 1);
        xa.p0 = f.x0, xa.p1 = f.x1, ya.p0 = f.y1, ya.p1 = f.y0;
        char tb[LABEL_CAP];
        text_at(c, fit(c, title[k], label_size(c), 1, slot - 8, tb), f.x0, top, label_size(c), 1, hex(C_TEXT), 0, 0, 0);
        if (isfinite(d->max_layer) && d->max_layer - 0.5 < xa.hi) {
            double sx0 = fmax(f.x0, amap(&xa, d->max_layer - 0.5));
            cairo_rectangle(c->cr, sx0, f.y0, f.x1 - sx0, f.y1 - f.y0);
            cairo_set_source_rgb(c->cr, 0.93, 0.93, 0.93);
            cairo_fill(c->cr);
        }
        grid_y(c, &f, &ya);
        grid_x(c, &f, &xa);
        ticks_y(c, &f, &ya);
        ticks_x(c, &f, &xa);
        clip_to(c, &f, 8);
        cairo_t *cr = c->cr;
        if (isfinite(thr) && (!lg || thr > 0)) {
            double y = amap(&ya, thr);
            cairo_save(cr);
            cairo_set_dash(cr, (double[]){5, 4}, 2, 0);
            stroke_line(c, f.x0, y, f.x1, y, hex(C_TEXT), 1.1);
            cairo_restore(cr);
            char buf[64], num[32];
            snprintf(num, sizeof num, "%g", thr);
            use_minus(num, sizeof num);
            snprintf(buf, sizeof buf, "%s %s", k == 1 ? "min" : "max", num);
            text_at(c, buf, f.x1 - 3, y - 2, c->fs * 0.85, 0, hex(C_SOFT), 1, 1, 0);
        }
        for (int p = 0; p < d->n_pos; p++) {
            const double *row = v + (size_t)p * d->n_layers;
            int pen = 0;
            for (int l = 0; l < d->n_layers; l++) {
                if (!isfinite(row[l]) || (lg && row[l] <= 0)) {
                    pen = 0;
                    continue;
                }
                if (pen) cairo_line_to(cr, amap(&xa, l), amap(&ya, row[l]));
                else cairo_move_to(cr, amap(&xa, l), amap(&ya, row[l]));
                pen = 1;
            }
            set_rgb(cr, series_color(p));
            cairo_set_line_width(cr, 1.6);
            cairo_stroke(cr);
            double r = d->n_layers > 40 ? 2.2 : 3.0;
            for (int l = 0; l < d->n_layers; l++) {
                if (!isfinite(row[l]) || (lg && row[l] <= 0)) continue;
                int dropped = d->dropped && d->dropped[(size_t)p * d->n_layers + l];
                marker(c, p / 8 + p, amap(&xa, l), amap(&ya, row[l]), r, series_color(p), dropped);
            }
        }
        if (d->best >= 0 && isfinite(v[d->best]) && (!lg || v[d->best] > 0)) {
            int bl = d->best % d->n_layers;
            double bx = amap(&xa, bl), by = amap(&ya, v[d->best]);
            cairo_new_sub_path(cr);
            cairo_arc(cr, bx, by, 7.5, 0, 2 * M_PI);
            set_rgb(cr, hex(C_TEXT));
            cairo_set_line_width(cr, 1.8);
            cairo_stroke(cr);
        }
        cairo_restore(cr);
        spines(c, &f);
        if (d->best >= 0 && k == 0) {
            char buf[LABEL_CAP + 64];
            snprintf(buf, sizeof buf, "chosen: %s, layer %d", pl[d->best / d->n_layers], d->best % d->n_layers);
            char fb[LABEL_CAP];
            fit(c, buf, c->fs * 0.95, 0, f.x1 - f.x0 - 8, fb);
            double w = text_w(c, fb, c->fs * 0.95, 0);
            cairo_rectangle(cr, f.x1 - w - 10, f.y0 + 2, w + 8, lh + 2);
            cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
            cairo_fill(cr);
            text_at(c, fb, f.x1 - 6, f.y0 + 3, c->fs * 0.95, 0, hex(C_TEXT), 1, 0, 0);
        }
        xlabel_at(c, xlab, (f.x0 + f.x1) / 2, f.y1 + TICK + 3 + lh + 2, slot);
    }
    free(pl), free(items);
    return canvas_finish(c, &st, path, err);
}
