/* train — trains a Gemma-2 model in memory on next-token prediction (the model organism).
 *
 * The model must be an in-memory fp32 model (up_model_init_random with F32; see
 * up_model_param_blocks). Each example is a token sequence with the index from which its tokens
 * are predicted (the response: the loss is on response tokens only). Steps draw `batch`
 * examples from a seeded permutation of the training set (a new permutation each epoch),
 * left-pad them, and apply AdamW (decoupled weight decay on matrices, not on norm vectors)
 * after clipping the global gradient norm, with linear warm-up then cosine decay.
 *
 * Determinism: the same model, data, options and thread count give the same bits.
 * Resumability: with a checkpoint path the full training state (weights, Adam moments, step)
 * is written every checkpoint_every steps (atomically) and picked up again by a later call
 * with the same path, so a killed run loses at most those steps.
 * Progress goes through a callback (core never prints); returning non-zero stops the run
 * after the current step (the state is checkpointed first when a path is set). */
#ifndef UP_TRAIN_H
#define UP_TRAIN_H

#include <stdint.h>

#include "engine/model.h"

typedef struct up_train_data {
    const int32_t *const *ids; /* (n) sequences */
    const int *lens;           /* (n) */
    const int *loss_from;      /* (n) first index whose token is predicted (>= 1) */
    int n;
} up_train_data;

typedef struct up_train_progress {
    int step, steps;
    double loss;          /* this step's mean training loss */
    double heldout_loss;  /* NaN except on evaluation steps */
    double lr, grad_norm;
    double seconds;       /* since the call started */
    int resumed_from;     /* step the run resumed from (0 for a fresh run) */
} up_train_progress;

typedef struct up_train_opts {
    int steps, batch;
    uint64_t seed;
    float lr, min_lr_frac, weight_decay, beta1, beta2, eps, clip;
    int warmup_steps;
    const up_train_data *heldout; /* may be NULL */
    int eval_every;               /* 0: only at the end */
    const char *checkpoint;       /* training-state file, or NULL */
    int checkpoint_every;
    int (*progress)(const up_train_progress *p, void *user);
    void *user;
} up_train_opts;

up_train_opts up_train_opts_default(void);

typedef struct up_train_report {
    double first_loss, last_loss, heldout_loss; /* heldout NaN without a held-out set */
    int steps_done, resumed_from;
} up_train_report;

up_status up_train(up_model *m, const up_train_data *train, const up_train_opts *opts, up_train_report *report,
                   up_error *err);

/* Mean next-token loss over data (response tokens only), batched forward passes, in double. */
up_status up_train_eval(const up_model *m, const up_train_data *data, int batch, double *loss, up_error *err);

#endif
