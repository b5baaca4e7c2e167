# The published experiments (experiments/*.lua) end to end on a smoke-size organism, built once
# into the build tree by a fixture setup test. A build without `upstream organism build` uses
# $UPSTREAM_TEST_ORGANISM when set, else the setup is skipped (exit 77) and the run checks only
# the tiny random-weight checkpoint (tests/lua/experiments_tiny.cfg).
include_guard(GLOBAL)
set(UP_EXP_ORG ${CMAKE_BINARY_DIR}/test_scratch/experiments_organism)
add_test(NAME experiments_organism_setup
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_experiments.lua setup ${CMAKE_SOURCE_DIR}
                 $<TARGET_FILE:upstream> ${UP_EXP_ORG})
set_tests_properties(experiments_organism_setup PROPERTIES FIXTURES_SETUP experiments_organism
                     SKIP_RETURN_CODE 77 TIMEOUT 300)
add_test(NAME experiments_published_set
         COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_experiments.lua run ${CMAKE_SOURCE_DIR}
                 $<TARGET_FILE:upstream> ${UP_EXP_ORG} ${CMAKE_BINARY_DIR}/test_scratch/experiments)
set_tests_properties(experiments_published_set PROPERTIES FIXTURES_REQUIRED experiments_organism
                     SKIP_RETURN_CODE 77 TIMEOUT 600)
