/* plot — the project's figures, drawn with cairo and written as PNG by png.h.
 *
 * Each figure type is one function: plain arrays in a data struct, an up_plot_style for what
 * every figure shares (size, scale, titles, text chunks), and the path of the PNG to write.
 *   up_plot_bars       ranked latents: horizontal bars, positive and negative in two colours
 *   up_plot_heatmap    a (rows, cols) grid, e.g. RG[t,k] with tokens along x, latents along y
 *   up_plot_matrix     the heatmap with annotated cells, for similarity matrices (Jaccard@k)
 *   up_plot_lines      curves y(x) with markers (steering dose–response, τ vs setting), or
 *                      grouped bars over categories
 *   up_plot_scatter    predicted vs measured with the y = x line (the linearity check)
 *   up_plot_selection  bypass / induce / KL per layer, one line per position (direction choice)
 *
 * Drawing: a cairo ARGB32 image surface of style.width × style.height pixels with a white
 * background; everything is laid out in units of 1/scale pixel, so a 1600 × 1000 figure at
 * scale 2 has an 800 × 500 unit layout drawn at twice the resolution (print quality). Text
 * uses cairo's toy API with the style's font family (DejaVu Sans by default, which covers
 * the Greek, dashes and arrows labels use). Categories use the Okabe–Ito palette; heatmaps
 * use a blue–white–red diverging map centred at 0 (ColorBrewer RdBu) or viridis for
 * sequential data; missing values (NaN, ±inf) are drawn as grey cells or skipped points.
 * Margins follow the measured text, long labels are shortened with "…", crowded tick labels
 * shrink and then thin out, and an empty figure says "no data" rather than failing.
 * Labels may be any bytes: invalid UTF-8 becomes U+FFFD and control characters are shown
 * ("\n" as ↵, a tab as ⇥, "\r" escaped), because cairo's text API rejects them and tokens
 * are often exactly that.
 *
 * The style's key → value pairs become PNG text chunks (png.h's rules on keys apply), plus
 * "Title" (the figure title) and "Software" unless the caller gives those keys.
 *
 * Where things live: this header is the whole public API. Each figure type is one file,
 * core/plot/fig_<name>.c (fig_heatmap.c also holds up_plot_matrix; fig_lines.c the grouped
 * bars), built from the drawing toolkit in the private header plot_impl.h (canvas, text, axes,
 * category labels, legends, colours: one .c file each).
 *
 * Adding a figure type <name>:
 *   1. here: its data struct (plain arrays, borrowed), a _default() if some field needs a
 *      non-zero default, and up_status up_plot_<name>(path, style, data, err), listed above;
 *   2. core/plot/fig_<name>.c: check the arguments with PLOT_CHECK, then plot_canvas_open,
 *      plot_header, lay out from measured text and draw with plot_impl.h, and return
 *      plot_canvas_finish (fig_bars.c is the shortest model);
 *   3. CMakeLists.txt: fig_<name>.c in up_layer(plot SOURCES ...);
 *   4. lua/lua_plot.c: l_<name>, which reads the argument table into the data struct, and a
 *      row in its `figures` table: upstream.plot.<name> and X:figure("<name>", ...) then
 *      exist; document the fields in lua_plot.c's header comment;
 *   5. tests/test_plot.c: render it and check size, content and text chunks.
 *
 * Ownership: every pointer is borrowed for the call. Rendering is deterministic for the same
 * inputs, font files and cairo version.
 * Errors: UP_ERR_INVALID for unusable arguments (negative counts, NULL arrays with n > 0, a
 * group index out of range, bad text keys), UP_ERR_NOMEM, cairo failures as UP_ERR_INVALID
 * with cairo's message, and png.h's errors for the file; the message names the path. */
#ifndef UP_PLOT_H
#define UP_PLOT_H

#include "base/error.h"

#define UP_PLOT_DEFAULT_WIDTH 1600
#define UP_PLOT_DEFAULT_HEIGHT 1000

typedef struct up_plot_style {
    int width, height;               /* pixels; 0 → 1600 × 1000 */
    double scale;                    /* pixels per layout unit; 0 → min(width/800, height/500) */
    double font_size;                /* tick labels, in layout units; 0 → 11 (others scale with it) */
    const char *font;                /* font family; NULL → "DejaVu Sans" */
    const char *title;               /* may be NULL */
    const char *subtitle;            /* smaller line under the title; may be NULL */
    const char *xlabel, *ylabel;     /* may be NULL */
    const char *const *meta_keys;    /* (n_meta) PNG text chunk keys */
    const char *const *meta_values;  /* (n_meta) UTF-8 values */
    int n_meta;
} up_plot_style;

/* Ranked latents, drawn top to bottom in the given order (top-k first, then bottom-k). */
typedef struct up_plot_bars_data {
    int n;
    const char *const *labels;  /* (n) e.g. "L5/16k #1234 — hugging"; NULL → "#i" */
    const double *values;       /* (n) non-finite values get no bar and the label "n/a" */
    int n_top;                  /* 0 < n_top < n: a gap and a rule after the first n_top bars */
    const char *value_format;   /* printf format of one double; NULL → one number of decimals for
                                   all, three significant digits for the largest |value| */
    const char *pos_label;      /* legend entry for positive bars; NULL → no legend */
    const char *neg_label;      /* legend entry for negative bars */
} up_plot_bars_data;

typedef enum {
    UP_PLOT_CMAP_AUTO = 0,      /* diverging when the data has both signs, else sequential */
    UP_PLOT_CMAP_DIVERGING,     /* blue (negative) – white (0) – red (positive) */
    UP_PLOT_CMAP_SEQUENTIAL     /* viridis, vmin → vmax */
} up_plot_cmap;

typedef struct up_plot_heatmap_data {
    int rows, cols;
    const double *values;          /* (rows, cols) row-major; non-finite → grey cell */
    const char *const *row_labels; /* (rows) along y, top to bottom; NULL → 0..rows-1 */
    const char *const *col_labels; /* (cols) along x, left to right; NULL → 0..cols-1 */
    up_plot_cmap cmap;
    double vmin, vmax;             /* colour range; NaN → from the data (diverging: ±max|v|) */
    int annotate;                  /* print each value in its cell where the cell is big enough */
    const char *value_format;      /* for annotations; NULL → "%.2f" */
    const char *colorbar_label;    /* may be NULL */
    const unsigned char *scale_cols;  /* (cols) nonzero: the column sets the automatic colour range;
                                         NULL → every column. Values beyond the range take its end
                                         colour, and the colour bar gets a pointed end */
    const unsigned char *marked_cols; /* (cols) nonzero: bracketed above the grid (e.g. the tokens a
                                         score averages over), the others' labels grey; NULL → none */
    const char *mark_label;           /* text over the bracket; may be NULL */
} up_plot_heatmap_data;

typedef struct up_plot_series {
    const char *name;   /* legend entry; NULL or "" → not in the legend */
    int n;
    const double *x;    /* (n); NULL → 0..n-1 (and the category index with x_labels) */
    const double *y;    /* (n); a non-finite point is skipped and breaks the line */
    const double *err;  /* (n) ± half-width of an error bar; NULL → none */
    int control;        /* a control (e.g. random latents): grey, behind the others */
} up_plot_series;

typedef struct up_plot_lines_data {
    int n_series;
    const up_plot_series *series;  /* (n_series) */
    double baseline;               /* a dashed horizontal line at this y; NaN → none */
    const char *baseline_label;    /* its legend entry; NULL → "baseline" */
    const char *const *x_labels;   /* (n_x_labels) categorical x: position i is labelled x_labels[i] */
    int n_x_labels;
    int no_markers;                /* lines only */
    int bars;                      /* grouped bars: one group per x_labels entry, one bar per series
                                      (series[s].y[i] for category i); needs x_labels */
    int ylog;                      /* logarithmic y (non-positive values skipped) */
    double ymin, ymax;             /* y range; NaN → from the data */
} up_plot_lines_data;

typedef struct up_plot_scatter_data {
    int n;
    const double *x, *y;            /* (n); points with a non-finite coordinate are skipped */
    const int *group;               /* (n) index into group_names (colour and legend); NULL → one group */
    const char *const *group_names; /* (n_groups) */
    int n_groups;
    const char *const *labels;      /* (n) text beside each point, NULL entries skipped; NULL → none */
    int identity;                   /* draw y = x, use one range on both axes, and print n and r */
    int control_group;              /* 1 + the index of a group of controls (e.g. random latents),
                                       drawn grey and behind the others as in up_plot_lines; 0 → none */
} up_plot_scatter_data;

typedef struct up_plot_selection_data {
    int n_pos, n_layers;
    const double *bypass;           /* (n_pos, n_layers) */
    const double *induce;           /* (n_pos, n_layers) */
    const double *kl;               /* (n_pos, n_layers), drawn on a log axis when all are > 0 */
    const unsigned *dropped;        /* (n_pos, n_layers) nonzero → removed by a filter (hollow marker); NULL → none */
    const char *const *pos_labels;  /* (n_pos) legend names; NULL → "pos -n_pos+i" */
    int best;                       /* index p*n_layers + layer of the chosen candidate; -1 → none */
    double max_kl;                  /* KL threshold line; NaN → none */
    double min_induce;              /* induce threshold line; NaN → none */
    double max_layer;               /* layers ≥ this are shaded as filtered; NaN → none */
} up_plot_selection_data;

/* Fills in the defaults above (all zero/NULL, except NaN where NaN means "automatic"). */
up_plot_style up_plot_style_default(void);
up_plot_heatmap_data up_plot_heatmap_default(void);
up_plot_lines_data up_plot_lines_default(void);
up_plot_selection_data up_plot_selection_default(void);

up_status up_plot_bars(const char *path, const up_plot_style *style, const up_plot_bars_data *d, up_error *err);
up_status up_plot_heatmap(const char *path, const up_plot_style *style, const up_plot_heatmap_data *d,
                          up_error *err);
/* up_plot_heatmap with annotate on and, when vmin/vmax are NaN and the data lie in [0, 1],
 * the colour range fixed to [0, 1] so matrices from different runs compare by eye. */
up_status up_plot_matrix(const char *path, const up_plot_style *style, const up_plot_heatmap_data *d,
                         up_error *err);
up_status up_plot_lines(const char *path, const up_plot_style *style, const up_plot_lines_data *d,
                        up_error *err);
up_status up_plot_scatter(const char *path, const up_plot_style *style, const up_plot_scatter_data *d,
                          up_error *err);
up_status up_plot_selection(const char *path, const up_plot_style *style, const up_plot_selection_data *d,
                            up_error *err);

/* Nice axis ticks: multiples of 1, 2 or 5 × 10^k covering [lo, hi] with about `target` of them
 * (at most 64). Degenerate ranges (lo == hi, non-finite) are widened first. Writes the ticks
 * and returns how many; *step gets their spacing. Exposed for tests. */
int up_plot_ticks(double lo, double hi, int target, double *ticks, double *step);

#endif
