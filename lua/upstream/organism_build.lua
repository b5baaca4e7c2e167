-- upstream.organism_build: the model organism's build and evaluation, one table over the modules
-- that implement them (lua/upstream/organism/), for scripts, tests and the host's `upstream
-- organism` command (main). Where each thing lives (each module's header states its contract):
--   recipe.lua        defaults, smoke, recipe(spec, opts), recipe_corpus(spec, recipe)
--   records.lua       encode_record, refusal_ids (corpus records as model input)
--   probes.lua        token_labels, latent_labels, concept_directions, concept_ranking,
--                     concept_place, mean_rows (what activations say about the concepts)
--   stages.lua        build(SPEC.lua, DIR, opts): corpus, tokenizer, model, direction, SAE, labels
--   store.lua         open(DIR), close(o): a built organism on disk
--   eval.lua          eval(DIR, opts): eval_measure -> eval_judge (criteria, criterion_ids,
--                     thresholds) -> eval_render
--   cli.lua           main(args): upstream organism build|eval
--   spec_file.lua     reading a spec file (a variant starts from its base: base, concept, replace)
-- The spec language and corpus generator are upstream.organism (lua/upstream/organism.lua).
local recipe = require "upstream.organism.recipe"
local probes = require "upstream.organism.probes"
local stages = require "upstream.organism.stages"
local store = require "upstream.organism.store"
local evaluation = require "upstream.organism.eval"
local judge = require "upstream.organism.eval_judge"
local cli = require "upstream.organism.cli"

return {
  recipe = recipe.recipe, recipe_corpus = recipe.recipe_corpus,
  token_labels = probes.token_labels, concept_directions = probes.concept_directions, concept_ranking = probes.concept_ranking,
  concept_place = probes.concept_place, mean_rows = probes.mean_rows,
  build = stages.build,
  open = store.open, close = store.close,
  eval = evaluation.eval, criterion_ids = judge.criterion_ids,
  main = cli.main,
}
