/* Lua bindings of the figures (core/plot/plot.h): one table in, one PNG out.
 *
 *   upstream.plot.bars{...}       ranked latents, horizontal bars
 *   upstream.plot.heatmap{...}    a grid such as RG[t, k] (tokens along x, latents along y)
 *   upstream.plot.matrix{...}     an annotated similarity matrix (Jaccard@k between settings)
 *   upstream.plot.lines{...}      curves with markers (steering dose–response)
 *   upstream.plot.groups{...}     grouped bars over categories (Kendall τ per setting)
 *   upstream.plot.scatter{...}    predicted vs measured ΔR with the y = x line
 *   upstream.plot.selection{...}  bypass / induce / KL per layer, one line per position
 *   upstream.plot.info(path)      -> {width = w, height = h, text = {key = value, ...},
 *                                     ink = fraction of pixels unlike the top-left one,
 *                                     colors = number of distinct RGBA values}
 *                                    (ink and colors let tests tell a drawn figure from a blank)
 * Each figure function returns the path it wrote.
 *
 * Fields every figure takes:
 *   path       string, required: the PNG to write (atomically: temp name, then rename)
 *   title, subtitle, xlabel, ylabel   strings
 *   width, height  pixels (1600 × 1000);  scale  pixels per layout unit (width/800, so 2)
 *   font_size  tick label size in layout units (11);  font  family ("DejaVu Sans")
 *              (matrix and the identity scatter cut off the room their square content leaves,
 *              unless width / height is given)
 *   meta       {key = value}: PNG text chunks, e.g. {manifest = json}; keys 1–79 printable
 *              ASCII, values strings, numbers or booleans; written in sorted key order
 * A "numbers" field is a Lua array of numbers or an upstream.Tensor; `false` in an array
 * stands for a missing value (NaN), since a Lua array cannot hold nil. A "matrix" field is
 * an array of equal-length number arrays (rows) or a 2-D Tensor.
 *
 * bars:      labels {strings} (optional), values numbers (required, same length), n_top
 *            (a gap after the first n_top bars: top-k then bottom-k), format (printf of one
 *            number; default: one number of decimals for all bars,
 *            three significant digits for the largest), pos_label / neg_label (legend entries for the two colours)
 * heatmap:   values matrix (rows × cols), row_labels, col_labels {strings}, cmap "auto" |
 *            "diverging" (centred at 0) | "sequential", vmin, vmax, annotate (false),
 *            format ("%.2f"), colorbar (colour bar title), scale_columns {column indices, 1-based:
 *            only these set the automatic colour range; others beyond it take its end colour},
 *            marked_columns {column indices: bracketed above the grid, other labels grey},
 *            mark_label (text over the bracket)
 * matrix:    as heatmap, plus labels (both axes); annotate is always on, and data in [0, 1]
 *            get the colour range [0, 1]
 * lines:     series {{name =, x = numbers (1..n), y = numbers, err = numbers (±),
 *            control = bool (grey: random latents)}, ...}, baseline (dashed line at this y),
 *            baseline_label, x_labels {strings} (categorical x: x is then 0-based category
 *            indices, default 0..n-1), markers (true), ylog (false), ymin, ymax; coinciding
 *            lines are drawn nested
 * groups:    categories {strings} (required), series {{name =, values = numbers, err =,
 *            control =}, ...}, ymin, ymax
 * scatter:   x, y numbers (required), group {names, one per point: colour and legend},
 *            labels {strings or false, one per point}, identity (true: y = x line, equal
 *            axes, n, r and slope printed), control (the name of a group of controls: grey,
 *            drawn behind)
 * selection: bypass, induce, kl matrices (positions × layers, required), dropped matrix of
 *            booleans or numbers (nonzero: filtered out, e.g. the select mask bits),
 *            positions {strings} (legend names), best {pos = row (1-based), layer = ℓ
 *            (0-based, as on the axis)}, max_kl, min_induce, max_layer (thresholds drawn)
 *
 * (docs/lua-api.md, "Figures", documents these fields for users: keep the two in step.)
 *
 * Error rule for this family: misuse (a missing or mistyped field, mismatched lengths) raises
 * with luaL_argerror naming the field; an unknown field (of the spec, a series entry or best)
 * raises "plot.<kind>: unknown field 'x' (did you mean 'y'?)" (up_lua_check_keys); a figure that cannot be written (unwritable
 * directory) raises with the core's message. Memory taken while reading fields is Lua
 * userdata, so a raise leaks nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "plot/plot.h"
#include "formats/png.h"

/* ---- reading the argument table (always at index 1) ---- */

/* A buffer owned by Lua: it lives on the stack until the function returns or raises. */
static void *scratch(lua_State *L, size_t bytes) {
    luaL_checkstack(L, 4, "plot: too many buffers");
    void *p = lua_newuserdatauv(L, bytes ? bytes : 1, 0);
    return p;
}

static int field_error(lua_State *L, const char *field, const char *what) {
    return luaL_argerror(L, 1, lua_pushfstring(L, "field '%s' %s", field, what));
}

/* Strings handed to core must outlive the stack slot they were read from: each is stored in
 * the anchor table at stack index 2 (created by begin()). */
static const char *anchor(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    const char *s = lua_tostring(L, idx);
    lua_pushvalue(L, idx);
    lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
    return s;
}

/* The fields every figure reads (read_style). Each figure checks its spec against these plus
 * its own list, so a misspelt field raises ("did you mean") instead of falling back to its
 * default. */
#define STYLE_FIELDS "path", "title", "subtitle", "xlabel", "ylabel", "width", "height", "scale", "font_size", "font", "meta"

static void begin(lua_State *L, const char *kind, const char *const *allowed) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    up_lua_check_keys(L, 1, allowed, lua_pushfstring(L, "plot.%s", kind));
    lua_settop(L, 1);
    lua_newtable(L); /* index 2: anchors */
}

/* Pushes t[field] (t at index 1) and returns its type. */
static int get(lua_State *L, const char *field) { return lua_getfield(L, 1, field); }

static const char *opt_string(lua_State *L, const char *field) {
    int t = get(L, field);
    const char *s = NULL;
    if (t == LUA_TSTRING || t == LUA_TNUMBER) s = anchor(L, -1);
    else if (t != LUA_TNIL) field_error(L, field, "must be a string");
    lua_pop(L, 1);
    return s;
}

static double opt_number(lua_State *L, const char *field, double def) {
    int t = get(L, field);
    double v = def;
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL) field_error(L, field, "must be a number");
    lua_pop(L, 1);
    return v;
}

static int opt_int(lua_State *L, const char *field, int def, int lo, int hi) {
    int t = get(L, field);
    lua_Integer v = def;
    if (t != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok) field_error(L, field, "must be an integer");
        if (v < lo || v > hi) field_error(L, field, lua_pushfstring(L, "must be in %d..%d", lo, hi));
    }
    lua_pop(L, 1);
    return (int)v;
}

static int opt_bool(lua_State *L, const char *field, int def) {
    int t = get(L, field);
    int v = def;
    if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL) field_error(L, field, "must be a boolean");
    lua_pop(L, 1);
    return v;
}

/* Numbers at stack index idx (an array, false = NaN, or a Tensor), copied into a scratch
 * buffer pushed on top of the stack; idx itself is left alone. */
static double *numbers_at(lua_State *L, int idx, const char *field, int *n) {
    idx = lua_absindex(L, idx);
    up_lua_tensor *t = luaL_testudata(L, idx, UP_TENSOR_MT);
    if (t) {
        if (!t->data) field_error(L, field, "is a freed tensor");
        if (t->numel > 100000000) field_error(L, field, "is too large");
        *n = (int)t->numel;
        double *v = scratch(L, (size_t)*n * sizeof *v);
        for (int i = 0; i < *n; i++) v[i] = t->data[i];
        return v;
    }
    if (!lua_istable(L, idx)) field_error(L, field, "must be an array of numbers or a tensor");
    lua_Integer len = luaL_len(L, idx);
    if (len > 100000000) field_error(L, field, "is too large");
    *n = (int)len;
    double *v = scratch(L, (size_t)*n * sizeof *v);
    for (int i = 0; i < *n; i++) {
        int ty = lua_geti(L, idx, i + 1);
        if (ty == LUA_TNUMBER) v[i] = lua_tonumber(L, -1);
        else if (ty == LUA_TBOOLEAN && !lua_toboolean(L, -1)) v[i] = NAN;
        else field_error(L, field, lua_pushfstring(L, "entry %d must be a number (or false for missing)", i + 1));
        lua_pop(L, 1);
    }
    return v;
}

/* Table t's field as numbers, the buffer left on top of the stack; NULL with *n = -1 when
 * absent and not required. */
static double *opt_numbers(lua_State *L, int t, const char *field, int *n, int required) {
    t = lua_absindex(L, t);
    if (lua_getfield(L, t, field) == LUA_TNIL) {
        if (required) field_error(L, field, "is required");
        lua_pop(L, 1);
        *n = -1;
        return NULL;
    }
    int at = lua_gettop(L);
    double *v = numbers_at(L, at, field, n);
    lua_remove(L, at);
    return v;
}

/* A matrix: an array of rows (equal-length number arrays) or a 2-D tensor; the row-major
 * buffer is left on top of the stack. */
static double *opt_matrix(lua_State *L, int t, const char *field, int *rows, int *cols, int required) {
    t = lua_absindex(L, t);
    *rows = *cols = 0;
    if (lua_getfield(L, t, field) == LUA_TNIL) {
        if (required) field_error(L, field, "is required");
        lua_pop(L, 1);
        *rows = -1;
        return NULL;
    }
    int at = lua_gettop(L);
    up_lua_tensor *tt = luaL_testudata(L, at, UP_TENSOR_MT);
    if (tt) {
        if (tt->ndim != 2 || !tt->data) field_error(L, field, "must be a 2-D tensor");
        *rows = (int)tt->shape[0], *cols = (int)tt->shape[1];
        double *v = scratch(L, (size_t)tt->numel * sizeof *v);
        for (int64_t i = 0; i < tt->numel; i++) v[i] = tt->data[i];
        lua_remove(L, at);
        return v;
    }
    if (!lua_istable(L, at)) field_error(L, field, "must be an array of rows or a 2-D tensor");
    lua_Integer m = luaL_len(L, at);
    if (m > 100000000) field_error(L, field, "is too large");
    double *v = NULL;
    for (int r = 0; r < (int)m; r++) {
        if (lua_geti(L, at, r + 1) != LUA_TTABLE) field_error(L, field, lua_pushfstring(L, "row %d must be an array", r + 1));
        int c;
        double *row = numbers_at(L, -1, field, &c);
        if (r == 0) {
            *cols = c;
            if ((double)m * c > 1e8) field_error(L, field, "is too large");
            v = scratch(L, (size_t)m * c * sizeof *v);
            lua_insert(L, at); /* below the table: it outlives the loop */
            at++;
        } else if (c != *cols) {
            field_error(L, field, lua_pushfstring(L, "row %d has %d values, row 1 has %d", r + 1, c, *cols));
        }
        memcpy(v + (size_t)r * c, row, (size_t)c * sizeof *v);
        lua_pop(L, 2); /* the row's buffer and the row */
    }
    *rows = (int)m;
    if (!v) {
        v = scratch(L, 1);
        lua_insert(L, at);
        at++;
    }
    lua_remove(L, at);
    return v;
}

/* t[field] as strings (numbers converted; false/nil-free arrays; `allow_false` lets false
 * stand for "no label"). NULL with *n = -1 when absent. */
static const char **opt_strings(lua_State *L, int t, const char *field, int *n, int allow_false) {
    if (lua_getfield(L, t, field) == LUA_TNIL) {
        lua_pop(L, 1);
        *n = -1;
        return NULL;
    }
    if (!lua_istable(L, -1)) field_error(L, field, "must be an array of strings");
    *n = (int)luaL_len(L, -1);
    const char **s = scratch(L, (size_t)(*n > 0 ? *n : 1) * sizeof *s);
    lua_insert(L, -2);
    for (int i = 0; i < *n; i++) {
        int ty = lua_geti(L, -1, i + 1);
        if (ty == LUA_TSTRING || ty == LUA_TNUMBER) s[i] = anchor(L, -1);
        else if (allow_false && ty == LUA_TBOOLEAN && !lua_toboolean(L, -1)) s[i] = NULL;
        else field_error(L, field, lua_pushfstring(L, "entry %d must be a string", i + 1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return s;
}

/* t[field] (t at index 1) as a list of 1-based column indices → a (cols) flag array left on
 * the stack; NULL when absent. */
static const unsigned char *opt_columns(lua_State *L, const char *field, int cols) {
    int n;
    const double *v = opt_numbers(L, 1, field, &n, 0);
    if (!v) return NULL;
    unsigned char *flags = scratch(L, (size_t)(cols > 0 ? cols : 1));
    memset(flags, 0, (size_t)(cols > 0 ? cols : 1));
    for (int i = 0; i < n; i++) {
        if (!(v[i] >= 1 && v[i] <= cols && v[i] == floor(v[i])))
            field_error(L, field, lua_pushfstring(L, "entry %d must be a column index in 1..%d", i + 1, cols));
        flags[(int)v[i] - 1] = 1;
    }
    return flags;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The fields every figure shares. */
static up_plot_style read_style(lua_State *L, const char **path) {
    up_plot_style st = up_plot_style_default();
    *path = opt_string(L, "path");
    if (!*path || !**path) field_error(L, "path", "is required (the PNG to write)");
    st.title = opt_string(L, "title");
    st.subtitle = opt_string(L, "subtitle");
    st.xlabel = opt_string(L, "xlabel");
    st.ylabel = opt_string(L, "ylabel");
    st.font = opt_string(L, "font");
    st.width = opt_int(L, "width", 0, 64, 16384);
    st.height = opt_int(L, "height", 0, 64, 16384);
    st.scale = opt_number(L, "scale", 0);
    if (!(st.scale >= 0 && st.scale <= 64)) field_error(L, "scale", "must be in 0..64");
    st.font_size = opt_number(L, "font_size", 0);
    if (!(st.font_size >= 0 && st.font_size <= 200)) field_error(L, "font_size", "must be in 0..200");
    int ty = get(L, "meta");
    if (ty == LUA_TTABLE) {
        int n = 0;
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) n++;
        const char **kv = scratch(L, (size_t)(2 * n + 1) * sizeof *kv);
        lua_insert(L, -2);
        int i = 0;
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING) field_error(L, "meta", "keys must be strings");
            int vt = lua_type(L, -1);
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN)
                field_error(L, "meta", lua_pushfstring(L, "value of '%s' must be a string, number or boolean",
                                                       lua_tostring(L, -2)));
            kv[2 * i] = anchor(L, -2);
            luaL_tolstring(L, -1, NULL); /* numbers and booleans as Lua prints them */
            kv[2 * i + 1] = anchor(L, -1);
            lua_pop(L, 1);
            i++;
        }
        lua_pop(L, 1);
        /* Sorted by key, so the same meta gives the same file whatever Lua's hash order. */
        const char **pairs = scratch(L, (size_t)(2 * n + 1) * sizeof *pairs);
        memcpy(pairs, kv, (size_t)2 * n * sizeof *pairs);
        qsort(pairs, (size_t)n, 2 * sizeof *pairs, cmp_str);
        const char **keys = scratch(L, (size_t)(n + 1) * sizeof *keys), **vals = scratch(L, (size_t)(n + 1) * sizeof *vals);
        for (int k = 0; k < n; k++) keys[k] = pairs[2 * k], vals[k] = pairs[2 * k + 1];
        st.meta_keys = keys, st.meta_values = vals, st.n_meta = n;
    } else {
        if (ty != LUA_TNIL) field_error(L, "meta", "must be a table of key = value");
        lua_pop(L, 1);
    }
    return st;
}

static int finish(lua_State *L, up_status s, const up_error *e, const char *path) {
    if (s) return luaL_error(L, "%s", e->msg);
    lua_pushstring(L, path);
    return 1;
}

static void check_len(lua_State *L, const char *field, int n, int want, const char *of) {
    if (n >= 0 && n != want)
        field_error(L, field, lua_pushfstring(L, "has %d entries, %s has %d", n, of, want));
}

/* ---- figures ---- */

static int l_bars(lua_State *L) {
    static const char *const fields[] = {STYLE_FIELDS, "values", "labels", "n_top", "format", "pos_label", "neg_label", NULL};
    begin(L, "bars", fields);
    const char *path;
    up_plot_style st = read_style(L, &path);
    up_plot_bars_data d = {0};
    int nl;
    d.values = opt_numbers(L, 1, "values", &d.n, 1);
    d.labels = opt_strings(L, 1, "labels", &nl, 1);
    check_len(L, "labels", nl, d.n, "values");
    d.n_top = opt_int(L, "n_top", 0, 0, d.n);
    d.value_format = opt_string(L, "format");
    d.pos_label = opt_string(L, "pos_label");
    d.neg_label = opt_string(L, "neg_label");
    up_error e = {0};
    return finish(L, up_plot_bars(path, &st, &d, &e), &e, path);
}

static up_plot_cmap read_cmap(lua_State *L) {
    const char *s = opt_string(L, "cmap");
    if (!s || !strcmp(s, "auto")) return UP_PLOT_CMAP_AUTO;
    if (!strcmp(s, "diverging")) return UP_PLOT_CMAP_DIVERGING;
    if (!strcmp(s, "sequential")) return UP_PLOT_CMAP_SEQUENTIAL;
    field_error(L, "cmap", "must be \"auto\", \"diverging\" or \"sequential\"");
    return UP_PLOT_CMAP_AUTO;
}

static int grid(lua_State *L, int matrix) {
    static const char *const fields[] = {STYLE_FIELDS, "values", "row_labels", "col_labels", "labels", "cmap", "vmin",
                                         "vmax", "annotate", "format", "colorbar", "scale_columns", "marked_columns",
                                         "mark_label", NULL};
    begin(L, matrix ? "matrix" : "heatmap", fields);
    const char *path;
    up_plot_style st = read_style(L, &path);
    up_plot_heatmap_data d = up_plot_heatmap_default();
    d.values = opt_matrix(L, 1, "values", &d.rows, &d.cols, 1);
    int nr, nc, nb;
    d.row_labels = opt_strings(L, 1, "row_labels", &nr, 1);
    d.col_labels = opt_strings(L, 1, "col_labels", &nc, 1);
    const char **both = opt_strings(L, 1, "labels", &nb, 1);
    if (both) {
        if (!d.row_labels) d.row_labels = both, nr = nb;
        if (!d.col_labels) d.col_labels = both, nc = nb;
    }
    check_len(L, "row_labels", nr, d.rows, "values (rows)");
    check_len(L, "col_labels", nc, d.cols, "values (columns)");
    d.cmap = read_cmap(L);
    d.vmin = opt_number(L, "vmin", NAN);
    d.vmax = opt_number(L, "vmax", NAN);
    d.annotate = opt_bool(L, "annotate", matrix);
    d.value_format = opt_string(L, "format");
    d.colorbar_label = opt_string(L, "colorbar");
    d.scale_cols = opt_columns(L, "scale_columns", d.cols);
    d.marked_cols = opt_columns(L, "marked_columns", d.cols);
    d.mark_label = opt_string(L, "mark_label");
    up_error e = {0};
    up_status s = matrix ? up_plot_matrix(path, &st, &d, &e) : up_plot_heatmap(path, &st, &d, &e);
    return finish(L, s, &e, path);
}

static int l_heatmap(lua_State *L) { return grid(L, 0); }
static int l_matrix(lua_State *L) { return grid(L, 1); }

/* series = {{name =, x =, y = | values =, err =, control =}, ...} into a scratch array. */
static up_plot_series *read_series(lua_State *L, int *n_series, const char *yfield, int need_x) {
    if (get(L, "series") != LUA_TTABLE) field_error(L, "series", "must be an array of series tables");
    int n = (int)luaL_len(L, -1);
    up_plot_series *sr = scratch(L, (size_t)(n > 0 ? n : 1) * sizeof *sr);
    lua_insert(L, -2);
    int st = lua_gettop(L);
    for (int k = 0; k < n; k++) {
        if (lua_geti(L, st, k + 1) != LUA_TTABLE)
            field_error(L, "series", lua_pushfstring(L, "entry %d must be a table", k + 1));
        int t = lua_gettop(L);
        static const char *const line_fields[] = {"name", "x", "y", "err", "control", NULL};
        static const char *const group_fields[] = {"name", "values", "err", "control", NULL};
        up_lua_check_keys(L, t, need_x ? line_fields : group_fields, lua_pushfstring(L, "plot.%s: series[%d]", need_x ? "lines" : "groups", k + 1));
        lua_settop(L, t);
        memset(&sr[k], 0, sizeof sr[k]);
        if (lua_getfield(L, t, "name") == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) sr[k].name = anchor(L, -1);
        else if (!lua_isnil(L, -1)) field_error(L, "series", lua_pushfstring(L, "entry %d: name must be a string", k + 1));
        lua_pop(L, 1);
        lua_getfield(L, t, "control");
        sr[k].control = lua_toboolean(L, -1);
        lua_pop(L, 1);
        int ny, nx, ne;
        /* buffers stay on the stack above t until the function returns */
        const double *y = opt_numbers(L, t, yfield, &ny, 1);
        const double *x = need_x ? opt_numbers(L, t, "x", &nx, 0) : NULL;
        const double *er = opt_numbers(L, t, "err", &ne, 0);
        if (!need_x) nx = -1;
        if (nx >= 0 && nx != ny)
            field_error(L, "series", lua_pushfstring(L, "entry %d: x has %d values, %s has %d", k + 1, nx, yfield, ny));
        if (ne >= 0 && ne != ny)
            field_error(L, "series", lua_pushfstring(L, "entry %d: err has %d values, %s has %d", k + 1, ne, yfield, ny));
        sr[k].n = ny, sr[k].y = y, sr[k].x = x, sr[k].err = er;
        lua_remove(L, t); /* the series table; its buffers stay above */
    }
    lua_remove(L, st);
    *n_series = n;
    return sr;
}

static int l_lines(lua_State *L) {
    static const char *const fields[] = {STYLE_FIELDS, "series", "baseline", "baseline_label", "x_labels", "markers", "ylog", "ymin", "ymax", NULL};
    begin(L, "lines", fields);
    const char *path;
    up_plot_style st = read_style(L, &path);
    up_plot_lines_data d = up_plot_lines_default();
    d.series = read_series(L, &d.n_series, "y", 1);
    d.baseline = opt_number(L, "baseline", NAN);
    d.baseline_label = opt_string(L, "baseline_label");
    int nx;
    d.x_labels = opt_strings(L, 1, "x_labels", &nx, 0);
    d.n_x_labels = nx > 0 ? nx : 0;
    d.no_markers = !opt_bool(L, "markers", 1);
    d.ylog = opt_bool(L, "ylog", 0);
    d.ymin = opt_number(L, "ymin", NAN);
    d.ymax = opt_number(L, "ymax", NAN);
    up_error e = {0};
    return finish(L, up_plot_lines(path, &st, &d, &e), &e, path);
}

static int l_groups(lua_State *L) {
    static const char *const fields[] = {STYLE_FIELDS, "categories", "series", "ymin", "ymax", NULL};
    begin(L, "groups", fields);
    const char *path;
    up_plot_style st = read_style(L, &path);
    up_plot_lines_data d = up_plot_lines_default();
    int nc;
    d.x_labels = opt_strings(L, 1, "categories", &nc, 0);
    if (!d.x_labels || nc < 1) field_error(L, "categories", "is required (a non-empty array of strings)");
    d.n_x_labels = nc, d.bars = 1;
    d.series = read_series(L, &d.n_series, "values", 0);
    for (int k = 0; k < d.n_series; k++)
        if (d.series[k].n != nc)
            field_error(L, "series", lua_pushfstring(L, "entry %d has %d values for %d categories", k + 1,
                                                     d.series[k].n, nc));
    d.ymin = opt_number(L, "ymin", NAN);
    d.ymax = opt_number(L, "ymax", NAN);
    up_error e = {0};
    return finish(L, up_plot_lines(path, &st, &d, &e), &e, path);
}

static int l_scatter(lua_State *L) {
    static const char *const fields[] = {STYLE_FIELDS, "x", "y", "group", "labels", "identity", "control", NULL};
    begin(L, "scatter", fields);
    const char *path;
    up_plot_style st = read_style(L, &path);
    up_plot_scatter_data d = {0};
    int nx, ny, ng, nl;
    d.x = opt_numbers(L, 1, "x", &nx, 1);
    d.y = opt_numbers(L, 1, "y", &ny, 1);
    check_len(L, "y", ny, nx, "x");
    d.n = nx;
    const char **g = opt_strings(L, 1, "group", &ng, 0);
    check_len(L, "group", ng, nx, "x");
    if (g) {
        /* names per point → indices in order of first appearance */
        int *idx = scratch(L, (size_t)(nx > 0 ? nx : 1) * sizeof *idx);
        const char **names = scratch(L, (size_t)(nx > 0 ? nx : 1) * sizeof *names);
        int n_names = 0;
        for (int i = 0; i < nx; i++) {
            int j = 0;
            while (j < n_names && strcmp(names[j], g[i])) j++;
            if (j == n_names) names[n_names++] = g[i];
            idx[i] = j;
        }
        d.group = idx, d.group_names = names, d.n_groups = n_names;
    }
    const char *control = opt_string(L, "control");
    if (control) {
        for (int j = 0; j < d.n_groups && !d.control_group; j++)
            if (!strcmp(d.group_names[j], control)) d.control_group = j + 1;
        if (!d.control_group) field_error(L, "control", "must name one of the groups");
    }
    d.labels = opt_strings(L, 1, "labels", &nl, 1);
    check_len(L, "labels", nl, nx, "x");
    d.identity = opt_bool(L, "identity", 1);
    up_error e = {0};
    return finish(L, up_plot_scatter(path, &st, &d, &e), &e, path);
}

static int l_selection(lua_State *L) {
    static const char *const fields[] = {STYLE_FIELDS, "bypass", "induce", "kl", "dropped", "positions", "best", "max_kl", "min_induce", "max_layer", NULL};
    begin(L, "selection", fields);
    const char *path;
    up_plot_style st = read_style(L, &path);
    up_plot_selection_data d = up_plot_selection_default();
    int r[4], c[4];
    d.bypass = opt_matrix(L, 1, "bypass", &r[0], &c[0], 1);
    d.induce = opt_matrix(L, 1, "induce", &r[1], &c[1], 1);
    d.kl = opt_matrix(L, 1, "kl", &r[2], &c[2], 1);
    static const char *const names[] = {"bypass", "induce", "kl", "dropped"};
    for (int i = 1; i < 3; i++)
        if (r[i] != r[0] || c[i] != c[0])
            field_error(L, names[i], lua_pushfstring(L, "is %d x %d, bypass is %d x %d", r[i], c[i], r[0], c[0]));
    d.n_pos = r[0], d.n_layers = c[0];
    if (get(L, "dropped") != LUA_TNIL) {
        lua_pop(L, 1);
        /* booleans or numbers: read as numbers with true → 1 */
        if (get(L, "dropped") != LUA_TTABLE) field_error(L, "dropped", "must be an array of rows");
        int rows = (int)luaL_len(L, -1);
        if (rows != d.n_pos) field_error(L, "dropped", lua_pushfstring(L, "has %d rows, bypass has %d", rows, d.n_pos));
        unsigned *dr = scratch(L, (size_t)(d.n_pos * d.n_layers + 1) * sizeof *dr);
        lua_insert(L, -2);
        for (int p = 0; p < rows; p++) {
            if (lua_geti(L, -1, p + 1) != LUA_TTABLE || luaL_len(L, -1) != d.n_layers)
                field_error(L, "dropped", lua_pushfstring(L, "row %d must be an array of %d entries", p + 1, d.n_layers));
            for (int l = 0; l < d.n_layers; l++) {
                int ty = lua_geti(L, -1, l + 1);
                if (ty == LUA_TBOOLEAN) dr[p * d.n_layers + l] = lua_toboolean(L, -1);
                else if (ty == LUA_TNUMBER) dr[p * d.n_layers + l] = lua_tonumber(L, -1) != 0;
                else field_error(L, "dropped", "entries must be booleans or numbers");
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        d.dropped = dr;
    } else {
        lua_pop(L, 1);
    }
    int np;
    d.pos_labels = opt_strings(L, 1, "positions", &np, 0);
    check_len(L, "positions", np, d.n_pos, "bypass (rows)");
    int ty = get(L, "best");
    if (ty == LUA_TTABLE) {
        static const char *const best_fields[] = {"pos", "layer", NULL};
        up_lua_check_keys(L, -1, best_fields, "plot.selection: best");
        lua_getfield(L, -1, "pos");
        lua_getfield(L, -2, "layer");
        int ok1, ok2;
        lua_Integer p = lua_tointegerx(L, -2, &ok1), l = lua_tointegerx(L, -1, &ok2);
        if (!ok1 || !ok2 || p < 1 || p > d.n_pos || l < 0 || l >= d.n_layers)
            field_error(L, "best", lua_pushfstring(L, "must be {pos = 1..%d, layer = 0..%d}", d.n_pos, d.n_layers - 1));
        d.best = (int)((p - 1) * d.n_layers + l);
        lua_pop(L, 2);
    } else if (ty != LUA_TNIL) {
        field_error(L, "best", "must be {pos = row, layer = layer}");
    }
    lua_pop(L, 1);
    d.max_kl = opt_number(L, "max_kl", NAN);
    d.min_induce = opt_number(L, "min_induce", NAN);
    d.max_layer = opt_number(L, "max_layer", NAN);
    up_error e = {0};
    return finish(L, up_plot_selection(path, &st, &d, &e), &e, path);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int l_info(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    up_png_image img;
    up_error e = {0};
    if (up_png_read(path, &img, &e)) return luaL_error(L, "%s", e.msg);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, img.w), lua_setfield(L, -2, "width");
    lua_pushinteger(L, img.h), lua_setfield(L, -2, "height");
    lua_createtable(L, 0, img.n_text);
    for (int i = 0; i < img.n_text; i++) {
        lua_pushstring(L, img.values[i]);
        lua_setfield(L, -2, img.keys[i]);
    }
    lua_setfield(L, -2, "text");
    size_t n = (size_t)img.w * (size_t)img.h, ink = 0;
    uint32_t *px = lua_newuserdatauv(L, n * sizeof *px, 0); /* Lua-owned: a raise leaks nothing */
    for (size_t i = 0; i < n; i++) {
        memcpy(&px[i], img.pixels + 4 * i, 4);
        ink += px[i] != px[0];
    }
    qsort(px, n, sizeof *px, cmp_u32);
    size_t colors = n > 0;
    for (size_t i = 1; i < n; i++) colors += px[i] != px[i - 1];
    lua_pop(L, 1);
    lua_pushnumber(L, n ? (double)ink / (double)n : 0), lua_setfield(L, -2, "ink");
    lua_pushinteger(L, (lua_Integer)colors), lua_setfield(L, -2, "colors");
    up_png_image_free(&img);
    return 1;
}

/* The figure types, one row each: upstream.plot.<name> and X:figure("<name>", ...) are made
 * from this table, so a new figure type is its l_<name> above and a row here (plot.h lists
 * the other steps). */
static const luaL_Reg figures[] = {
    {"bars", l_bars},
    {"heatmap", l_heatmap},
    {"matrix", l_matrix},
    {"lines", l_lines},
    {"groups", l_groups},
    {"scatter", l_scatter},
    {"selection", l_selection},
    {NULL, NULL},
};

void up_lua_register_plot(lua_State *L) {
    luaL_newlib(L, figures);
    lua_pushcfunction(L, l_info); /* not a figure: reads one back */
    lua_setfield(L, -2, "info");
    lua_setfield(L, -2, "plot");
}
