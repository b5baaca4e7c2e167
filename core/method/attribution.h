/* attribution — rank SAE latents by the refusal gradient (Lee, Breck, Arditi 2025).
 *
 * With g_t = dR/dh_l[t] (backward.h) and decoder rows W_dec[k]:
 *   per-token   RG[t,k] = W_dec[k] · g_t
 *   gradient    S_k = mean over included positions of RG[t,k]           (the default)
 *   cosine      S_k / (‖W_dec[k]‖ ‖ḡ‖), ḡ the mean of g over included positions
 *   activation  mean over included positions of a_k[t] · RG[t,k]        (attribution patching)
 * Positive S_k raise R ("top"), negative lower it ("bottom", negatively aligned).
 * Included positions: all real tokens except BOS by default (the caller passes a mask); for
 * up_attribute, a list of token indices (negative from the end) replaces the default.
 * Aggregates are accumulated in double. Buffers are the caller's; nothing is allocated here
 * except inside up_attribute, which runs the whole pipeline for one prompt. */
#ifndef UP_ATTRIBUTION_H
#define UP_ATTRIBUTION_H

#include "engine/backward.h"
#include "sae/sae.h"

typedef enum { UP_SCORE_GRADIENT = 0, UP_SCORE_COSINE, UP_SCORE_ACTIVATION } up_score_kind;

/* "gradient", "cosine", "activation"; parse returns -1 for an unknown name. */
const char *up_score_kind_name(up_score_kind kind);
int up_score_kind_parse(const char *name, up_score_kind *out);

/* rg (T, d_sae) = grad (T, d) · W_decᵀ; scores (d_sae) aggregated per `kind` over positions with
 * include[t] != 0 (include NULL: all). acts (T, d_sae) is required for UP_SCORE_ACTIVATION. */
up_status up_attribution_scores(const up_sae *sae, const float *grad, int T, const unsigned char *include,
                                up_score_kind kind, const float *acts, float *rg, double *scores, up_error *err);

/* Writes the indices of the k largest (largest != 0) or smallest scores into out, best first;
 * ties go to the lower index. Returns the number written (min(k, n)). */
int up_attribution_rank(const double *scores, int n, int k, int largest, int *out);

typedef struct up_attribute_request {
    const int32_t *ids;    /* (n_tok) one prompt, chat-formatted by the caller */
    int n_tok;
    int source_layer;      /* l: gradient at blocks.{l}.hook_resid_post (the SAE's hook) */
    up_objective objective; /* target layer, unit direction, positions */
    up_score_kind kind;
    int include_bos;       /* 0: BOS (position 0 when it is the model's bos id) is excluded */
    const up_hooks *hooks; /* optional forward hooks (e.g. steering while attributing) */
    const int *score_positions; /* optional: the token indices S_k averages over (negative from the
                                   end; e.g. the instruction's tokens only); NULL: every token but BOS
                                   (or with it, per include_bos) */
    int n_score_positions;
} up_attribute_request;

typedef struct up_attribute_result {
    float *grad;    /* (n_tok, d) */
    float *rg;      /* (n_tok, d_sae) */
    float *acts;    /* (n_tok, d_sae) SAE activations at the source layer, NULL without an encoder */
    double *scores; /* (d_sae) */
    double R;       /* the objective's value */
    unsigned char *include; /* (n_tok) */
} up_attribute_result;

/* Gradient, activations (when the encoder is loaded) and scores for one prompt. The result's
 * buffers are allocated here; free them with up_attribute_result_free. */
up_status up_attribute(const up_model *m, const up_sae *sae, const up_attribute_request *req,
                       up_attribute_result *out, up_error *err);
void up_attribute_result_free(up_attribute_result *r);

/* Many attributions, each a work unit over the job's ranks (dist.h): request i with saes[i]
 * into out[i] (zeroed first; free each with up_attribute_result_free). Every rank gets every
 * result, with the bits one process computes (an attribution depends on its request only).
 * Requests must not carry hooks (a hook's state would not cross ranks). progress (may be NULL)
 * is called on rank 0 as results come in, with how many are done. On error nothing is kept. */
up_status up_attribute_all(const up_model *m, const up_sae *const *saes, const up_attribute_request *reqs, int n,
                           up_attribute_result *out, void (*progress)(int done, int total, void *user), void *user,
                           up_error *err);

#endif
