/* grid_predict — the first-order prediction of dR and the gradients it reads; the contract is
 * in grid_predict.h (and grid.h for up_grid_set_gradient / up_grid_set_prediction). */
#include "method/grid_predict.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "engine/backward.h"
#include "engine/position.h"

void grid_drop_gradients(up_grid *g) {
    for (int p = 0; p < g->n_prompts; p++) {
        grid_prompt *pr = &g->prompts[p];
        for (int j = 0; j < pr->n_gradients; j++) free(pr->gradients[j].values);
        free(pr->gradients);
        pr->gradients = NULL;
        pr->n_gradients = 0;
    }
}

/* Whether o is exactly the grid's objective: the same layer and positions, and a direction with
 * the same bits as the grid's unit one (a direction that was not unit, or whose normalisation
 * moves a bit, is another objective as far as the gradient's bits go). */
static int same_objective(const up_grid *g, const up_objective *o) {
    if (o->layer != g->obj_layer || !o->direction) return 0;
    if (memcmp(o->direction, g->obj_dir, (size_t)g->m->cfg.d_model * sizeof(float))) return 0;
    const int n = o->positions ? o->n_positions : 0;
    if ((o->positions == NULL) != (g->obj_positions == NULL) || n != g->n_obj_positions) return 0;
    return n == 0 || !memcmp(o->positions, g->obj_positions, (size_t)n * sizeof(int));
}

up_status up_grid_set_gradient(up_grid *g, int prompt, int layer, const up_objective *objective, const float *grad,
                               int n_tok, up_error *err) {
    if (!g->has_objective) return up_error_set(err, UP_ERR_INVALID, "grid gradient: set the objective first");
    if (prompt < 0 || prompt >= g->n_prompts)
        return up_error_set(err, UP_ERR_INVALID, "grid gradient: no prompt %d (the grid has %d)", prompt, g->n_prompts);
    if (layer < -1 || layer >= g->m->cfg.n_layers)
        return up_error_set(err, UP_ERR_INVALID, "grid gradient: source layer %d outside [-1, %d)", layer,
                            g->m->cfg.n_layers);
    grid_prompt *pr = &g->prompts[prompt];
    if (!grad || !objective || n_tok != pr->n)
        return up_error_set(err, UP_ERR_INVALID, "grid gradient: prompt %d has %d tokens, the gradient %d", prompt, pr->n,
                            grad ? n_tok : 0);
    if (!same_objective(g, objective)) return UP_OK; /* of another objective: the run computes its own */
    const size_t bytes = (size_t)pr->n * g->m->cfg.d_model * sizeof(float);
    float *copy = malloc(bytes);
    if (!copy) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    memcpy(copy, grad, bytes);
    for (int j = 0; j < pr->n_gradients; j++)
        if (pr->gradients[j].layer == layer) {
            free(pr->gradients[j].values);
            pr->gradients[j].values = copy;
            return UP_OK;
        }
    grid_gradient *grown = realloc(pr->gradients, (size_t)(pr->n_gradients + 1) * sizeof *grown);
    if (!grown) {
        free(copy);
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    }
    pr->gradients = grown;
    pr->gradients[pr->n_gradients++] = (grid_gradient){layer, copy};
    return UP_OK;
}

up_status up_grid_set_prediction(up_grid *g, int prompt, int intervention, double predicted_dR, up_error *err) {
    if (!g->cells) return up_error_set(err, UP_ERR_INVALID, "grid: set_prediction before a run");
    if (prompt < 0 || prompt >= g->n_prompts || intervention < 0 || intervention >= g->n_ivs)
        return up_error_set(err, UP_ERR_INVALID, "grid: no cell (%d, %d)", prompt, intervention);
    for (int k = 0; k < up_grid_n_decodings(g); k++) g->cells[up_grid_index(g, prompt, intervention, k)].predicted_dR = predicted_dR;
    return UP_OK;
}

/* The layer l whose resid_post the item adds to (-1: the embedding), or INT_MIN when the
 * prediction does not cover it (another hook point, or not below the objective's layer L). */
static int source_layer(const up_steer *s, int L) {
    int l = s->point.kind == UP_HOOK_RESID_POST ? s->point.layer
            : s->point.kind == UP_HOOK_RESID_PRE ? s->point.layer - 1
            : s->point.kind == UP_HOOK_EMBED     ? -1
                                                 : INT_MIN;
    return l >= -1 && l < L ? l : INT_MIN;
}

static int predictable(const grid_interv *iv, int L) {
    for (int j = 0; j < iv->n_items; j++) {
        const up_steer *s = &iv->items[j];
        if (s->kind != UP_STEER_ADD) return 0;
        if (s->alpha != 0 && source_layer(s, L) == INT_MIN) return 0;
    }
    return 1;
}

static int steered_at(const up_steer *s, int t, int T) {
    switch (s->where) {
    case UP_STEER_POS_ALL:
    case UP_STEER_POS_PROMPT: return 1;
    case UP_STEER_POS_GENERATED: return 0; /* after the prompt: cannot move R at prompt positions */
    case UP_STEER_POS_LIST:
        for (int j = 0; j < s->n_positions; j++)
            if (up_position_resolve(s->positions[j], T) == t) return 1;
        return 0;
    }
    return 0;
}

static const float *supplied(const grid_prompt *pr, int layer) {
    for (int j = 0; j < pr->n_gradients; j++)
        if (pr->gradients[j].layer == layer) return pr->gradients[j].values;
    return NULL;
}

/* One prompt's predictions, pred[i] per intervention (NaN where not predictable): a work unit
 * (dist.h), since its gradients are a backward pass each. */
static up_status predict_prompt(up_grid *g, int p, double *pred_out, up_error *err) {
    const int L = g->obj_layer, d = g->m->cfg.d_model;
    up_objective obj = {L, g->obj_dir, g->obj_positions, g->n_obj_positions};
    /* Per source layer l at [l + 1]: the gradient in use, and the buffer of one computed here
     * (NULL when it was supplied). */
    const float **grads = calloc((size_t)L + 1, sizeof *grads);
    float **computed = calloc((size_t)L + 1, sizeof *computed);
    if (!grads || !computed) {
        free(grads), free(computed);
        return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    }
    up_status st = UP_OK;
    const grid_prompt *pr = &g->prompts[p];
    const int T = pr->n;
    for (int i = 0; !st && i < g->n_ivs; i++) {
        const grid_interv *iv = &g->ivs[i];
        pred_out[i] = NAN;
        if (!predictable(iv, L)) continue;
        double pred = 0;
        for (int j = 0; !st && j < iv->n_items; j++) {
            const up_steer *s = &iv->items[j];
            if (s->alpha == 0) continue;
            const int l = source_layer(s, L);
            if (!grads[l + 1] && !(grads[l + 1] = supplied(pr, l))) {
                if (!(computed[l + 1] = malloc((size_t)T * d * sizeof(float)))) {
                    st = up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
                    break;
                }
                st = up_gradient(g->m, pr->ids, NULL, 1, T, l, &obj, NULL, NULL, computed[l + 1], NULL, err);
                if (st) break;
                grads[l + 1] = computed[l + 1];
            }
            double sum = 0;
            for (int t = 0; t < T; t++) {
                if (!steered_at(s, t, T)) continue;
                const float *gt = grads[l + 1] + (size_t)t * d;
                for (int k = 0; k < d; k++) sum += (double)s->vec[k] * gt[k];
            }
            pred += (double)s->alpha * sum;
        }
        pred_out[i] = pred;
    }
    for (int l = 0; l <= L; l++) free(computed[l]);
    free(grads), free(computed);
    return st;
}

typedef struct predict_job {
    up_grid *g;
    double *pred; /* (n_prompts, n_ivs) */
} predict_job;

static up_status predict_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    predict_job *J = user;
    double *row = J->pred + (size_t)unit * J->g->n_ivs;
    up_status st = predict_prompt(J->g, unit, row, err);
    if (st || up_dist_size() == 1) return st;
    out->size = (size_t)J->g->n_ivs * sizeof *row;
    if (!(out->data = malloc(out->size))) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    memcpy(out->data, row, out->size);
    return UP_OK;
}

static up_status predict_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    predict_job *J = user;
    if (up_dist_size() == 1) return UP_OK; /* computed in place */
    if (size != (size_t)J->g->n_ivs * sizeof(double))
        return up_error_set(err, UP_ERR_FORMAT, "grid: a prompt's predictions came back cut short");
    memcpy(J->pred + (size_t)unit * J->g->n_ivs, data, size);
    return UP_OK;
}

up_status grid_predict(up_grid *g, up_error *err) {
    const size_t n = (size_t)g->n_prompts * g->n_ivs;
    predict_job J = {g, malloc((n ? n : 1) * sizeof(double))};
    if (!J.pred) return up_error_set(err, UP_ERR_NOMEM, "grid: out of memory");
    const up_dist_job job = {g->n_prompts, predict_compute, predict_arrived, &J};
    up_status st = up_dist_map(&job, err);
    if (!st) st = up_dist_share_into(J.pred, n * sizeof(double), "grid predictions", err); /* rank 0's */
    for (int p = 0; !st && p < g->n_prompts; p++)
        for (int i = 0; i < g->n_ivs; i++)
            if (predictable(&g->ivs[i], g->obj_layer))
                for (int k = 0; k < up_grid_n_decodings(g); k++)
                    g->cells[up_grid_index(g, p, i, k)].predicted_dR = J.pred[(size_t)p * g->n_ivs + i];
    free(J.pred);
    if (st) up_error_prefix(err, "grid prediction");
    return st;
}
