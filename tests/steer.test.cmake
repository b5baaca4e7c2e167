add_test(NAME steer_cli COMMAND bash ${CMAKE_SOURCE_DIR}/tests/steer_cli_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
set_tests_properties(steer_cli PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
