# tutorial  docs/tutorial.md's scripts, extracted and run on the organism as printed, and the
#           claims its text makes about their results (tests/tutorial_test.sh)
include_guard(GLOBAL)
add_test(NAME tutorial COMMAND bash ${CMAKE_SOURCE_DIR}/tests/tutorial_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
set_tests_properties(tutorial PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1"
                     TIMEOUT 300)
