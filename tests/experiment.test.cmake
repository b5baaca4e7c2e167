# The experiment layer (docs/lua-api.md) on the tiny test model, settings in
# tests/experiment/upstream.cfg:
#   experiment_run     experiments/example.lua end to end: outputs parse, tables equal the C API's
#                      numbers, figures decode with content and the manifest (check.lua); two runs
#                      give identical tables; run directories are never reused; a run killed
#                      resumes from the grid cache with the same tables
#   experiment_errors  bad declarations, steps, Lua errors, settings and --set give file:line
#   experiment_lua     the library's pieces on their own (CSV, JSON, paths, --set values)
#   experiment_labels  latent names from a Neuronpedia export (and its urls) and from
#                      top-activating tokens over a text file (tests/experiment/labels.cfg)
#   experiment_prompts --set harmful=FILE (JSON records, CSV, JSON Lines) replaces a declared
#                      prompt set on the shipped organism (tables, manifest path + sha256); a bad
#                      file fails naming the setting and path before any model loads
#   experiment_progress  upstream.progress's lines (off and on a terminal, quiet, sets), the
#                      bars of a real run on stderr and none with --quiet (progress_test.lua)
include_guard(GLOBAL)
set(UP_EXP_ENV "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
add_test(NAME experiment_run
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/experiment/experiment_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME experiment_errors
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/experiment/errors_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME experiment_lua
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/experiment/library_test.lua ${CMAKE_SOURCE_DIR})
add_test(NAME experiment_labels
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/experiment/labels_test.lua ${CMAKE_SOURCE_DIR})
add_test(NAME experiment_prompts
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/experiment/prompt_files_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME experiment_progress
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/experiment/progress_test.lua ${CMAKE_SOURCE_DIR} $<TARGET_FILE:upstream>)
set_tests_properties(experiment_run experiment_errors experiment_lua experiment_labels experiment_prompts experiment_progress PROPERTIES ENVIRONMENT "${UP_EXP_ENV}" TIMEOUT 300)

# experiment_steer_vectors  X:steer along a Direction (at its own hook) and vectors at named
#                      hooks: the raw grid's cells bit for bit, rows, series, cache, errors
add_test(NAME experiment_steer_vectors
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/experiment/steer_vectors_test.lua ${CMAKE_SOURCE_DIR})
set_tests_properties(experiment_steer_vectors PROPERTIES ENVIRONMENT "${UP_EXP_ENV}" TIMEOUT 300)

# experiment_outputs  what a run leaves for people to read (tests/experiment/outputs_exp.lua):
#                     report.md tables at four significant digits (CSVs at %.9g), steering
#                     alphas as requested, manifest timings in whole milliseconds, user records'
#                     columns in the order given (upstream.csv.row), the ranking's score_kind
#                     and a second label for a prompt attributed with another score
add_test(NAME experiment_outputs
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/experiment/outputs_test.lua ${CMAKE_SOURCE_DIR} $<TARGET_FILE:upstream>)
set_tests_properties(experiment_outputs PROPERTIES ENVIRONMENT "${UP_EXP_ENV}" TIMEOUT 300)

# Figures (issue 20): misspelt fields in X:figure specs and the ready-made figures' options fail
# at the experiment's line with a suggestion; titles name the score; token labels are legible.
add_test(NAME experiment_figures
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/experiment/figures_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
set_tests_properties(experiment_figures PROPERTIES ENVIRONMENT "${UP_EXP_ENV}" TIMEOUT 300)
