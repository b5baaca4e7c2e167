/* text — measuring and drawing text, cleaning and fitting labels, number formats; see
 * plot_impl.h. */
#include "plot/plot_impl.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/utf8.h"

static void use_font(canvas *c, double size, int bold) {
    cairo_select_font_face(c->cr, c->font, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(c->cr, size);
}

double plot_text_w(canvas *c, const char *s, double size, int bold) {
    use_font(c, size, bold);
    cairo_text_extents_t e;
    cairo_text_extents(c->cr, s, &e);
    return e.x_advance;
}

/* Height of one line of text (ascent + descent of the font, not of the glyphs drawn), so
 * rows of labels line up whatever letters they hold. */
double plot_line_h(canvas *c, double size) {
    use_font(c, size, 0);
    cairo_font_extents_t fe;
    cairo_font_extents(c->cr, &fe);
    return fe.ascent + fe.descent;
}

/* Draws s with (x, y) at fraction ha of its advance (0 left, 1 right) and fraction va of its
 * line box (0 top, 0.5 middle, 1 bottom), rotated `angle` radians counter-clockwise about it. */
void plot_text_at(canvas *c, const char *s, double x, double y, double size, int bold, rgb col, double ha,
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
    plot_set_rgb(cr, col);
    cairo_show_text(cr, s);
    cairo_restore(cr);
}

/* Copies in to out as valid UTF-8 that cairo accepts: invalid sequences and C0/C1 controls
 * become U+FFFD, except the common whitespace controls, shown escaped ("\n") since tokens
 * are often exactly a newline. Stops with "…" when out would overflow. */
void plot_clean(const char *in, char *out, size_t cap) {
    static const char repl[] = "\xEF\xBF\xBD", ell[] = "\xE2\x80\xA6";
    const unsigned char *s = (const unsigned char *)(in ? in : "");
    size_t n = strlen((const char *)s), i = 0, o = 0;
    while (i < n) {
        char esc[3] = {'\\', 'r', 0};
        unsigned c = s[i];
        uint32_t cp = 0;
        int k = up_utf8_next(s, n, i, &cp);
        const char *piece = (const char *)s + i;
        size_t len = k > 0 ? (size_t)k : 0;
        if (c == '\n' || c == '\t') { /* as a reader sees them: a newline ↵, a tab ⇥ */
            piece = c == '\n' ? "\xE2\x86\xB5" : "\xE2\x87\xA5", len = 3;
        } else if (c == '\r') {
            piece = esc, len = 2;
        } else if (k < 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
            /* Not UTF-8, or a C0 / DEL / C1 control: one U+FFFD for the first byte, and the
             * rest of the sequence is looked at again byte by byte. */
            piece = repl, len = 3, k = 1;
        }
        if (o + len + sizeof ell > cap) {
            memcpy(out + o, ell, sizeof ell); /* includes the NUL */
            return;
        }
        memcpy(out + o, piece, len);
        o += len;
        i += (size_t)k;
    }
    out[o] = 0;
}

/* plot_clean(s) shortened with "…" until it is at most max_w wide at this size. Returns buf. */
char *plot_fit(canvas *c, const char *s, double size, int bold, double max_w, char *buf) {
    plot_clean(s, buf, LABEL_CAP);
    if (plot_text_w(c, buf, size, bold) <= max_w) return buf;
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
        if (plot_text_w(c, tmp, size, bold) <= max_w) best = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    if (best < 0) {
        strcpy(buf, plot_text_w(c, "\xE2\x80\xA6", size, bold) <= max_w ? "\xE2\x80\xA6" : "");
        return buf;
    }
    size_t end = bound[best];
    while (end > 0 && buf[end - 1] == ' ') end--;
    memcpy(buf + end, "\xE2\x80\xA6", 4);
    return buf;
}

/* Typographic minus for a leading '-' (cap must leave 2 spare bytes). */
void plot_use_minus(char *buf, size_t cap) {
    if (buf[0] != '-' || strlen(buf) + 3 > cap) return;
    memmove(buf + 3, buf + 1, strlen(buf));
    memcpy(buf, "\xE2\x88\x92", 3);
}

/* A user's value format must print exactly one double and nothing else that reads memory. */
int plot_format_ok(const char *f) {
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

void plot_shared_format(const double *v, int n, char *fmt, size_t cap) {
    double m = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) m = fmax(m, fabs(v[i]));
    int dec = m > 0 ? 2 - (int)floor(log10(m)) : 2;
    snprintf(fmt, cap, "%%.%df", dec < 0 ? 0 : dec > 8 ? 8 : dec);
}

void plot_fmt_value(const char *fmt, double v, char *buf, size_t cap) {
    if (!isfinite(v)) {
        snprintf(buf, cap, "n/a");
        return;
    }
    snprintf(buf, cap, fmt, v);
    plot_use_minus(buf, cap);
}
