/* model_methods — the methods of upstream.Model whose work belongs to another concept, each
 * implemented in that concept's binding file and documented in its header. lua_model.c lists
 * them, with the model's own methods, in the Model's one method table; nothing else registers
 * them. Each is a lua_CFunction called as model:NAME(...) (the model at index 1). */
#ifndef UP_MODEL_METHODS_H
#define UP_MODEL_METHODS_H

#include <lua.h>

/* lua_attribution.c: the refusal gradient, latent scores, candidate directions */
int up_lua_model_gradient(lua_State *L);
int up_lua_model_attribute(lua_State *L);
int up_lua_model_attribute_all(lua_State *L);
int up_lua_model_directions(lua_State *L);

/* lua_train.c: training in memory */
int up_lua_model_train(lua_State *L);
int up_lua_model_eval_loss(lua_State *L);

/* lua_steer.c: steering grids and direction selection */
int up_lua_model_steer(lua_State *L);
int up_lua_model_select_direction(lua_State *L);

/* lua_metrics.c: refusal and coherence metrics */
int up_lua_model_logprob(lua_State *L);

#endif
