# The bad-input catalogue (tests/bad_inputs/README.md): every malformed input of
# tests/bad_inputs/catalogue.tsv fails with its exit status and one message naming the file,
# flag or key and the problem; no crash, no temporary file left, nothing written outside the
# case's run directory or into the source tree (tests/bad_inputs/run.sh).
#   bad_inputs           the catalogue
#   bad_inputs_runner    the runner's own checks: each case of selftest.tsv breaks one and must
#                        be reported as failed
include_guard(GLOBAL)
add_test(NAME bad_inputs
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/bad_inputs/run.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME bad_inputs_runner
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/bad_inputs/run.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR}
                 --catalogue ${CMAKE_SOURCE_DIR}/tests/bad_inputs/selftest.tsv --expect-fail)
set_tests_properties(bad_inputs bad_inputs_runner PROPERTIES
                     ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1" TIMEOUT 300)
