/* color — palettes and colour maps; see plot_impl.h. */
#include "plot/plot_impl.h"

/* Okabe & Ito (2008), ordered so the first few are the most distinct on white; the yellow
 * is last because it is the hardest to see against the background. */
static const unsigned okabe_ito[8] = {0x0072B2, 0xD55E00, 0x009E73, 0xE69F00,
                                      0xCC79A7, 0x56B4E9, 0x000000, 0xF0E442};

rgb plot_series_color(int i) { return plot_hex(okabe_ito[i % 8]); }

/* ColorBrewer RdBu (11 classes), negative (blue) to positive (red), white-ish at 0. */
const unsigned plot_rdbu[11] = {0x053061, 0x2166AC, 0x4393C3, 0x92C5DE, 0xD1E5F0, 0xF7F7F7,
                                0xFDDBC7, 0xF4A582, 0xD6604D, 0xB2182B, 0x67001F};
/* viridis sampled at 0, 0.1, …, 1: perceptually uniform and readable in greyscale. */
const unsigned plot_viridis[11] = {0x440154, 0x482475, 0x414487, 0x355F8D, 0x2A788E, 0x21918C,
                                   0x22A884, 0x44BF70, 0x7AD151, 0xBDDF26, 0xFDE725};

/* Linear between stops; t outside [0, 1] (or NaN) is clamped. */
rgb plot_cmap_at(const unsigned *stops, double t) {
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double f = t * 10;
    int i = (int)f;
    if (i >= 10) i = 9;
    f -= i;
    rgb a = plot_hex(stops[i]), b = plot_hex(stops[i + 1]);
    return (rgb){a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f};
}

/* Relative luminance (Rec. 709 weights). */
double plot_luminance(rgb c) { return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b; }
