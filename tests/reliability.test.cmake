# Reliability (issue 18): real SIGKILLs at seeded random moments, then a rerun to the end.
#   kill_grid      a steering run (experiments/example.lua, tiny checkpoint), 5 trials of two
#                  kills: final tables equal a run never killed, bit for bit, and the rerun
#                  computes exactly the missing cells; two runs sharing one cache at once
#   kill_organism  the organism trainer (a short --smoke recipe), 5 trials of two kills: every
#                  output equals a build never killed, bit for bit (training resumes from its
#                  checkpoint)
include_guard(GLOBAL)
add_test(NAME kill_grid COMMAND bash ${CMAKE_SOURCE_DIR}/tests/reliability/kill_grid_test.sh
                                $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR} 5)
add_test(NAME kill_organism COMMAND bash ${CMAKE_SOURCE_DIR}/tests/reliability/kill_organism_test.sh
                                    $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR} 5)
set_tests_properties(kill_grid kill_organism PROPERTIES
                     ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1" TIMEOUT 600)
# The sanitizer pass (scripts/test-sanitize.sh, -LE slow) leaves kill_organism out: eleven
# organism builds under ASan take several minutes, and the trainer's code is covered there by
# organism_build_smoke; kill_grid stays in (about 3 minutes under ASan).
set_tests_properties(kill_organism PROPERTIES LABELS slow)
