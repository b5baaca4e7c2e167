add_test(NAME cli COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
