add_test(NAME cli COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME demo_experiment COMMAND upstream ${CMAKE_SOURCE_DIR}/experiments/demo.lua ${CMAKE_SOURCE_DIR})
set_tests_properties(demo_experiment PROPERTIES PASS_REGULAR_EXPRESSION "first-order prediction")
