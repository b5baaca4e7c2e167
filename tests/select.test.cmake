# Direction selection's lazy mode picks full mode's candidate with the same bits, on the shipped
# organism and on random checkpoints (the C unit tests are test_select).
add_test(NAME select_modes COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_select_modes.lua ${CMAKE_SOURCE_DIR})
set_tests_properties(select_modes PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
