/* upstream steer — a steering grid from the command line: prompts × (latents or a vector) ×
 * alphas × max-new-tokens values, one row per cell with every metric and the completion. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/blas.h"
#include "text/chat.h"
#include "cli.h"
#include "method/direction.h"
#include "method/grid.h"
#include "engine/model.h"
#include "formats/prompts.h"
#include "sae/sae.h"
#include "text/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: upstream steer [--model DIR] (--prompt TEXT | --prompts FILE | --ids 2,106,...) [--chat]\n"
            "         (--latent K[,K...] --sae SAE [--layer l] | --vector FILE[:NAME] [--vector-index POS,LAYER]\n"
            "          [--raw-vector] --layer l) --alpha a,b,... [--ablate FILE[:NAME] [--ablate-index POS,LAYER]]\n"
            "         [--max-new-tokens N[,N...]] [--positions all|prompt|generated]\n"
            "         [--direction FILE[:NAME] [--direction-index POS,LAYER] --target-layer L]\n"
            "         [--refusal-token ID|PIECE[,...]] [--substrings FILE] [--no-coherence] [--batch B]\n"
            "         [--cache DIR] [--format table|csv|json] [--progress | --quiet] [--threads N]\n"
            "Adds alpha * v at blocks.l.hook_resid_post (v = the SAE decoder row W_dec[K], or the vector,\n"
            "normalised unless --raw-vector) at the chosen positions (default all, generated tokens\n"
            "included) and prints one row per cell: the refusal score at the last prompt position and its\n"
            "change from the unsteered row (\"none\", always first), the probability of the refusal tokens,\n"
            "and, with a completion (--max-new-tokens > 0, default 32; 0 scores only), the substring refusal\n"
            "judge, the completion's mean log-prob under the unsteered model and its repeated-trigram ratio.\n"
            "With --direction and --target-layer it also prints R = <h_L[last], r> (r normalised), its\n"
            "change dR and the first-order prediction pred = alpha * sum_t v . dR/dh_l[t].\n"
            "--ablate adds one cell with the direction ablated everywhere (Arditi et al.).\n"
            "Refusal tokens default to the tokenizer's \"I\"; a checkpoint without tokenizer.json needs\n"
            "--refusal-token ID. --substrings FILE: one refusal substring per line (default: the 12 of\n"
            "Arditi et al.). --cache DIR keeps every finished cell (DIR/xx/KEY.json, keyed by the SHA-256 of\n"
            "model files, prompt ids, intervention and settings): a killed run resumes, a changed axis\n"
            "recomputes only new cells. Progress goes to stderr: a bar on a terminal or with --progress,\n"
            "else a line every 5 s.\n");
}

static int fail(const up_error *e) {
    fprintf(stderr, "upstream steer: %s\n", e->msg);
    return 1;
}

static int bad_arg(const char *fmt, const char *v) {
    fprintf(stderr, "upstream steer: ");
    fprintf(stderr, fmt, v);
    fprintf(stderr, "\n");
    return 2;
}

/* "1,2,3" -> malloc'd ints; -1 on a malformed list. */
static int parse_int_list(const char *v, int **out) {
    int n = 0, cap = 8;
    *out = malloc((size_t)cap * sizeof **out);
    for (const char *p = v; *out;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < -(1L << 30) || x > (1L << 30) || (*end && *end != ',')) break;
        if (n == cap) *out = realloc(*out, (size_t)(cap *= 2) * sizeof **out);
        (*out)[n++] = (int)x;
        if (!*end) return n;
        p = end + 1;
    }
    free(*out);
    *out = NULL;
    return -1;
}

static int parse_float_list(const char *v, float **out) {
    int n = 0, cap = 8;
    *out = malloc((size_t)cap * sizeof **out);
    for (const char *p = v; *out;) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || !isfinite(x) || (*end && *end != ',')) break;
        if (n == cap) *out = realloc(*out, (size_t)(cap *= 2) * sizeof **out);
        (*out)[n++] = (float)x;
        if (!*end) return n;
        p = end + 1;
    }
    free(*out);
    *out = NULL;
    return -1;
}

static int parse_index(const char *v, int *pos, int *layer) { return v && sscanf(v, "%d,%d", pos, layer) == 2 ? 0 : -1; }

/* ---- progress on stderr -------------------------------------------------------------------- */

typedef struct progress_state {
    int bar;      /* redraw one line (a terminal, or --progress) */
    double last;  /* when something was last drawn */
    int drawn;    /* a bar line is on screen */
} progress_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int on_progress(const up_grid_progress *p, void *user) {
    progress_state *s = user;
    const double t = now_s();
    const int final = p->done == p->total;
    char line[256];
    if (s->bar) {
        if (!final && t - s->last < 0.1) return 0;
        up_grid_progress_format(p, 30, line, sizeof line);
        fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
        s->drawn = !final;
    } else {
        if (final || t - s->last < 5) return 0; /* the summary line reports the end */
        up_grid_progress_format(p, 0, line, sizeof line);
        fprintf(stderr, "upstream steer: %s\n", line);
    }
    fflush(stderr);
    s->last = t;
    return 0;
}

/* ---- output -------------------------------------------------------------------------------- */

static void put_escaped(FILE *f, const char *s, int csv) {
    if (csv) fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' && csv) fputs("\"\"", f);
        else if (*s == '\n') fputs("\\n", f);
        else if (*s == '\r') fputs("\\r", f);
        else if (*s == '\t') fputs("\\t", f);
        else fputc(*s, f);
    }
    if (csv) fputc('"', f);
}

static void put_completion(FILE *f, const up_grid_cell *c, int csv) {
    if (c->text) {
        put_escaped(f, c->text, csv);
        return;
    }
    if (csv) fputc('"', f);
    for (int i = 0; i < c->n_tokens; i++) fprintf(f, "%s%d", i ? " " : "", c->tokens[i]);
    if (csv) fputc('"', f);
}

static void put_num(FILE *f, const char *fmt, double v, const char *missing) {
    if (isnan(v)) fputs(missing, f);
    else fprintf(f, fmt, v);
}

static const char *refused_word(const up_grid_cell *c) {
    return c->refusal_match == -2 ? "-" : c->refusal_match >= 0 ? "yes" : "no";
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void print_json(const up_grid *g, const char *model_dir, const char *sae_path) {
    json_t *root = json_object(), *cells = json_array();
    json_object_set_new(root, "model", json_string(model_dir));
    json_object_set_new(root, "sae", sae_path ? json_string(sae_path) : json_null());
    for (int i = 0; i < up_grid_n_cells(g); i++) {
        const up_grid_cell *c = up_grid_cell_at(g, i);
        json_t *o = json_object(), *ids = json_array();
        for (int t = 0; t < c->n_tokens; t++) json_array_append_new(ids, json_integer(c->tokens[t]));
        const char *match = up_grid_match_text(g, c);
        json_object_set_new(o, "prompt", json_string(c->prompt_label));
        json_object_set_new(o, "intervention", json_string(c->label));
        json_object_set_new(o, "latent", c->latent >= 0 ? json_integer(c->latent) : json_null());
        json_object_set_new(o, "alpha", jnum(c->alpha));
        json_object_set_new(o, "max_new_tokens", json_integer(c->max_new_tokens));
        json_object_set_new(o, "score", jnum(c->score));
        json_object_set_new(o, "p_refusal", jnum(c->p_refusal));
        json_object_set_new(o, "dscore", jnum(c->dscore));
        json_object_set_new(o, "R", jnum(c->R));
        json_object_set_new(o, "dR", jnum(c->dR));
        json_object_set_new(o, "predicted_dR", jnum(c->predicted_dR));
        json_object_set_new(o, "refused", c->refusal_match == -2 ? json_null() : json_boolean(c->refusal_match >= 0));
        json_object_set_new(o, "refusal_match", match ? json_string(match) : json_null());
        json_object_set_new(o, "logprob", jnum(c->logprob));
        json_object_set_new(o, "repetition", jnum(c->repetition));
        json_object_set_new(o, "completion", c->text ? json_string(c->text) : json_null());
        json_object_set_new(o, "completion_ids", ids);
        json_object_set_new(o, "cached", json_boolean(c->state == UP_GRID_CACHED));
        json_object_set_new(o, "key", json_string(c->key));
        json_array_append_new(cells, o);
    }
    json_object_set_new(root, "cells", cells);
    up_grid_totals t = up_grid_get_totals(g);
    json_object_set_new(root, "totals",
                        json_pack("{s:i, s:i, s:i, s:i, s:i, s:f}", "cells", t.cells, "unique", t.unique, "cached",
                                  t.cached, "computed", t.computed, "batches", t.batches, "seconds", t.seconds));
    json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    printf("\n");
    json_decref(root);
}

static void print_csv(const up_grid *g) {
    printf("prompt,intervention,latent,alpha,max_new_tokens,score,p_refusal,dscore,R,dR,predicted_dR,refused,"
           "refusal_match,logprob,repetition,cached,key,completion\n");
    for (int i = 0; i < up_grid_n_cells(g); i++) {
        const up_grid_cell *c = up_grid_cell_at(g, i);
        put_escaped(stdout, c->prompt_label, 1);
        putchar(',');
        put_escaped(stdout, c->label, 1);
        if (c->latent >= 0) printf(",%d,", c->latent);
        else printf(",,");
        put_num(stdout, "%.9g", c->alpha, "");
        printf(",%d", c->max_new_tokens);
        const double cols[] = {c->score, c->p_refusal, c->dscore, c->R, c->dR, c->predicted_dR};
        for (size_t j = 0; j < sizeof cols / sizeof *cols; j++) putchar(','), put_num(stdout, "%.9g", cols[j], "");
        printf(",%s,", c->refusal_match == -2 ? "" : c->refusal_match >= 0 ? "1" : "0");
        const char *match = up_grid_match_text(g, c);
        if (match) put_escaped(stdout, match, 1);
        putchar(','), put_num(stdout, "%.9g", c->logprob, "");
        putchar(','), put_num(stdout, "%.9g", c->repetition, "");
        printf(",%d,%s,", c->state == UP_GRID_CACHED, c->key);
        put_completion(stdout, c, 1);
        putchar('\n');
    }
}

static void print_table(const up_grid *g, int objective) {
    const int many = up_grid_n_prompts(g) > 1;
    int w = 12;
    for (int i = 0; i < up_grid_n_interventions(g); i++) {
        const up_grid_cell *c = up_grid_cell_at(g, up_grid_index(g, 0, i, 0));
        int n = (int)strlen(c->label);
        if (n > w) w = n;
    }
    if (many) printf("%-6s ", "prompt");
    printf("%-*s %4s %9s %9s %8s", w, "intervention", "new", "score", "dscore", "p_ref");
    if (objective) printf(" %9s %9s %9s", "R", "dR", "pred_dR");
    printf(" %7s %8s %6s  %s\n", "refused", "logprob", "rep3", "completion");
    for (int i = 0; i < up_grid_n_cells(g); i++) {
        const up_grid_cell *c = up_grid_cell_at(g, i);
        if (many) printf("%-6d ", c->prompt);
        printf("%-*s %4d %9.4f %+9.4f %8.4f", w, c->label, c->max_new_tokens, c->score, c->dscore, c->p_refusal);
        if (objective) {
            printf(" %9.4f %+9.4f ", c->R, c->dR);
            put_num(stdout, "%+9.4f", c->predicted_dR, "        -");
        }
        printf(" %7s ", refused_word(c));
        put_num(stdout, "%8.3f", c->logprob, "       -");
        putchar(' ');
        put_num(stdout, "%6.3f", c->repetition, "     -");
        printf("  ");
        put_completion(stdout, c, 0);
        putchar('\n');
    }
    if (many) {
        printf("\nprompts:\n");
        for (int p = 0; p < up_grid_n_prompts(g); p++) {
            printf("  %d  ", p);
            put_escaped(stdout, up_grid_cell_at(g, up_grid_index(g, p, 0, 0))->prompt_label, 0);
            putchar('\n');
        }
    }
}

/* ---- the command --------------------------------------------------------------------------- */

typedef struct steer_args {
    up_cli_input in;
    const char *prompts_file, *sae_path, *latents, *vector, *vector_index, *layer, *alphas, *ablate, *ablate_index,
        *max_new, *positions, *direction, *direction_index, *target, *refusal, *substrings, *batch, *cache, *format;
    int raw_vector, no_coherence, progress, quiet;
} steer_args;

/* Refusal ids from "ID|PIECE,...", or the tokenizer's "I". Returns count or -1 after a message. */
static int refusal_ids(const char *arg, const up_tokenizer *tok, const up_model *m, int32_t *out, int max) {
    if (!arg) {
        int32_t id = tok ? up_tokenizer_token_id(tok, "I") : -1;
        if (id < 0) {
            fprintf(stderr, "upstream steer: %s; pass --refusal-token ID\n",
                    tok ? "the tokenizer has no piece \"I\"" : "no tokenizer.json to find the refusal token \"I\"");
            return -1;
        }
        out[0] = id;
        return 1;
    }
    int n = 0;
    char *copy = strdup(arg), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        long v = strtol(t, &end, 10);
        int32_t id = *t && !*end ? (int32_t)v : tok ? up_tokenizer_token_id(tok, t) : -1;
        if (*t && !*end && (v < 0 || v >= m->cfg.vocab_size)) id = -1;
        if (id < 0 || n == max) {
            fprintf(stderr, "upstream steer: --refusal-token '%s' is %s\n", t,
                    n == max ? "one too many" : tok ? "neither an id in the vocabulary nor a piece" : "not a valid id");
            free(copy);
            return -1;
        }
        out[n++] = id;
    }
    free(copy);
    if (!n) fprintf(stderr, "upstream steer: --refusal-token is empty\n");
    return n ? n : -1;
}

/* One line per substring; blank lines skipped. */
static int load_substrings(const char *path, char ***out) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    char line[1024];
    *out = NULL;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        *out = realloc(*out, (size_t)(n + 1) * sizeof **out);
        (*out)[n++] = strdup(line);
    }
    fclose(f);
    return n;
}

int up_cmd_steer(int argc, char **argv) {
    steer_args a = {0};
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (up_cli_flag(argv, i, "--help") || up_cli_flag(argv, i, "-h")) return usage(stdout), 0;
        if (up_cli_input_opt(argc, argv, &i, &a.in, &bad)) continue;
        if (up_cli_opt(argc, argv, &i, "--prompts", &a.prompts_file, &bad) ||
            up_cli_opt(argc, argv, &i, "--sae", &a.sae_path, &bad) ||
            up_cli_opt(argc, argv, &i, "--latent", &a.latents, &bad) ||
            up_cli_opt(argc, argv, &i, "--vector", &a.vector, &bad) ||
            up_cli_opt(argc, argv, &i, "--vector-index", &a.vector_index, &bad) ||
            up_cli_opt(argc, argv, &i, "--layer", &a.layer, &bad) ||
            up_cli_opt(argc, argv, &i, "--alpha", &a.alphas, &bad) ||
            up_cli_opt(argc, argv, &i, "--ablate", &a.ablate, &bad) ||
            up_cli_opt(argc, argv, &i, "--ablate-index", &a.ablate_index, &bad) ||
            up_cli_opt(argc, argv, &i, "--max-new-tokens", &a.max_new, &bad) ||
            up_cli_opt(argc, argv, &i, "--positions", &a.positions, &bad) ||
            up_cli_opt(argc, argv, &i, "--direction", &a.direction, &bad) ||
            up_cli_opt(argc, argv, &i, "--direction-index", &a.direction_index, &bad) ||
            up_cli_opt(argc, argv, &i, "--target-layer", &a.target, &bad) ||
            up_cli_opt(argc, argv, &i, "--refusal-token", &a.refusal, &bad) ||
            up_cli_opt(argc, argv, &i, "--substrings", &a.substrings, &bad) ||
            up_cli_opt(argc, argv, &i, "--batch", &a.batch, &bad) ||
            up_cli_opt(argc, argv, &i, "--cache", &a.cache, &bad) ||
            up_cli_opt(argc, argv, &i, "--format", &a.format, &bad))
            continue;
        int *flag = up_cli_flag(argv, i, "--raw-vector")      ? &a.raw_vector
                    : up_cli_flag(argv, i, "--no-coherence") ? &a.no_coherence
                    : up_cli_flag(argv, i, "--progress")     ? &a.progress
                    : up_cli_flag(argv, i, "--quiet")        ? &a.quiet
                                                             : NULL;
        if (flag) {
            *flag = 1;
            continue;
        }
        fprintf(stderr, "upstream steer: unknown option '%s'\n", argv[i]);
        bad = 1;
    }
    if (!a.in.model_dir) a.in.model_dir = up_cli_default_model();
    up_cli_organism org;
    if (a.latents && !a.sae_path && up_cli_organism_defaults(a.in.model_dir, &org)) a.sae_path = org.sae;
    if (bad) {
        usage(stderr);
        return 2;
    }
    /* Everything that can be checked without loading anything, first. */
    if (!a.latents && !a.vector && !a.ablate)
        return bad_arg("give --latent (with --sae), --vector or --ablate%s", "");
    if (a.latents && a.vector) return bad_arg("give --latent or --vector, not both%s", "");
    if (a.latents && !a.sae_path) return bad_arg("--latent needs --sae%s", "");
    if ((a.latents || a.vector) && !a.alphas) return bad_arg("--alpha is required (e.g. --alpha -8,-4,4,8)%s", "");
    if (a.vector && !a.layer) return bad_arg("--vector needs --layer%s", "");
    if (!!a.direction != !!a.target) return bad_arg("--direction and --target-layer go together%s", "");
    if (a.prompts_file && (a.in.prompt || a.in.ids)) return bad_arg("give one of --prompt, --prompts or --ids%s", "");
    const char *format = a.format ? a.format : "table";
    if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))
        return bad_arg("--format must be table, csv or json, not '%s'", format);
    up_steer_where where = UP_STEER_POS_ALL;
    if (a.positions && (up_steer_where_parse(a.positions, &where) || where == UP_STEER_POS_LIST))
        return bad_arg("--positions must be all, prompt or generated, not '%s'", a.positions);
    int *latents = NULL, *max_new = NULL, n_latents = 0, n_max_new = 1, layer = -1, target = -1, batch = 16;
    float *alphas = NULL;
    int n_alphas = 0, rc = 0, vpos = 0, vlayer = 0, apos = 0, alayer = 0, dpos = 0, dlayer = 0;
    int *one = NULL;
    if (a.latents && (n_latents = parse_int_list(a.latents, &latents)) <= 0) return bad_arg("bad --latent list '%s'", a.latents);
    if (a.alphas && (n_alphas = parse_float_list(a.alphas, &alphas)) <= 0) {
        free(latents);
        return bad_arg("bad --alpha list '%s' (e.g. -8,-4,4,8)", a.alphas);
    }
    if (a.max_new) n_max_new = parse_int_list(a.max_new, &max_new);
    else (max_new = malloc(sizeof *max_new))[0] = 32;
    for (int i = 0; i < n_max_new; i++)
        if (max_new[i] < 0 || max_new[i] > 1 << 16) n_max_new = -1;
    if (n_max_new <= 0) rc = bad_arg("bad --max-new-tokens '%s' (non-negative integers, e.g. 0,32)", a.max_new);
    else if (a.layer && (parse_int_list(a.layer, &one) != 1 || (layer = one[0]) < 0))
        rc = bad_arg("--layer expects one non-negative integer, got '%s'", a.layer);
    else if (a.target && (free(one), parse_int_list(a.target, &one) != 1 || (target = one[0]) < 0))
        rc = bad_arg("--target-layer expects one non-negative integer, got '%s'", a.target);
    else if (a.batch && (free(one), parse_int_list(a.batch, &one) != 1 || (batch = one[0]) <= 0))
        rc = bad_arg("--batch expects a positive integer, got '%s'", a.batch);
    else if ((a.vector_index && parse_index(a.vector_index, &vpos, &vlayer)) ||
             (a.ablate_index && parse_index(a.ablate_index, &apos, &alayer)) ||
             (a.direction_index && parse_index(a.direction_index, &dpos, &dlayer)))
        rc = bad_arg("--*-index expects POS,LAYER (e.g. -1,10)%s", "");
    free(one);
    if (rc) {
        free(latents), free(alphas), free(max_new);
        return rc;
    }

    up_blas_set_threads(a.in.threads);
    up_error e = {0};
    up_model *m = NULL;
    up_sae *sae = NULL;
    up_tokenizer *tok = NULL;
    up_grid *g = NULL;
    up_prompts prompts = {0};
    char **subs = NULL;
    int n_subs = 0;
    float *vec = NULL, *abl = NULL, *dir = NULL;
    int32_t *ids = NULL;
    int T = 0;
    if (up_model_load(&m, a.in.model_dir, &e) || up_grid_init(&g, m, &e)) {
        rc = fail(&e);
        goto done;
    }
    const int d = m->cfg.d_model, L = m->cfg.n_layers;
    if ((a.layer && layer >= L) || (a.target && target >= L)) {
        fprintf(stderr, "upstream steer: the model has layers 0..%d\n", L - 1);
        rc = 2;
        goto done;
    }
    /* Prompts. The tokenizer is loaded whenever the checkpoint has one: it decodes completions
     * for the substring judge and names the refusal token even when ids are given. */
    if (a.prompts_file) {
        if (up_tokenizer_load_dir(&tok, a.in.model_dir, &e) || up_prompts_load(&prompts, a.prompts_file, &e)) {
            rc = fail(&e);
            goto done;
        }
        for (int p = 0; p < prompts.n; p++) {
            if ((rc = up_cli_encode_text("steer", tok, m, prompts.items[p], a.in.chat, &ids, &T))) goto done;
            if (up_grid_add_prompt(g, prompts.items[p], ids, T, &e) < 0) {
                rc = fail(&e);
                goto done;
            }
            free(ids), ids = NULL;
        }
    } else {
        if ((rc = up_cli_resolve_ids("steer", &a.in, m, &tok, &ids, &T))) goto done;
        if (up_grid_add_prompt(g, a.in.prompt ? a.in.prompt : a.in.ids, ids, T, &e) < 0) {
            rc = fail(&e);
            goto done;
        }
    }
    if (!tok) {
        up_error ignored = {0};
        if (up_tokenizer_load_dir(&tok, a.in.model_dir, &ignored)) tok = NULL;
    }
    /* Interventions. */
    if (a.latents) {
        if (up_sae_load(&sae, a.sae_path, UP_SAE_DECODER, &e) || up_sae_check_model(sae, d, L, &e)) {
            rc = fail(&e);
            goto done;
        }
        if (layer < 0) {
            if (sae->layer < 0) {
                fprintf(stderr, "upstream steer: the SAE does not name its layer; pass --layer\n");
                rc = 2;
                goto done;
            }
            layer = sae->layer;
        }
        vec = malloc((size_t)n_latents * d * sizeof *vec);
        for (int i = 0; i < n_latents; i++) {
            if (latents[i] < 0 || latents[i] >= sae->d_sae) {
                fprintf(stderr, "upstream steer: latent %d is outside the SAE's [0, %d)\n", latents[i], sae->d_sae);
                rc = 2;
                goto done;
            }
            memcpy(vec + (size_t)i * d, sae->W_dec + (size_t)latents[i] * d, (size_t)d * sizeof *vec);
        }
        if (up_grid_add_sweep(g, (up_hook_point){UP_HOOK_RESID_POST, layer}, where, vec, NULL, latents, n_latents, alphas,
                              n_alphas, &e)) {
            rc = fail(&e);
            goto done;
        }
    } else if (a.vector) {
        vec = malloc((size_t)d * sizeof *vec);
        if (up_direction_load(a.vector, d, a.vector_index != NULL, vpos, vlayer, vec, &e)) {
            rc = fail(&e);
            goto done;
        }
        if (!a.raw_vector && up_direction_normalize(vec, d) == 0) {
            fprintf(stderr, "upstream steer: the vector is zero\n");
            rc = 2;
            goto done;
        }
        const char *name = strrchr(a.vector, '/') ? strrchr(a.vector, '/') + 1 : a.vector;
        if (up_grid_add_sweep(g, (up_hook_point){UP_HOOK_RESID_POST, layer}, where, vec, &name, NULL, 1, alphas, n_alphas,
                              &e)) {
            rc = fail(&e);
            goto done;
        }
    }
    if (a.ablate) {
        abl = malloc((size_t)d * sizeof *abl);
        if (up_direction_load(a.ablate, d, a.ablate_index != NULL, apos, alayer, abl, &e)) {
            rc = fail(&e);
            goto done;
        }
        up_steer item = up_steer_ablate(abl);
        up_grid_intervention iv = {"ablate", &item, 1, -1, NAN};
        if (up_grid_add_intervention(g, &iv, &e) < 0) {
            rc = fail(&e);
            goto done;
        }
    }
    for (int i = 0; i < n_max_new; i++) up_grid_add_decoding(g, max_new[i], &e);
    if (a.direction) {
        dir = malloc((size_t)d * sizeof *dir);
        if (up_direction_load(a.direction, d, a.direction_index != NULL, dpos, dlayer, dir, &e) ||
            up_grid_set_objective(g, target, dir, NULL, 0, &e)) {
            rc = fail(&e);
            goto done;
        }
    }
    /* Settings. */
    int32_t refusal[16], stops[UP_CHAT_MAX_STOP + 2];
    int n_refusal = refusal_ids(a.refusal, tok, m, refusal, 16), n_stop = 0;
    if (n_refusal < 0) {
        rc = 2;
        goto done;
    }
    if (tok) n_stop = up_chat_stop_ids(tok, up_chat_template_find("gemma"), stops, UP_CHAT_MAX_STOP + 2);
    if (!n_stop) stops[n_stop++] = m->cfg.eos_id;
    if (a.substrings && (n_subs = load_substrings(a.substrings, &subs)) <= 0) {
        fprintf(stderr, "upstream steer: %s: %s\n", a.substrings, n_subs < 0 ? "cannot read" : "no substrings in it");
        rc = 2;
        goto done;
    }
    up_grid_identity(g, "program", "upstream " UP_VERSION, &e);
    progress_state ps = {!a.quiet && (a.progress || isatty(2)), now_s(), 0};
    up_grid_opts o = up_grid_opts_default();
    o.batch = batch;
    o.cache_dir = a.cache;
    o.refusal_ids = refusal, o.n_refusal = n_refusal;
    o.stop_ids = stops, o.n_stop = n_stop;
    o.tok = tok;
    o.substrings = (const char *const *)subs, o.n_substrings = n_subs;
    o.coherence = !a.no_coherence;
    o.progress = a.quiet ? NULL : on_progress, o.user = &ps;
    if (up_grid_run(g, &o, &e)) {
        if (ps.drawn) fputc('\n', stderr);
        rc = fail(&e);
        goto done;
    }
    if (!strcmp(format, "json")) print_json(g, a.in.model_dir, a.sae_path);
    else if (!strcmp(format, "csv")) print_csv(g);
    else print_table(g, a.direction != NULL);
    up_grid_totals t = up_grid_get_totals(g);
    if (!a.quiet)
        fprintf(stderr, "upstream steer: %d cells (%d distinct: %d computed in %d batches, %d from the cache) in %.1f s\n",
                t.cells, t.unique, t.computed, t.batches, t.cached, t.seconds);
done:
    for (int i = 0; i < n_subs; i++) free(subs[i]);
    free(subs);
    free(latents), free(alphas), free(max_new), free(vec), free(abl), free(dir), free(ids);
    up_prompts_free(&prompts);
    up_grid_free(g);
    up_tokenizer_free(tok);
    up_sae_free(sae);
    up_model_free(m);
    return rc;
}
