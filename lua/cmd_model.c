/* Subcommands that run a checkpoint: info, dump, generate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "text/chat.h"
#include "cli.h"
#include "engine/forward.h"
#include "engine/generate.h"
#include "engine/hooks.h"
#include "engine/model.h"
#include "formats/safetensors.h"
#include "text/tokenizer.h"

/* ---- info ------------------------------------------------------------------ */

int up_cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) {
            printf("usage: upstream info DIR\n"
                   "Prints a checkpoint's architecture, parameter count, dtypes and the memory it needs.\n");
            return 0;
        }
        if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "upstream info: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
        dir = argv[i];
    }
    if (!dir) {
        fprintf(stderr, "usage: upstream info DIR\n");
        return 2;
    }
    up_error e = {0};
    up_model *m = NULL;
    if (up_model_load(&m, dir, &e)) return up_cli_fail("info", &e);
    const up_model_config *c = &m->cfg;
    int64_t params = up_model_param_count(m), bytes = up_model_weight_bytes(m);
    double kv_per_token = 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * sizeof(float);
    printf("model          %s\n", dir);
    printf("architecture   Gemma2ForCausalLM\n");
    printf("layers         %d\n", c->n_layers);
    printf("d_model        %d\n", c->d_model);
    printf("d_mlp          %d\n", c->d_mlp);
    printf("heads          %d query / %d key-value, head_dim %d\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("vocab          %d\n", c->vocab_size);
    printf("sliding window %d (even layers)\n", c->sliding_window);
    printf("softcaps       attention %g, final %g\n", c->attn_softcap, c->final_softcap);
    printf("query scalar   %g\n", c->query_pre_attn_scalar);
    printf("rope theta     %g\n", c->rope_theta);
    printf("rms_norm_eps   %g\n", c->rms_norm_eps);
    printf("tied embedding %s\n", c->tie_word_embeddings ? "yes" : "no");
    printf("special ids    bos %d, eos %d, pad %d\n", c->bos_id, c->eos_id, c->pad_id);
    printf("parameters     %lld (%.3f B)\n", (long long)params, params / 1e9);
    printf("storage dtype  %s (embedding %s)\n", up_dtype_name(m->storage), up_dtype_name(m->embed.dtype));
    printf("weights        %.1f MB (memory-mapped)\n", bytes / 1e6);
    printf("KV cache       %.1f KB per token per row (fp32)\n", kv_per_token / 1e3);
    up_model_free(m);
    return 0;
}

/* ---- dump ------------------------------------------------------------------ */

/* Adds everything to w and closes it (atomically renamed into place); aborts it on failure. */
static up_status write_dump(up_safetensors_writer *w, const int32_t *ids, int T, const up_model_config *c,
                            const up_hook *hooks, const up_capture *caps, int n_hooks, const float *logits,
                            up_logits_mode mode, const up_cli_input *in, up_error *e) {
    int64_t shape[2] = {T, c->d_model}, lshape[2] = {T, c->vocab_size};
    up_status st = up_safetensors_writer_add(w, "input_ids", UP_DTYPE_I32, 1, shape, ids, e);
    for (int i = 0; i < n_hooks && !st; i++) {
        char name[64];
        up_hook_point_name(hooks[i].point, name, sizeof name);
        st = up_safetensors_writer_add(w, name, UP_DTYPE_F32, 2, shape, caps[i].dst, e);
    }
    if (!st && logits) {
        st = mode == UP_LOGITS_ALL ? up_safetensors_writer_add(w, "logits", UP_DTYPE_F32, 2, lshape, logits, e)
                                   : up_safetensors_writer_add(w, "logits", UP_DTYPE_F32, 1, lshape + 1, logits, e);
    }
    if (!st) st = up_safetensors_writer_metadata(w, "model", in->model_dir, e);
    if (!st && in->prompt) st = up_safetensors_writer_metadata(w, "prompt", in->prompt, e);
    if (st) {
        up_safetensors_writer_abort(w);
        return st;
    }
    return up_safetensors_writer_close(w, e);
}

static void dump_usage(FILE *f) {
    fprintf(f, "usage: upstream dump [--model DIR] (--ids 2,106,... | --prompt TEXT [--chat]) --out FILE.safetensors\n"
               "                     [--hooks all|NAME,...] [--logits last|all|none] [--threads N]\n"
               "Runs one sequence and writes input_ids (I32 [T]), each requested hook as F32 [T, d] under\n"
               "its TransformerLens name (hook_embed, blocks.L.hook_resid_pre|attn_out|resid_mid|mlp_out|\n"
               "resid_post, ln_final.hook_normalized) and logits (F32 [V] for last, [T, V] for all).\n"
               "Defaults: --hooks all, --logits last. --prompt adds BOS; --chat applies the Gemma template.\n"
               "With --logits none the pass stops after the last requested hook.\n");
}

int up_cmd_dump(int argc, char **argv) {
    up_cli_input in = {0};
    const char *out = NULL, *hooks_arg = "all", *logits_arg = "last";
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) {
            dump_usage(stdout);
            return 0;
        }
        if (up_cli_input_opt(argc, argv, &i, &in, &bad)) continue;
        if (up_cli_opt(argc, argv, &i, "--out", &out, &bad)) continue;
        if (up_cli_opt(argc, argv, &i, "--hooks", &hooks_arg, &bad)) continue;
        if (up_cli_opt(argc, argv, &i, "--logits", &logits_arg, &bad)) continue;
        fprintf(stderr, "upstream dump: unknown option '%s'\n", argv[i]);
        bad = 1;
    }
    if (!in.model_dir) in.model_dir = up_cli_default_model();
    if (bad || !out) {
        if (!bad) fprintf(stderr, "upstream dump: --out is required\n");
        dump_usage(stderr);
        return 2;
    }
    up_logits_mode mode;
    if (!strcmp(logits_arg, "last")) mode = UP_LOGITS_LAST;
    else if (!strcmp(logits_arg, "all")) mode = UP_LOGITS_ALL;
    else if (!strcmp(logits_arg, "none")) mode = UP_LOGITS_NONE;
    else {
        fprintf(stderr, "upstream dump: --logits must be last, all or none (got '%s')\n", logits_arg);
        return 2;
    }
    up_blas_set_threads(in.threads);
    up_error e = {0};
    up_model *m = NULL;
    if (up_model_load(&m, in.model_dir, &e)) return up_cli_fail("dump", &e);
    const up_model_config *c = &m->cfg;
    up_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int T = 0, rc = up_cli_resolve_ids("dump", &in, m, &tok, &ids, &T);
    up_hook *hooks = NULL;
    up_capture *caps = NULL;
    float *logits = NULL;
    up_state *s = NULL;
    up_safetensors_writer *w = NULL;
    int n_points = up_hook_point_count(c->n_layers), n_hooks = 0;
    if (rc) goto done;
    hooks = calloc((size_t)n_points + 1, sizeof *hooks);
    caps = calloc((size_t)n_points, sizeof *caps);
    if (!strcmp(hooks_arg, "all")) {
        for (int i = 0; i < n_points; i++) hooks[n_hooks++].point = up_hook_point_at(c->n_layers, i);
    } else if (strcmp(hooks_arg, "none") != 0) {
        char *list = strdup(hooks_arg), *save = NULL;
        for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
            up_hook_point p;
            if (up_hook_point_parse(name, c->n_layers, &p) || n_hooks == n_points) {
                fprintf(stderr, "upstream dump: unknown hook point '%s' (this model has layers 0..%d; e.g. "
                                "blocks.0.hook_resid_post)\n", name, c->n_layers - 1);
                free(list);
                rc = 2;
                goto done;
            }
            hooks[n_hooks++].point = p;
        }
        free(list);
    }
    for (int i = 0; i < n_hooks; i++) {
        caps[i] = (up_capture){calloc((size_t)T * c->d_model, sizeof(float)), (size_t)T * c->d_model};
        hooks[i] = up_hook_capture(hooks[i].point, &caps[i]);
    }
    int n_registered = n_hooks;
    if (mode == UP_LOGITS_NONE && n_hooks > 0) {
        /* Nothing above the last requested point is needed: stop there. */
        int last = 0;
        for (int i = 1; i < n_hooks; i++) {
            if (up_hook_point_index(hooks[i].point, c->n_layers) > up_hook_point_index(hooks[last].point, c->n_layers))
                last = i;
        }
        hooks[n_registered++] = up_hook_stop(hooks[last].point);
    }
    up_hooks hk = {hooks, n_registered};
    size_t n_logits = mode == UP_LOGITS_ALL ? (size_t)T * c->vocab_size : (size_t)c->vocab_size;
    if (mode != UP_LOGITS_NONE) logits = malloc(n_logits * sizeof(float));
    if (up_state_init(&s, m, 1, T, &e) || up_forward(s, ids, NULL, NULL, 1, T, &hk, logits, mode, &e) ||
        up_safetensors_writer_open(&w, out, &e)) {
        rc = up_cli_fail("dump", &e);
        goto done;
    }
    if (write_dump(w, ids, T, c, hooks, caps, n_hooks, logits, mode, &in, &e)) rc = up_cli_fail("dump", &e);
    w = NULL; /* closed or aborted by write_dump */
done:
    up_safetensors_writer_abort(w);
    for (int i = 0; caps && i < n_hooks; i++) free(caps[i].dst);
    free(caps);
    free(hooks);
    free(logits);
    free(ids);
    up_state_free(s);
    up_tokenizer_free(tok);
    up_model_free(m);
    return rc;
}

/* ---- generate --------------------------------------------------------------- */

static void generate_usage(FILE *f) {
    fprintf(f, "usage: upstream generate [--model DIR] (--ids 2,106,... | --prompt TEXT [--chat])\n"
               "                         [--max-new-tokens N] [--print-ids] [--threads N]\n"
               "Greedy completion with the KV cache. Stops at <end_of_turn> or eos, or after N new tokens\n"
               "(default 64). Prints the completion; --print-ids also prints the generated ids.\n");
}

int up_cmd_generate(int argc, char **argv) {
    up_cli_input in = {0};
    const char *max_arg = NULL;
    int print_ids = 0, bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) {
            generate_usage(stdout);
            return 0;
        }
        if (up_cli_input_opt(argc, argv, &i, &in, &bad)) continue;
        if (up_cli_opt(argc, argv, &i, "--max-new-tokens", &max_arg, &bad)) continue;
        if (up_cli_flag(argv, i, "--print-ids")) {
            print_ids = 1;
            continue;
        }
        fprintf(stderr, "upstream generate: unknown option '%s'\n", argv[i]);
        bad = 1;
    }
    if (!in.model_dir) in.model_dir = up_cli_default_model();
    if (bad) {
        generate_usage(stderr);
        return 2;
    }
    int max_new = 64;
    if (max_arg) {
        char *end;
        long v = strtol(max_arg, &end, 10);
        if (*end || v < 0 || v > 1 << 20) {
            fprintf(stderr, "upstream generate: --max-new-tokens must be a non-negative integer\n");
            return 2;
        }
        max_new = (int)v;
    }
    up_blas_set_threads(in.threads);
    up_error e = {0};
    up_model *m = NULL;
    if (up_model_load(&m, in.model_dir, &e)) return up_cli_fail("generate", &e);
    up_tokenizer *tok = NULL;
    int32_t *ids = NULL, *out = NULL;
    int T = 0, n_out = 0, rc = up_cli_resolve_ids("generate", &in, m, &tok, &ids, &T);
    up_state *s = NULL;
    if (rc) goto done;
    int32_t stops[8];
    int n_stop = 0;
    stops[n_stop++] = m->cfg.eos_id;
    if (!tok) {
        /* --ids without text: the tokenizer, if the checkpoint has one, still names <end_of_turn>. */
        up_error ignored = {0};
        if (up_tokenizer_load_dir(&tok, in.model_dir, &ignored)) tok = NULL;
    }
    if (tok) {
        const up_chat_template *tpl = up_chat_template_find("gemma");
        n_stop = up_chat_stop_ids(tok, tpl, stops, 8);
    }
    out = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof *out);
    const int32_t *prompts[1] = {ids};
    up_generate_opts opts = {.max_new_tokens = max_new, .stop_ids = stops, .n_stop = n_stop};
    if (up_state_init(&s, m, 1, T + max_new, &e) || up_generate(s, prompts, &T, 1, &opts, out, &n_out, &e)) {
        rc = up_cli_fail("generate", &e);
        goto done;
    }
    if (tok) {
        char *text = NULL;
        if (up_tokenizer_decode(tok, out, n_out, 1, &text, &e)) {
            rc = up_cli_fail("generate", &e);
            goto done;
        }
        printf("%s\n", text);
        free(text);
    } else if (!print_ids) {
        fprintf(stderr, "upstream generate: %s has no tokenizer.json; printing ids\n", in.model_dir);
        print_ids = 1;
    }
    if (print_ids) {
        for (int i = 0; i < n_out; i++) printf("%s%d", i ? "," : "", out[i]);
        printf("\n");
    }
done:
    free(ids);
    free(out);
    up_state_free(s);
    up_tokenizer_free(tok);
    up_model_free(m);
    return rc;
}
