/* plot_impl — the drawing toolkit the figure types are made of. PRIVATE to core/plot: not
 * public API, no stability promise, included only by the .c files of core/plot (the public
 * API is plot.h).
 *
 * A figure (one fig_<name>.c, see plot.h for how to add one) follows the same steps on a
 * canvas of W × H layout units: plot_canvas_open, plot_header (title, subtitle), margins
 * measured from the text that will sit in them (plot_text_w, plot_ticks_w, plot_legend_plan,
 * plot_xlabels_plan), axes with nice ticks (plot_axis_init / plot_axis_x, mapped with
 * plot_amap), the data clipped to the plot frame (plot_clip_to … cairo_restore), then legends
 * and axis labels, and plot_canvas_finish, which writes the PNG and closes the canvas. Text is
 * measured before it is placed, so nothing is clipped by the image edge and labels shorten
 * ("…") rather than overlap.
 *
 * Files: canvas.c (lifecycle, header, lines, frames), text.c (measuring and drawing text,
 * label cleaning and fitting, number formats), axis.c (ticks, axes, grid, spines, axis
 * titles), labels.c (category labels along an axis), legend.c (markers and legends),
 * color.c (palettes and colour maps).
 *
 * Ownership: the canvas owns its cairo surface and context from plot_canvas_open until
 * plot_canvas_finish or plot_canvas_close. Every other pointer is borrowed for the call;
 * plot_labels_copy returns a malloc'd array the caller frees. Drawing functions never fail:
 * cairo records an error in the context, and plot_canvas_finish reports it. */
#ifndef UP_PLOT_IMPL_H
#define UP_PLOT_IMPL_H

#include <cairo.h>
#include <math.h>
#include <stddef.h>

#include "base/error.h"
#include "plot/plot.h"

#define LABEL_CAP 256 /* bytes of one cleaned label, ellipsis included */
#define PAD 14.0      /* outer margin, layout units */
#define TICK 4.0      /* tick mark length */
#define MAX_TICKS 64

/* Argument checks at the top of a figure function (which has `up_error *err` in scope). */
#define PLOT_CHECK(cond, ...)                                                                             \
    do {                                                                                                  \
        if (!(cond)) return up_error_set(err, UP_ERR_INVALID, __VA_ARGS__);                                \
    } while (0)

/* ---- colours (color.c) ---- */

typedef struct rgb {
    double r, g, b;
} rgb;

static inline rgb plot_hex(unsigned v) {
    return (rgb){((v >> 16) & 255) / 255.0, ((v >> 8) & 255) / 255.0, (v & 255) / 255.0};
}

#define C_POS 0xD55E00     /* raises the objective: vermillion, the warm end of the diverging map */
#define C_NEG 0x0072B2     /* lowers it: blue, the cold end */
#define C_CONTROL 0x8C8C8C
#define C_MISSING 0xBDBDBD
#define C_GRID 0xE6E6E6
#define C_SPINE 0x4D4D4D
#define C_TEXT 0x1A1A1A
#define C_SOFT 0x595959
#define C_DIM 0x9A9A9A     /* labels of what the figure's scale or score leaves out */

extern const unsigned plot_rdbu[11];    /* diverging map: blue (negative), white, red (positive) */
extern const unsigned plot_viridis[11]; /* sequential map */

rgb plot_series_color(int i);                          /* category i (Okabe–Ito, cycling after 8) */
rgb plot_cmap_at(const unsigned *stops, double t);     /* t in [0, 1] along an 11-stop map */
double plot_luminance(rgb c);                          /* to pick black or white text on a cell */

/* ---- canvas (canvas.c) ---- */

typedef struct canvas {
    cairo_surface_t *surf;
    cairo_t *cr;
    double W, H;     /* layout units */
    double scale;    /* pixels per unit */
    double fs;       /* tick label size; other sizes derive from it */
    const char *font;
    double header_r; /* right edge of the title and subtitle (plot_header) */
    double keep_w, keep_h; /* plot_canvas_crop: the PNG keeps [0, keep_w] × [0, keep_h]; 0 → all */
} canvas;

typedef struct frame {
    double x0, y0, x1, y1; /* plot area, layout units; y0 is the top */
} frame;

static inline void plot_set_rgb(cairo_t *cr, rgb c) { cairo_set_source_rgb(cr, c.r, c.g, c.b); }

/* Checks the style (size, scale, font size, meta list) and creates a white canvas. On failure
 * nothing is left open. */
up_status plot_canvas_open(canvas *c, const up_plot_style *st, const char *path, up_error *err);
void plot_canvas_close(canvas *c);
/* Writes the canvas to path as an RGB PNG with the style's text chunks (plus "Title" and
 * "Software" unless given) and closes it, whatever the outcome. */
up_status plot_canvas_finish(canvas *c, const up_plot_style *st, const char *path, up_error *err);
/* Title and subtitle, left-aligned; returns the y where the figure body starts. */
double plot_header(canvas *c, const up_plot_style *st);
/* Keeps only the canvas's top-left w × h layout units in the PNG (never less than the
 * header), for figures whose content has a fixed aspect (square matrix cells, the identity
 * scatter) and would otherwise leave an empty band. A dimension the style sets explicitly
 * (width or height > 0) is kept as asked. */
void plot_canvas_crop(canvas *c, const up_plot_style *st, double w, double h);
void plot_stroke_line(canvas *c, double x0, double y0, double x1, double y1, rgb col, double lw);
void plot_no_data(canvas *c, const frame *f);                /* grey panel saying "no data" */
void plot_clip_to(canvas *c, const frame *f, double slack);   /* cairo_save + clip; the caller restores */

/* ---- text (text.c) ---- */

double plot_text_w(canvas *c, const char *s, double size, int bold); /* advance width */
double plot_line_h(canvas *c, double size);                           /* ascent + descent of the font */
/* Draws s with (x, y) at fraction ha of its advance (0 left, 1 right) and fraction va of its
 * line box (0 top, 0.5 middle, 1 bottom), rotated `angle` radians counter-clockwise about it. */
void plot_text_at(canvas *c, const char *s, double x, double y, double size, int bold, rgb col, double ha,
                  double va, double angle);
/* in as UTF-8 cairo accepts (see plot.h: invalid bytes and controls → U+FFFD, \n → ↵,
 * \t → ⇥, \r escaped), at most cap bytes with its NUL, cut with "…" when longer. */
void plot_clean(const char *in, char *out, size_t cap);
/* plot_clean(s) into buf (LABEL_CAP bytes), shortened with "…" to at most max_w wide. Returns buf. */
char *plot_fit(canvas *c, const char *s, double size, int bold, double max_w, char *buf);
void plot_use_minus(char *buf, size_t cap);                 /* leading '-' → U+2212 */
int plot_format_ok(const char *f);                          /* exactly one double conversion */
void plot_fmt_value(const char *fmt, double v, char *buf, size_t cap); /* "n/a" when not finite */
/* One fixed-decimals format ("%.Nf") for values printed side by side, so they line up and
 * read alike: three significant digits for the largest |v| (0.0732, −0.0420; 6.06, −1.80). */
void plot_shared_format(const double *v, int n, char *fmt, size_t cap);

static inline double plot_label_size(const canvas *c) { return c->fs * 1.12; } /* axis titles */

/* ---- axes (axis.c) ---- */

typedef struct axis {
    double lo, hi; /* data values at p0 and p1 */
    int log;
    int n;
    double ticks[MAX_TICKS];
    double step;
    double p0, p1; /* layout coordinates of lo and hi */
} axis;

/* An axis over [lo, hi] padded by pad_lo/pad_hi of the span, about `target` ticks; p0 and p1
 * are left 0 for the caller to set. */
void plot_axis_init(axis *a, double lo, double hi, int target, double pad_lo, double pad_hi, int log_scale);
void plot_axis_index(axis *a, int n, int target); /* integer ticks over indices 0..n-1 */
/* A numeric x axis on [p0, p1] with as many ticks as fit (index: integer ticks 0..hi). */
void plot_axis_x(canvas *c, axis *a, double lo, double hi, double pad, double p0, double p1, int index);

/* Data value → layout coordinate. */
static inline double plot_amap(const axis *a, double v) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->p0 + t * (a->p1 - a->p0);
}

void plot_fmt_tick(const axis *a, double v, char *buf, size_t cap);
double plot_ticks_w(canvas *c, const axis *a); /* widest tick label */
int plot_xticks_fit(canvas *c, const axis *a); /* horizontal tick labels leave gaps */
void plot_grid_y(canvas *c, const frame *f, const axis *ya);
void plot_grid_x(canvas *c, const frame *f, const axis *xa);
void plot_ticks_y(canvas *c, const frame *f, const axis *ya);
void plot_ticks_x(canvas *c, const frame *f, const axis *xa);
void plot_spines(canvas *c, const frame *f);
/* Axis titles: x centred below `y`, y rotated and centred on the frame at `x` (its top edge);
 * NULL or "" draws nothing. */
void plot_xlabel_at(canvas *c, const char *s, double cx, double y, double max_w);
void plot_ylabel_at(canvas *c, const char *s, double x, double cy, double max_w);

/* ---- category labels along an axis (labels.c) ---- */

/* How category labels along x fit cells `pitch` wide: horizontal when they fit, else rotated
 * 45° (few) or 90° (many), shrinking to 60 % of the tick size and then showing every k-th. */
typedef struct xlabels {
    double size, angle, max_len, height, overhang;
    int every;
} xlabels;

xlabels plot_xlabels_plan(canvas *c, char (*lab)[LABEL_CAP], int n, double pitch, double max_ext);
/* dim (n) nonzero: that label in grey (e.g. a token outside the scored positions); NULL → none. */
void plot_xlabels_draw(canvas *c, const xlabels *X, char (*lab)[LABEL_CAP], int n, double x0, double pitch,
                       double y, const unsigned char *dim);
void plot_ylabels_draw(canvas *c, char (*lab)[LABEL_CAP], int n, double x, double y0, double pitch, double max_w);
double plot_ylabels_width(canvas *c, char (*lab)[LABEL_CAP], int n, double max_w);
/* Cleaned copies of n labels (NULL array or entry → `fallback` printed with index + offset);
 * malloc'd, NULL when out of memory. */
char (*plot_labels_copy(const char *const *src, int n, const char *fallback, int offset))[LABEL_CAP];

/* ---- markers and legends (legend.c) ---- */

/* Marker kind k (circle, square, triangle, diamond, down-triangle, hexagon, cycling), filled
 * with a white rim or hollow. */
void plot_marker(canvas *c, int kind, double x, double y, double r, rgb col, int hollow);

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

typedef struct legend {
    const legend_item *items;
    int n;
    int shown;        /* entries that fit; the rest are summarised as "… k more" */
    double size, w, h, row;
} legend;

legend plot_legend_plan(canvas *c, const legend_item *items, int n, double max_w, double max_h);
void plot_legend_draw(canvas *c, const legend *L, double x, double y);
/* A legend in a wrapping row across [x, x + max_w], drawn when `draw`; returns its height. */
double plot_legend_row(canvas *c, const legend_item *items, int n, double x, double y, double max_w, int draw);

#endif
