/* Lua bindings of the SAE trainer (core/sae_train.h):
 *
 *   upstream.train_sae(X, opts)        -> Sae, report
 *        X: Tensor (n, d) of activations. opts (all optional but d_sae):
 *          d_sae, arch = "jumprelu"|"relu" (default "jumprelu"), sparsity_coef, sparsity_warmup,
 *          dec_norm = "unit"|"penalty", init_dec_norm, lr, lr_warmup, lr_decay, beta1, beta2,
 *          adam_eps, grad_clip, batch, steps, seed, normalize, center_input,
 *          b_dec_init = "mean"|"median"|"zero", bandwidth, init_threshold, dead_window,
 *          resample_every, resample_until, log_every,
 *          progress = function(p) end  (p: step, steps, loss, mse, l0, fvu, dead_fraction, lr,
 *                                       sparsity_coef, resampled; return false to stop),
 *          layer = L (hook blocks.L.hook_resid_post) or hook = "name",
 *          out = path, format = "gemmascope"|"saelens" (default "gemmascope"), compress = bool.
 *        Unset lr_decay and sparsity_warmup follow steps (20% and 10% of it).
 *        The SAE is written to opts.out (GemmaScope: the .npz itself when out ends in ".npz",
 *        else out/params.npz; SAELens: the directory out) and returned loaded from there
 *        as upstream.sae loads it, so it is the same userdata as any loaded SAE. Without out it is
 *        written to a temporary directory that is removed once loaded.
 *        report: fvu, fve, mse, mean_l0, n_dead, dead_fraction, steps, resampled, scale,
 *        final_loss, path (nil without out).
 *   upstream.collect_activations(model, {ids...}, layer[, {max_rows = N, batch = 8,
 *                                progress = function(done, total)}])
 *                                      -> Tensor (n, d_model) of blocks.{layer}.hook_resid_post,
 *                                         every slot but BOS and padding, in order; progress is
 *                                         called after each batch with the sequences done
 *   upstream.auroc(scores, labels)     -> number (NaN when a class is empty); scores a Tensor or
 *                                         a table of numbers, labels a table of booleans/numbers
 *                                         (non-zero and true are positive) or a Tensor
 *   upstream.best_auroc(acts, labels)  -> latent (0-based), auroc, Tensor (d_sae) of all AUROCs
 * The Sae's own methods (sae:pre, sae:save_npz, ...) are in lua_sae.c.
 * Error rule: misuse raises with luaL_argerror; failures (training, I/O) raise with the core
 * message. A progress callback that errors stops training and its error is raised. */
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "binding.h"
#include "base/fs.h"
#include "engine/model.h"
#include "sae/sae.h"
#include "train/sae_train.h"

/* --- train_sae ------------------------------------------------------------------------- */

static const char *const train_keys[] = {
    "d_sae", "arch", "sparsity_coef", "sparsity_warmup", "dec_norm", "init_dec_norm", "lr",
    "lr_warmup", "lr_decay", "beta1", "beta2", "adam_eps", "grad_clip", "batch", "steps", "seed",
    "normalize", "center_input", "b_dec_init", "bandwidth", "init_threshold", "dead_window",
    "resample_every", "resample_until", "log_every", "progress", "layer", "hook", "out", "format",
    "compress", NULL};

static int opt_field(lua_State *L, int idx, const char *key) {
    lua_getfield(L, idx, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

static void opt_int(lua_State *L, int idx, const char *key, int *out) {
    if (!opt_field(L, idx, key)) return;
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < INT32_MIN || v > INT32_MAX)
        luaL_argerror(L, idx, lua_pushfstring(L, "opts.%s must be an integer", key));
    *out = (int)v;
    lua_pop(L, 1);
}

static void opt_num(lua_State *L, int idx, const char *key, double *out) {
    if (!opt_field(L, idx, key)) return;
    int ok;
    double v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_argerror(L, idx, lua_pushfstring(L, "opts.%s must be a number", key));
    *out = v;
    lua_pop(L, 1);
}

static void opt_bool(lua_State *L, int idx, const char *key, int *out) {
    if (!opt_field(L, idx, key)) return;
    if (!lua_isboolean(L, -1)) luaL_argerror(L, idx, lua_pushfstring(L, "opts.%s must be a boolean", key));
    *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
}

/* One of names (NULL-terminated); returns its index, or dflt when the key is absent. */
static int opt_enum(lua_State *L, int idx, const char *key, const char *const *names, int dflt) {
    if (!opt_field(L, idx, key)) return dflt;
    const char *s = lua_tostring(L, -1);
    for (int i = 0; s && names[i]; i++)
        if (!strcmp(s, names[i])) {
            lua_pop(L, 1);
            return i;
        }
    return luaL_argerror(L, idx, lua_pushfstring(L, "opts.%s: unknown value %s", key, s ? s : "(not a string)"));
}

typedef struct progress_ctx {
    lua_State *L;
    int fn;        /* stack index of the progress function */
    int failed;    /* the function raised: its message is at stack index msg */
    int stopped;   /* it returned false */
} progress_ctx;

static int progress_thunk(const up_sae_train_progress *p, void *user) {
    progress_ctx *c = user;
    lua_State *L = c->L;
    lua_pushvalue(L, c->fn);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, p->step), lua_setfield(L, -2, "step");
    lua_pushinteger(L, p->steps), lua_setfield(L, -2, "steps");
    lua_pushnumber(L, p->loss), lua_setfield(L, -2, "loss");
    lua_pushnumber(L, p->mse), lua_setfield(L, -2, "mse");
    lua_pushnumber(L, p->l0), lua_setfield(L, -2, "l0");
    lua_pushnumber(L, p->fvu), lua_setfield(L, -2, "fvu");
    lua_pushnumber(L, p->dead_fraction), lua_setfield(L, -2, "dead_fraction");
    lua_pushnumber(L, p->lr), lua_setfield(L, -2, "lr");
    lua_pushnumber(L, p->sparsity_coef), lua_setfield(L, -2, "sparsity_coef");
    lua_pushinteger(L, p->resampled), lua_setfield(L, -2, "resampled");
    /* pcall: a Lua error must not unwind through the trainer, which owns its memory. */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        c->failed = 1; /* the message stays on the stack for the caller to raise */
        return 1;
    }
    int stop = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    c->stopped = stop;
    return stop;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int l_train_sae(lua_State *L) {
    const up_lua_tensor *X = up_lua_tensor_check(L, 1);
    if (X->ndim != 2) return luaL_argerror(L, 1, "expected a Tensor (n, d) of activations");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    up_lua_check_keys(L, 2, train_keys, "opts");
    int d_sae = 0;
    opt_int(L, 2, "d_sae", &d_sae);
    if (d_sae < 1) return luaL_argerror(L, 2, "opts.d_sae (a positive integer) is required");
    static const char *const archs[] = {"jumprelu", "relu", NULL};
    up_sae_arch arch = opt_enum(L, 2, "arch", archs, 0) == 0 ? UP_SAE_JUMPRELU : UP_SAE_RELU;
    up_sae_train_opts o = up_sae_train_opts_default(arch, d_sae);
    opt_int(L, 2, "steps", &o.steps);
    o.lr_decay = o.steps / 5, o.sparsity_warmup = o.steps / 10;
    opt_num(L, 2, "sparsity_coef", &o.sparsity_coef);
    opt_int(L, 2, "sparsity_warmup", &o.sparsity_warmup);
    static const char *const norms[] = {"unit", "penalty", NULL};
    o.dec_norm = (up_sae_dec_norm)opt_enum(L, 2, "dec_norm", norms, (int)o.dec_norm);
    opt_num(L, 2, "init_dec_norm", &o.init_dec_norm);
    opt_num(L, 2, "lr", &o.lr);
    opt_int(L, 2, "lr_warmup", &o.lr_warmup);
    opt_int(L, 2, "lr_decay", &o.lr_decay);
    opt_num(L, 2, "beta1", &o.beta1);
    opt_num(L, 2, "beta2", &o.beta2);
    opt_num(L, 2, "adam_eps", &o.adam_eps);
    opt_num(L, 2, "grad_clip", &o.grad_clip);
    opt_int(L, 2, "batch", &o.batch);
    int seed = (int)o.seed;
    opt_int(L, 2, "seed", &seed);
    o.seed = (uint64_t)(uint32_t)seed;
    opt_bool(L, 2, "normalize", &o.normalize);
    opt_bool(L, 2, "center_input", &o.center_input);
    static const char *const inits[] = {"mean", "median", "zero", NULL};
    o.b_dec_init = (up_sae_bdec_init)opt_enum(L, 2, "b_dec_init", inits, (int)o.b_dec_init);
    opt_num(L, 2, "bandwidth", &o.bandwidth);
    opt_num(L, 2, "init_threshold", &o.init_threshold);
    double window = 0;
    opt_num(L, 2, "dead_window", &window);
    o.dead_window = (int64_t)window;
    opt_int(L, 2, "resample_every", &o.resample_every);
    opt_int(L, 2, "resample_until", &o.resample_until);
    opt_int(L, 2, "log_every", &o.log_every);
    char hook[UP_SAE_HOOK_MAX] = "";
    int layer = -1;
    opt_int(L, 2, "layer", &layer);
    if (layer >= 0) snprintf(hook, sizeof hook, "blocks.%d.hook_resid_post", layer);
    if (opt_field(L, 2, "hook")) {
        const char *h = lua_tostring(L, -1);
        if (!h || strlen(h) >= sizeof hook) return luaL_argerror(L, 2, "opts.hook must be a hook name");
        strcpy(hook, h);
        lua_pop(L, 1);
    }
    o.hook = hook[0] ? hook : NULL;
    static const char *const formats[] = {"gemmascope", "saelens", NULL};
    int saelens = opt_enum(L, 2, "format", formats, 0) == 1;
    int compress = 0;
    opt_bool(L, 2, "compress", &compress);
    const char *out = NULL;
    if (opt_field(L, 2, "out")) {
        out = lua_tostring(L, -1);
        if (!out || !out[0]) return luaL_argerror(L, 2, "opts.out must be a path");
        /* stays at index 3, which keeps the string alive */
    } else {
        lua_pushnil(L);
    }
    progress_ctx pc = {L, 0, 0, 0};
    if (opt_field(L, 2, "progress")) {
        if (!lua_isfunction(L, -1)) return luaL_argerror(L, 2, "opts.progress must be a function");
        pc.fn = lua_gettop(L);
        o.progress = progress_thunk, o.user = &pc;
    }

    up_sae *sae = NULL;
    up_sae_train_report rep;
    up_error e = {0};
    up_status st = up_sae_train(X->data, X->shape[0], (int)X->shape[1], &o, &sae, &rep, &e);
    if (pc.failed) return lua_error(L); /* the callback's own error, on top of the stack */
    if (st) return luaL_error(L, "%s", e.msg);

    /* Write, then load as upstream.sae does, so the SAE is the usual userdata. */
    char tmpdir[64] = "", path[4200];
    if (!out) {
        strcpy(tmpdir, "/tmp/upstream_sae_XXXXXX");
        if (!mkdtemp(tmpdir)) {
            up_sae_free(sae);
            return luaL_error(L, "cannot create a temporary directory for the SAE");
        }
    }
    const char *base = out ? out : tmpdir;
    if (saelens) {
        snprintf(path, sizeof path, "%s", base);
        st = up_sae_save(sae, path, &e);
    } else if (out && ends_with(out, ".npz")) {
        snprintf(path, sizeof path, "%s", out);
        st = up_sae_save_npz(sae, path, compress ? UP_NPZ_DEFLATED : UP_NPZ_STORED, &e);
    } else {
        if (up_mkdirs(base) != 0) {
            up_sae_free(sae);
            return luaL_error(L, "cannot create directory %s", base);
        }
        snprintf(path, sizeof path, "%s/params.npz", base);
        st = up_sae_save_npz(sae, path, compress ? UP_NPZ_DEFLATED : UP_NPZ_STORED, &e);
    }
    up_sae_free(sae);
    if (st) {
        if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return luaL_error(L, "%s", e.msg);
    }
    up_sae **slot = up_lua_push_sae_slot(L);
    st = up_sae_load(slot, path, UP_SAE_ALL, &e);
    if (tmpdir[0]) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (st) return luaL_error(L, "%s", e.msg);
    up_sae *loaded = *slot;
    /* A GemmaScope file outside a layer_L directory does not say its hook: set it. */
    if (o.hook && strcmp(loaded->hook, o.hook)) {
        if (layer >= 0) up_sae_set_hook(loaded, layer, NULL);
        else {
            snprintf(loaded->hook, sizeof loaded->hook, "%s", o.hook);
            int l;
            loaded->layer = sscanf(o.hook, "blocks.%d.", &l) == 1 ? l : -1;
        }
    }
    lua_createtable(L, 0, 11);
    lua_pushnumber(L, rep.fvu), lua_setfield(L, -2, "fvu");
    lua_pushnumber(L, 1 - rep.fvu), lua_setfield(L, -2, "fve");
    lua_pushnumber(L, rep.mse), lua_setfield(L, -2, "mse");
    lua_pushnumber(L, rep.mean_l0), lua_setfield(L, -2, "mean_l0");
    lua_pushinteger(L, rep.n_dead), lua_setfield(L, -2, "n_dead");
    lua_pushnumber(L, rep.dead_fraction), lua_setfield(L, -2, "dead_fraction");
    lua_pushinteger(L, rep.steps), lua_setfield(L, -2, "steps");
    lua_pushinteger(L, rep.resampled), lua_setfield(L, -2, "resampled");
    lua_pushnumber(L, rep.scale), lua_setfield(L, -2, "scale");
    lua_pushnumber(L, rep.final_loss), lua_setfield(L, -2, "final_loss");
    if (out) lua_pushstring(L, path), lua_setfield(L, -2, "path");
    return 2;
}

/* --- collect_activations ------------------------------------------------------------------ */

/* With opts.progress the sequences are collected a batch at a time (the core's own batches: the
 * next `batch` non-empty sequences, in order, so the rows are the same bits) and the function
 * is called after each as progress(done, total) sequences. It runs protected, as a raise must
 * not unwind through the core; its error is raised once the rows are freed. */
static int collect_in_batches(lua_State *L, up_model *m, const int32_t **ids, const int *lens, int n, int layer,
                              int64_t max_rows, int batch, int fn) {
    const int d = m->cfg.d_model, bos = m->cfg.bos_id;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < lens[i]; j++) total += ids[i][j] != bos;
    const int64_t cap = max_rows > 0 && max_rows < total ? max_rows : total;
    float *all = malloc((size_t)(cap > 0 ? cap : 1) * d * sizeof(float));
    if (!all) return luaL_error(L, "collect_activations: out of memory for %lld rows", (long long)cap);
    int64_t n_all = 0;
    int failed = 0;
    up_error e = {0};
    up_status st = UP_OK;
    for (int i0 = 0; i0 < n && n_all < cap && !failed;) {
        int i1 = i0, rows = 0;
        while (i1 < n && rows < batch) rows += lens[i1++] > 0;
        float *part;
        int64_t n_part;
        st = up_sae_collect_resid(m, ids + i0, lens + i0, i1 - i0, layer, cap - n_all, batch, &part, &n_part, &e);
        if (st) break;
        if (n_part) memcpy(all + (size_t)n_all * d, part, (size_t)n_part * d * sizeof(float));
        free(part);
        n_all += n_part, i0 = i1;
        lua_pushvalue(L, fn);
        lua_pushinteger(L, i0);
        lua_pushinteger(L, n);
        failed = lua_pcall(L, 2, 0, 0) != LUA_OK;
    }
    if (failed || st) {
        free(all);
        return failed ? lua_error(L) : luaL_error(L, "%s", e.msg);
    }
    int64_t shape[2] = {n_all, d};
    up_lua_tensor *t = up_lua_tensor_new(L, 2, shape); /* raises only when out of memory */
    if (n_all) memcpy(t->data, all, (size_t)n_all * d * sizeof(float));
    free(all);
    return 1;
}

static int l_collect(lua_State *L) {
    up_model *m = up_lua_check_model(L, 1);
    int layer = (int)luaL_checkinteger(L, 3);
    if (layer < 0 || layer >= m->cfg.n_layers)
        return luaL_argerror(L, 3, lua_pushfstring(L, "layer must be in [0, %d)", m->cfg.n_layers));
    lua_Integer max_rows = 0, batch = 8;
    lua_settop(L, 4);
    int fn = 0;
    if (!lua_isnil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        static const char *const fields[] = {"max_rows", "batch", "progress", NULL};
        up_lua_check_keys(L, 4, fields, "opts");
        lua_getfield(L, 4, "max_rows");
        max_rows = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 4, "batch");
        batch = luaL_optinteger(L, -1, 8);
        lua_pop(L, 2);
        if (batch < 1 || batch > 4096) return luaL_argerror(L, 4, "batch must be in [1, 4096]");
        lua_getfield(L, 4, "progress");
        if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
            return luaL_argerror(L, 4, "opts.progress must be a function(done, total)");
        if (lua_isfunction(L, -1)) fn = lua_gettop(L);
    }
    const int32_t **ids;
    int *lens;
    int n = up_lua_read_id_lists(L, 2, NULL, &ids, &lens);
    if (fn) return collect_in_batches(L, m, ids, lens, n, layer, max_rows, (int)batch, fn);
    float *rows;
    int64_t n_rows;
    up_error e = {0};
    if (up_sae_collect_resid(m, (const int32_t *const *)ids, lens, n, layer, max_rows, (int)batch, &rows, &n_rows, &e))
        return luaL_error(L, "%s", e.msg);
    int64_t shape[2] = {n_rows, m->cfg.d_model};
    up_lua_tensor *t = up_lua_tensor_new(L, 2, shape); /* raises only when out of memory */
    if (n_rows) memcpy(t->data, rows, (size_t)n_rows * m->cfg.d_model * sizeof(float));
    free(rows);
    return 1;
}

/* --- AUROC ------------------------------------------------------------------------------------ */

/* labels at idx, n of them, into GC-owned userdata (pushed). */
static int *check_labels(lua_State *L, int idx, int64_t n) {
    int *lab = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(int), 0);
    up_lua_tensor *t = luaL_testudata(L, idx, UP_TENSOR_MT);
    if (t) {
        if (t->numel != n) luaL_argerror(L, idx, lua_pushfstring(L, "expected %d labels", (int)n));
        for (int64_t i = 0; i < n; i++) lab[i] = t->data[i] != 0;
        return lab;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    if (luaL_len(L, idx) != n) luaL_argerror(L, idx, lua_pushfstring(L, "expected %d labels", (int)n));
    for (int64_t i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        lab[i] = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : lua_tonumber(L, -1) != 0;
        lua_pop(L, 1);
    }
    return lab;
}

static int l_auroc(lua_State *L) {
    up_lua_tensor *t = luaL_testudata(L, 1, UP_TENSOR_MT);
    int n = t ? (int)t->numel : (luaL_checktype(L, 1, LUA_TTABLE), (int)luaL_len(L, 1));
    const float *scores = up_lua_read_vector(L, 1, n, "scores");
    const int *lab = check_labels(L, 2, n);
    lua_pushnumber(L, up_sae_auroc(scores, lab, n));
    return 1;
}

static int l_best_auroc(lua_State *L) {
    const up_lua_tensor *a = up_lua_tensor_check(L, 1);
    if (a->ndim != 2) return luaL_argerror(L, 1, "expected a Tensor (n, d_sae) of activations");
    int64_t n = a->shape[0];
    int S = (int)a->shape[1];
    const int *lab = check_labels(L, 2, n);
    int64_t shape[1] = {S};
    up_lua_tensor *all = up_lua_tensor_new(L, 1, shape);
    double *aucs = lua_newuserdatauv(L, (size_t)(S > 0 ? S : 1) * sizeof(double), 0);
    int best;
    double best_auc;
    up_error e = {0};
    if (up_sae_best_auroc(a->data, lab, n, S, aucs, &best, &best_auc, &e)) return luaL_error(L, "%s", e.msg);
    for (int k = 0; k < S; k++) all->data[k] = (float)aucs[k];
    lua_pop(L, 1);
    lua_pushinteger(L, best);
    lua_pushnumber(L, best_auc);
    lua_rotate(L, -3, 2); /* latent, auroc, tensor */
    return 3;
}

void up_lua_register_sae_train(lua_State *L) {
    static const luaL_Reg fns[] = {{"train_sae", l_train_sae},
                                   {"collect_activations", l_collect},
                                   {"auroc", l_auroc},
                                   {"best_auroc", l_best_auroc},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
