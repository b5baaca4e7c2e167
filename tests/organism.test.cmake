# The model organism: the corpus generator on the shipped spec (with a BPE tokenizer trained
# on its output). The BPE trainer's own unit tests are the cmocka executable test_bpe.
include_guard(GLOBAL)
add_test(NAME organism_corpus
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_organism_corpus.lua ${CMAKE_SOURCE_DIR})
# Spec files that start from another spec (the variants) and the copy a build keeps.
add_test(NAME organism_spec
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_organism_spec.lua ${CMAKE_SOURCE_DIR}
                 ${CMAKE_BINARY_DIR}/test_scratch/organism_spec)
# The organism pipeline at smoke size: build (every stage, loss must fall), resume, eval.
add_test(NAME organism_build_smoke
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_organism_build.lua ${CMAKE_SOURCE_DIR}
                 ${CMAKE_BINARY_DIR}/test_scratch)
# The shipped organism against its acceptance criteria (inference only, ~2 min): every group
# of what it must meet (behaviour, direction, sae, detection) decides the exit code. What the
# method finds on it (the planted causes' ranks, the steering flips) is reported as figures,
# not criteria (models/organism/eval.md).
add_test(NAME organism_acceptance
         COMMAND upstream organism eval ${CMAKE_SOURCE_DIR}/models/organism --require behaviour,direction,sae,detection)
set_tests_properties(organism_acceptance PROPERTIES WORKING_DIRECTORY ${CMAKE_SOURCE_DIR} LABELS slow)
# experiments/organism's diagnostic scripts on the shipped organism (token_scores.lua's S_k row
# is the mean of its per-token rows).
add_test(NAME organism_scripts
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/organism_scripts_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
# The README's main job (experiments/all.lua on the shipped organism, ~10 s).
add_test(NAME main_job COMMAND bash ${CMAKE_SOURCE_DIR}/tests/main_job_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME shared_embedding COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_shared_embedding.lua)
