add_test(NAME steer_cli COMMAND bash ${CMAKE_SOURCE_DIR}/tests/steer_cli_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
set_tests_properties(steer_cli PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
# Long lists through the bindings (regression: the Lua stack overflowed and corrupted the heap).
add_test(NAME binding_stack COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_binding_stack.lua)
set_tests_properties(binding_stack PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
# The layer an SAE is read at (upstream.sae's layer option; one dictionary across layers).
add_test(NAME sae_layer COMMAND upstream ${CMAKE_SOURCE_DIR}/tests/lua/test_sae_layer.lua ${CMAKE_SOURCE_DIR})
set_tests_properties(sae_layer PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
