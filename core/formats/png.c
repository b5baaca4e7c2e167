/* png — see png.h. */
#include "formats/png.h"

#include <errno.h>
/* core/png.h shadows libpng's png.h on the include path (core/ comes first), so name
 * libpng's by its versioned directory. */
#include <libpng16/png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/utf8.h"

/* libpng's message for the last error, kept per png_struct so the setjmp handler can report it. */
typedef struct png_ctx {
    const char *path;
    char msg[256];
} png_ctx;

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (e.g. a bad CRC on an ancillary chunk) do not stop a read; core never prints. */
static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static int key_valid(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x20 || k[i] > 0x7e) return 0;
        if (k[i] == ' ' && k[i + 1] == ' ') return 0;
    }
    return 1;
}

/* 0: pure ASCII (a tEXt chunk), 1: well-formed UTF-8 with non-ASCII (an iTXt chunk), -1: not
 * UTF-8 (overlongs and surrogates included, as base/utf8.h rules). */
static int utf8_class(const char *s) {
    size_t n = strlen(s);
    if (!up_utf8_valid(s, n)) return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 1;
    return 0;
}

up_status up_png_write(const char *path, int w, int h, int channels, size_t stride,
                       const uint8_t *pixels, const char *const *keys, const char *const *values,
                       int n_text, up_error *err) {
    if (!path || !*path) return up_error_set(err, UP_ERR_INVALID, "png: empty path");
    if (w <= 0 || h <= 0 || w > 1000000 || h > 1000000)
        return up_error_set(err, UP_ERR_INVALID, "%s: bad image size %dx%d", path, w, h);
    if (channels != 3 && channels != 4)
        return up_error_set(err, UP_ERR_INVALID, "%s: channels must be 3 or 4, not %d", path, channels);
    if (!pixels || stride < (size_t)w * channels)
        return up_error_set(err, UP_ERR_INVALID, "%s: stride %zu < %d bytes per row", path, stride, w * channels);
    if (n_text < 0 || (n_text > 0 && (!keys || !values)))
        return up_error_set(err, UP_ERR_INVALID, "%s: bad text chunk list", path);

    png_text *text = n_text ? calloc((size_t)n_text, sizeof *text) : NULL;
    if (n_text && !text) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n_text; i++) {
        if (!keys[i] || !key_valid(keys[i])) {
            free(text);
            return up_error_set(err, UP_ERR_INVALID,
                                "%s: text key \"%s\" is not 1-79 printable ASCII characters without "
                                "leading, trailing or double spaces", path, keys[i] ? keys[i] : "(null)");
        }
        const char *v = values[i] ? values[i] : "";
        int cls = utf8_class(v);
        if (cls < 0) {
            free(text);
            return up_error_set(err, UP_ERR_INVALID, "%s: value of text key \"%s\" is not UTF-8", path, keys[i]);
        }
        int big = strlen(v) > UP_PNG_COMPRESS_TEXT;
        text[i].compression = cls == 0 ? (big ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE)
                                        : (big ? PNG_ITXT_COMPRESSION_zTXt : PNG_ITXT_COMPRESSION_NONE);
        text[i].key = (char *)keys[i];
        text[i].text = (char *)v;
    }

    png_ctx ctx = {path, ""};
    char *tmp = NULL;
    FILE *volatile fp = up_fs_open_temp(path, &tmp, err);
    if (!fp) {
        free(text);
        return err ? err->status : UP_ERR_IO;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    up_status s = UP_OK;
    if (!png || !info) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: cannot create libpng structures", path);
        goto done;
    }
    errno = 0;
    if (setjmp(png_jmpbuf(png))) {
        /* libpng says only "Write Error" when fwrite fails; errno says why (a full disk, a
         * file-size limit). The message names the file the user asked for: tmp is removed. */
        s = up_error_set(err, UP_ERR_IO, "cannot write %s: %s", path, errno ? strerror(errno) : ctx.msg);
        goto done;
    }
    png_init_io(png, fp);
    /* Figures are flat colour; level 6 with adaptive filters is libpng's sweet spot. */
    png_set_compression_level(png, 6);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* Text before the image data, so tools that read only the header see the manifest. */
    if (n_text) png_set_text(png, info, text, n_text);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * stride));
    png_write_end(png, NULL);

done:
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    free(text);
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        if (s == UP_OK) s = up_error_set(err, UP_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    if (fclose(fp) != 0 && s == UP_OK) s = up_error_set(err, UP_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    s = up_fs_replace(tmp, path, s, err);
    free(tmp);
    return s;
}

/* Appends the text chunks libpng found in info to img (keys and values copied). */
static int take_text(png_structp png, png_infop info, up_png_image *img) {
    png_textp t;
    int n = 0;
    if (!png_get_text(png, info, &t, &n) || n <= 0) return 0;
    char **k = realloc(img->keys, (size_t)(img->n_text + n) * sizeof *k);
    if (!k) return -1;
    img->keys = k;
    char **v = realloc(img->values, (size_t)(img->n_text + n) * sizeof *v);
    if (!v) return -1;
    img->values = v;
    for (int i = 0; i < n; i++) {
        const char *val = t[i].text ? t[i].text : "";
        img->keys[img->n_text] = strdup(t[i].key);
        img->values[img->n_text] = strdup(val);
        img->n_text++;
        if (!img->keys[img->n_text - 1] || !img->values[img->n_text - 1]) return -1;
    }
    return 0;
}

up_status up_png_read(const char *path, up_png_image *img, up_error *err) {
    memset(img, 0, sizeof *img);
    FILE *fp = fopen(path, "rb");
    if (!fp) return up_error_set(err, UP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(fp);
        return up_error_set(err, UP_ERR_FORMAT, "%s: not a PNG file", path);
    }
    png_ctx ctx = {path, ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop end = png ? png_create_info_struct(png) : NULL;
    png_bytep *volatile rows = NULL;
    up_status s = UP_OK;
    if (!png || !info || !end) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: cannot create libpng structures", path);
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        s = up_error_set(err, UP_ERR_FORMAT, "%s: %s", path, ctx.msg);
        goto done;
    }
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ct = png_get_color_type(png, info);
    img->file_channels = png_get_channels(png, info);
    if (ct == PNG_COLOR_TYPE_PALETTE) img->file_channels = png_get_valid(png, info, PNG_INFO_tRNS) ? 4 : 3;
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
    if (!(ct & PNG_COLOR_MASK_ALPHA) && !png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 4) png_error(png, "unexpected row size after expansion");
    img->w = (int)w, img->h = (int)h;
    img->pixels = malloc((size_t)w * h * 4);
    rows = malloc(h * sizeof *rows);
    if (!img->pixels || !rows) {
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory for %ux%u pixels", path, w, h);
        goto done;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = img->pixels + (size_t)y * w * 4;
    png_read_image(png, rows);
    png_read_end(png, end);
    if (take_text(png, info, img) || take_text(png, end, img))
        s = up_error_set(err, UP_ERR_NOMEM, "%s: out of memory for text chunks", path);

done:
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, end ? &end : NULL);
    free(rows);
    fclose(fp);
    if (s != UP_OK) up_png_image_free(img);
    return s;
}

const char *up_png_text(const up_png_image *img, const char *key) {
    for (int i = 0; i < img->n_text; i++)
        if (!strcmp(img->keys[i], key)) return img->values[i];
    return NULL;
}

void up_png_image_free(up_png_image *img) {
    if (!img) return;
    for (int i = 0; i < img->n_text; i++) {
        if (img->keys) free(img->keys[i]);
        if (img->values) free(img->values[i]);
    }
    free(img->keys);
    free(img->values);
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

const char *up_png_version(void) { return png_get_libpng_ver(NULL); }
