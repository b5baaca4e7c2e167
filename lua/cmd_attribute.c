/* Subcommands of the seed method: attribute (rank SAE latents by the refusal gradient) and
 * directions (difference-in-means candidates). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "method/attribution.h"
#include "engine/blas.h"
#include "text/chat.h"
#include "cli.h"
#include "method/direction.h"
#include "base/fs.h"
#include "engine/model.h"
#include "formats/prompts.h"
#include "formats/safetensors.h"
#include "text/tokenizer.h"

static int parse_int(const char *cmd, const char *opt, const char *v, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < -1000000 || x > 1000000) {
        fprintf(stderr, "upstream %s: %s expects an integer, got '%s'\n", cmd, opt, v);
        return 2;
    }
    *out = (int)x;
    return 0;
}

/* ---- attribute -------------------------------------------------------------------- */

static void attribute_usage(FILE *f) {
    fprintf(f,
            "usage: upstream attribute [--model DIR] [--sae SAE] (--prompt TEXT [--chat] | --ids ...)\n"
            "         --direction FILE.npy|FILE.safetensors[:NAME] [--direction-index POS,LAYER]\n"
            "         [--source-layer l] --target-layer L [--positions last|all|i,j,...] [--top K]\n"
            "         [--score gradient|cosine|activation] [--include-bos] [--score-positions all|last|i,j,...]\n"
            "         [--format table|csv|json] [--per-token FILE.csv] [--threads N]\n"
            "Ranks SAE latents by S_k = mean_t W_dec[k]·dR/dh_l[t], R = sum over positions of <h_L[t], r>\n"
            "(r the unit direction, h_L = blocks.L.hook_resid_post, h_l the SAE's hook). Prints the top K\n"
            "(raise R) and bottom K (lower R). --source-layer defaults to the SAE's layer; --positions are\n"
            "token indices (negative from the end) where R is read, default last. --score-positions are\n"
            "the tokens S_k averages over (default all but BOS; e.g. the instruction's tokens only).\n"
            "--per-token writes\n"
            "RG[t,k] for the printed latents. A 3-d direction tensor (from `upstream directions`) needs\n"
            "--direction-index POS,LAYER (POS negative from the end, e.g. -1,10).\n"
            "Without --model: $UPSTREAM_MODEL or the built-in organism; an organism directory also\n"
            "supplies --sae, --direction and --target-layer.\n");
}

static int parse_positions(const char *v, int **out, int *n) {
    *out = NULL;
    *n = 0;
    if (!strcmp(v, "last")) return 0;
    if (!strcmp(v, "all")) return *n = -1, 0;
    int cap = 8;
    *out = malloc(cap * sizeof **out);
    const char *p = v;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p) return free(*out), *out = NULL, 2;
        if (*n == cap) *out = realloc(*out, (cap *= 2) * sizeof **out);
        (*out)[(*n)++] = (int)x;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return free(*out), *out = NULL, 2;
    }
    return *n ? 0 : 2;
}

static void print_piece(FILE *f, const up_tokenizer *tok, int32_t id, int csv) {
    const char *piece = tok ? up_tokenizer_piece(tok, id) : NULL;
    if (!piece) {
        fprintf(f, "%d", id);
        return;
    }
    if (csv) fputc('"', f);
    for (const char *c = piece; *c; c++) {
        if (*c == '"' && csv) fputs("\"\"", f);
        else if (*c == '\n') fputs("\\n", f);
        else fputc(*c, f);
    }
    if (csv) fputc('"', f);
}

int up_cmd_attribute(int argc, char **argv) {
    up_cli_input in = {0};
    const char *sae_path = NULL, *dir_spec = NULL, *dir_index = NULL, *src = NULL, *tgt = NULL, *pos_arg = "last",
               *top_arg = "10", *score_arg = "gradient", *format = "table", *per_token = NULL,
               *score_pos_arg = "all";
    int include_bos = 0, bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) return attribute_usage(stdout), 0;
        if (up_cli_input_opt(argc, argv, &i, &in, &bad)) continue;
        if (up_cli_opt(argc, argv, &i, "--sae", &sae_path, &bad) ||
            up_cli_opt(argc, argv, &i, "--direction", &dir_spec, &bad) ||
            up_cli_opt(argc, argv, &i, "--direction-index", &dir_index, &bad) ||
            up_cli_opt(argc, argv, &i, "--source-layer", &src, &bad) ||
            up_cli_opt(argc, argv, &i, "--target-layer", &tgt, &bad) ||
            up_cli_opt(argc, argv, &i, "--positions", &pos_arg, &bad) ||
            up_cli_opt(argc, argv, &i, "--score-positions", &score_pos_arg, &bad) ||
            up_cli_opt(argc, argv, &i, "--top", &top_arg, &bad) ||
            up_cli_opt(argc, argv, &i, "--score", &score_arg, &bad) ||
            up_cli_opt(argc, argv, &i, "--format", &format, &bad) ||
            up_cli_opt(argc, argv, &i, "--per-token", &per_token, &bad))
            continue;
        if (up_cli_flag(argv, i, "--include-bos")) {
            include_bos = 1;
            continue;
        }
        fprintf(stderr, "upstream attribute: unknown option '%s'\n", argv[i]);
        bad = 1;
    }
    if (!in.model_dir) in.model_dir = up_cli_default_model();
    up_cli_organism org;
    char tgt_buf[16];
    if ((!sae_path || !dir_spec || !tgt) && up_cli_organism_defaults(in.model_dir, &org)) {
        if (!sae_path) sae_path = org.sae;
        if (!dir_spec) dir_spec = org.direction;
        if (!tgt) snprintf(tgt_buf, sizeof tgt_buf, "%d", org.target_layer), tgt = tgt_buf;
    }
    if (bad || !sae_path || !dir_spec || !tgt) {
        if (!bad)
            fprintf(stderr, "upstream attribute: --sae, --direction and --target-layer are required (an organism "
                            "model directory supplies them)\n");
        attribute_usage(stderr);
        return 2;
    }
    int target, source = -1000, top, dpos = 0, dlayer = 0;
    if (parse_int("attribute", "--target-layer", tgt, &target) || parse_int("attribute", "--top", top_arg, &top) ||
        (src && parse_int("attribute", "--source-layer", src, &source)))
        return 2;
    if (dir_index && sscanf(dir_index, "%d,%d", &dpos, &dlayer) != 2) {
        fprintf(stderr, "upstream attribute: --direction-index expects POS,LAYER (e.g. -1,10)\n");
        return 2;
    }
    up_score_kind kind;
    if (up_score_kind_parse(score_arg, &kind)) {
        fprintf(stderr, "upstream attribute: --score must be gradient, cosine or activation\n");
        return 2;
    }
    if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json")) {
        fprintf(stderr, "upstream attribute: --format must be table, csv or json\n");
        return 2;
    }
    int *positions = NULL, n_positions = 0;
    if (parse_positions(pos_arg, &positions, &n_positions)) {
        fprintf(stderr, "upstream attribute: --positions must be last, all or a list like 3,-1\n");
        return 2;
    }
    /* --score-positions: all (every token but BOS, the default), last, or a list. */
    int *score_pos = NULL, n_score_pos = 0;
    if (parse_positions(score_pos_arg, &score_pos, &n_score_pos)) {
        free(positions);
        fprintf(stderr, "upstream attribute: --score-positions must be all, last or a list like 4,5,-1\n");
        return 2;
    }
    if (!strcmp(score_pos_arg, "last")) {
        score_pos = malloc(sizeof *score_pos);
        score_pos[0] = -1, n_score_pos = 1;
    } else if (n_score_pos < 0) {
        n_score_pos = 0;
    }
    up_blas_set_threads(in.threads);
    up_error e = {0};
    up_model *m = NULL;
    up_sae *sae = NULL;
    up_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    float *dir = NULL;
    int T = 0, rc = 0, *top_idx = NULL, *bot_idx = NULL;
    up_attribute_result res = {0};
    if (up_model_load(&m, in.model_dir, &e)) {
        rc = up_cli_fail("attribute", &e);
        goto done;
    }
    if (up_sae_load(&sae, sae_path, kind == UP_SCORE_ACTIVATION || per_token ? UP_SAE_ALL : UP_SAE_DECODER, &e) ||
        up_sae_check_model(sae, m->cfg.d_model, m->cfg.n_layers, &e)) {
        rc = up_cli_fail("attribute", &e);
        goto done;
    }
    if (source == -1000) {
        if (sae->layer < 0) {
            fprintf(stderr, "upstream attribute: the SAE does not name its layer; pass --source-layer\n");
            rc = 2;
            goto done;
        }
        source = sae->layer;
    }
    if (sae->layer < 0 && up_sae_set_hook(sae, source, &e)) {
        rc = up_cli_fail("attribute", &e);
        goto done;
    }
    if ((rc = up_cli_resolve_ids("attribute", &in, m, &tok, &ids, &T))) goto done;
    if (!tok) {
        up_error ignored = {0};
        if (up_tokenizer_load_dir(&tok, in.model_dir, &ignored)) tok = NULL;
    }
    dir = malloc((size_t)m->cfg.d_model * sizeof *dir);
    if (up_direction_load(dir_spec, m->cfg.d_model, dir_index != NULL, dpos, dlayer, dir, &e)) {
        rc = up_cli_fail("attribute", &e);
        goto done;
    }
    if (up_direction_normalize(dir, m->cfg.d_model) == 0) {
        fprintf(stderr, "upstream attribute: the direction is the zero vector\n");
        rc = 2;
        goto done;
    }
    if (n_positions < 0) { /* all */
        n_positions = T;
        positions = malloc((size_t)T * sizeof *positions);
        for (int t = 0; t < T; t++) positions[t] = t;
    }
    up_attribute_request req = {ids,  T,           source,   {target, dir, positions, n_positions}, kind, include_bos,
                                NULL, score_pos, n_score_pos};
    if (up_attribute(m, sae, &req, &res, &e)) {
        rc = up_cli_fail("attribute", &e);
        goto done;
    }
    const int K = sae->d_sae;
    top_idx = malloc((size_t)K * sizeof *top_idx);
    bot_idx = malloc((size_t)K * sizeof *bot_idx);
    int n_top = up_attribution_rank(res.scores, K, top, 1, top_idx);
    int n_bot = up_attribution_rank(res.scores, K, top, 0, bot_idx);
    if (!strcmp(format, "json")) {
        json_t *root = json_object(), *tops = json_array(), *bots = json_array();
        json_object_set_new(root, "model", json_string(in.model_dir));
        json_object_set_new(root, "sae", json_string(sae->path));
        json_object_set_new(root, "source_layer", json_integer(source));
        json_object_set_new(root, "target_layer", json_integer(target));
        json_object_set_new(root, "score", json_string(up_score_kind_name(kind)));
        json_object_set_new(root, "R", json_real(res.R));
        json_object_set_new(root, "n_tokens", json_integer(T));
        for (int i = 0; i < n_top; i++) {
            json_t *o = json_pack("{s:i, s:f}", "latent", top_idx[i], "score", res.scores[top_idx[i]]);
            json_array_append_new(tops, o);
        }
        for (int i = 0; i < n_bot; i++) {
            json_t *o = json_pack("{s:i, s:f}", "latent", bot_idx[i], "score", res.scores[bot_idx[i]]);
            json_array_append_new(bots, o);
        }
        json_object_set_new(root, "top", tops);
        json_object_set_new(root, "bottom", bots);
        json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
        printf("\n");
        json_decref(root);
    } else if (!strcmp(format, "csv")) {
        printf("side,rank,latent,score\n");
        for (int i = 0; i < n_top; i++) printf("top,%d,%d,%.9g\n", i + 1, top_idx[i], res.scores[top_idx[i]]);
        for (int i = 0; i < n_bot; i++) printf("bottom,%d,%d,%.9g\n", i + 1, bot_idx[i], res.scores[bot_idx[i]]);
    } else {
        printf("R = <h_%d, r> = %.6g over %d position(s); gradient at blocks.%d.hook_resid_post; %s scores\n", target,
               res.R, n_positions ? n_positions : 1, source, up_score_kind_name(kind));
        printf("\n  top (raise refusal)           bottom (lower refusal)\n");
        printf("  %-4s %8s %14s   %8s %14s\n", "rank", "latent", "score", "latent", "score");
        for (int i = 0; i < n_top || i < n_bot; i++) {
            printf("  %-4d", i + 1);
            if (i < n_top) printf(" %8d %14.6g", top_idx[i], res.scores[top_idx[i]]);
            else printf(" %8s %14s", "", "");
            if (i < n_bot) printf("   %8d %14.6g", bot_idx[i], res.scores[bot_idx[i]]);
            printf("\n");
        }
    }
    if (per_token) {
        char *tmp = up_fs_temp_path(per_token);
        FILE *f = tmp ? fopen(tmp, "w") : NULL;
        if (!f) {
            fprintf(stderr, "upstream attribute: cannot write %s\n", per_token);
            free(tmp);
            rc = 1;
            goto done;
        }
        fprintf(f, "position,token_id,token,included");
        for (int i = 0; i < n_top; i++) fprintf(f, ",rg_%d", top_idx[i]);
        for (int i = 0; i < n_bot; i++) fprintf(f, ",rg_%d", bot_idx[i]);
        if (res.acts) {
            for (int i = 0; i < n_top; i++) fprintf(f, ",act_%d", top_idx[i]);
            for (int i = 0; i < n_bot; i++) fprintf(f, ",act_%d", bot_idx[i]);
        }
        fprintf(f, "\n");
        for (int t = 0; t < T; t++) {
            fprintf(f, "%d,%d,", t, ids[t]);
            print_piece(f, tok, ids[t], 1);
            fprintf(f, ",%d", res.include[t]);
            for (int i = 0; i < n_top; i++) fprintf(f, ",%.9g", res.rg[(size_t)t * K + top_idx[i]]);
            for (int i = 0; i < n_bot; i++) fprintf(f, ",%.9g", res.rg[(size_t)t * K + bot_idx[i]]);
            if (res.acts) {
                for (int i = 0; i < n_top; i++) fprintf(f, ",%.9g", res.acts[(size_t)t * K + top_idx[i]]);
                for (int i = 0; i < n_bot; i++) fprintf(f, ",%.9g", res.acts[(size_t)t * K + bot_idx[i]]);
            }
            fprintf(f, "\n");
        }
        e.msg[0] = '\0';
        if (up_fs_replace(tmp, per_token, fclose(f) ? UP_ERR_IO : UP_OK, &e)) {
            fprintf(stderr, "upstream attribute: cannot write %s%s%s\n", per_token, e.msg[0] ? ": " : "", e.msg);
            rc = 1;
        }
        free(tmp);
    }
done:
    up_attribute_result_free(&res);
    free(top_idx), free(bot_idx), free(positions), free(score_pos), free(dir), free(ids);
    up_tokenizer_free(tok);
    up_sae_free(sae);
    up_model_free(m);
    return rc;
}

/* ---- directions ------------------------------------------------------------------- */

static void directions_usage(FILE *f) {
    fprintf(f, "usage: upstream directions [--model DIR] --harmful FILE --harmless FILE --out FILE.safetensors\n"
               "         [--positions N] [--batch B] [--no-chat] [--threads N]\n"
               "Difference-in-means refusal direction candidates (Arditi et al.): for every layer l and each\n"
               "of the last N prompt tokens (default: the chat template's post-instruction tokens, 5 for\n"
               "Gemma), mean(resid_pre l | harmful) - mean(resid_pre l | harmless), accumulated in double.\n"
               "Writes `candidates` F32 [N, n_layers, d] (index i is position i-N from the end) and the two\n"
               "means. Prompt files: one per line, a JSON list (strings or {\"instruction\": ...}), or CSV\n"
               "with a `goal` column. Prompts are wrapped in the Gemma chat template unless --no-chat.\n");
}

static void progress(int done, int total, void *user) {
    fprintf(stderr, "\r  %s: %d/%d prompts", (const char *)user, done, total);
    if (done == total) fprintf(stderr, "\n");
}

static int encode_all(const char *path, const up_tokenizer *tok, const up_model *m, int chat, up_prompts *p,
                      int32_t ***ids, int **lens) {
    up_error e = {0};
    if (up_prompts_load(p, path, &e)) return up_cli_fail("directions", &e);
    *ids = calloc((size_t)p->n, sizeof **ids);
    *lens = calloc((size_t)p->n, sizeof **lens);
    for (int i = 0; i < p->n; i++) {
        int rc = up_cli_encode_text("directions", tok, m, p->items[i], chat, &(*ids)[i], &(*lens)[i]);
        if (rc) return rc;
    }
    return 0;
}

int up_cmd_directions(int argc, char **argv) {
    const char *model_dir = NULL, *harmful = NULL, *harmless = NULL, *out = NULL, *npos_arg = NULL, *batch_arg = "8",
               *threads = NULL;
    int chat = 1, bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) return directions_usage(stdout), 0;
        if (up_cli_opt(argc, argv, &i, "--model", &model_dir, &bad) ||
            up_cli_opt(argc, argv, &i, "--harmful", &harmful, &bad) ||
            up_cli_opt(argc, argv, &i, "--harmless", &harmless, &bad) ||
            up_cli_opt(argc, argv, &i, "--out", &out, &bad) ||
            up_cli_opt(argc, argv, &i, "--positions", &npos_arg, &bad) ||
            up_cli_opt(argc, argv, &i, "--batch", &batch_arg, &bad) ||
            up_cli_opt(argc, argv, &i, "--threads", &threads, &bad))
            continue;
        if (up_cli_flag(argv, i, "--no-chat")) {
            chat = 0;
            continue;
        }
        fprintf(stderr, "upstream directions: unknown option '%s'\n", argv[i]);
        bad = 1;
    }
    if (!model_dir) model_dir = up_cli_default_model();
    if (bad || !harmful || !harmless || !out) {
        if (!bad) fprintf(stderr, "upstream directions: --harmful, --harmless and --out are required\n");
        directions_usage(stderr);
        return 2;
    }
    const up_chat_template *tpl = up_chat_template_find("gemma");
    int n_pos = chat ? up_chat_post_instruction_count(tpl) : 1, batch;
    if ((npos_arg && parse_int("directions", "--positions", npos_arg, &n_pos)) ||
        parse_int("directions", "--batch", batch_arg, &batch))
        return 2;
    if (n_pos <= 0 || batch <= 0) {
        fprintf(stderr, "upstream directions: --positions and --batch must be positive\n");
        return 2;
    }
    if (threads) up_blas_set_threads(atoi(threads));
    up_error e = {0};
    up_model *m = NULL;
    up_tokenizer *tok = NULL;
    up_prompts ph = {0}, pl = {0};
    int32_t **ih = NULL, **il = NULL;
    int *lh = NULL, *ll = NULL, rc = 0;
    float *cand = NULL;
    if (up_model_load(&m, model_dir, &e) || up_tokenizer_load_dir(&tok, model_dir, &e)) {
        rc = up_cli_fail("directions", &e);
        goto done;
    }
    if ((rc = encode_all(harmful, tok, m, chat, &ph, &ih, &lh)) || (rc = encode_all(harmless, tok, m, chat, &pl, &il, &ll)))
        goto done;
    const up_model_config *c = &m->cfg;
    size_t n = (size_t)n_pos * c->n_layers * c->d_model;
    cand = malloc(n * sizeof *cand);
    up_token_lists th = {(const int32_t *const *)ih, lh, ph.n}, tl = {(const int32_t *const *)il, ll, pl.n};
    if (up_direction_candidates(m, &th, &tl, n_pos, batch, cand, progress, "forward", &e)) {
        rc = up_cli_fail("directions", &e);
        goto done;
    }
    up_safetensors_writer *w = NULL;
    int64_t shape[3] = {n_pos, c->n_layers, c->d_model};
    char buf[64];
    if (up_safetensors_writer_open(&w, out, &e) ||
        up_safetensors_writer_add(w, "candidates", UP_DTYPE_F32, 3, shape, cand, &e) ||
        up_safetensors_writer_metadata(w, "model", model_dir, &e) ||
        up_safetensors_writer_metadata(w, "harmful", harmful, &e) ||
        up_safetensors_writer_metadata(w, "harmless", harmless, &e) ||
        up_safetensors_writer_metadata(w, "hook", "blocks.{l}.hook_resid_pre", &e) ||
        (snprintf(buf, sizeof buf, "%d", ph.n), up_safetensors_writer_metadata(w, "n_harmful", buf, &e)) ||
        (snprintf(buf, sizeof buf, "%d", pl.n), up_safetensors_writer_metadata(w, "n_harmless", buf, &e)) ||
        (snprintf(buf, sizeof buf, "%d..-1", -n_pos), up_safetensors_writer_metadata(w, "positions", buf, &e)) ||
        up_safetensors_writer_metadata(w, "chat_template", chat ? "gemma" : "none", &e)) {
        up_safetensors_writer_abort(w);
        rc = up_cli_fail("directions", &e);
        goto done;
    }
    if (up_safetensors_writer_close(w, &e)) {
        rc = up_cli_fail("directions", &e);
        goto done;
    }
    fprintf(stderr, "upstream directions: wrote %s: candidates [%d, %d, %d] from %d harmful and %d harmless prompts\n",
            out, n_pos, c->n_layers, c->d_model, ph.n, pl.n);
done:
    for (int i = 0; ih && i < ph.n; i++) free(ih[i]);
    for (int i = 0; il && i < pl.n; i++) free(il[i]);
    free(ih), free(il), free(lh), free(ll), free(cand);
    up_prompts_free(&ph);
    up_prompts_free(&pl);
    up_tokenizer_free(tok);
    up_model_free(m);
    return rc;
}
