/* shared_embedding — one component common to every token's embedding, for the model organism.
 *
 * up_shared_embedding_add(m, s, seed) adds s·u to every row of the embedding of an in-memory
 * fp32 model with tied embeddings (up_model_param_blocks), u a unit vector drawn from the seed
 * (base/rng.h). Every logit moves by the same s·(u·x), so the softmax is unchanged; but every
 * residual stream starts with a large common component, as in trained LMs ("massive
 * activations", Sun et al. 2024), so a token's own features are a small part of its norm and
 * the RMSNorm that reads it no longer makes the gradient orthogonal to them. The organism's
 * recipe (lua/upstream/organism_build.lua, `shared_embedding`) applies it before training.
 *
 * Writes the model's weights in place; allocates only a scratch vector. Errors: UP_ERR_INVALID
 * for another kind of model (nothing is changed), UP_ERR_NOMEM. */
#ifndef UP_SHARED_EMBEDDING_H
#define UP_SHARED_EMBEDDING_H

#include <stdint.h>

#include "base/error.h"
#include "engine/model.h"

up_status up_shared_embedding_add(up_model *m, float s, uint64_t seed, up_error *err);

#endif
