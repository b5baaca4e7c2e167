# The layering of core/ (README's module map), checked by compiling every layer pair.
add_test(NAME layering COMMAND ${CMAKE_SOURCE_DIR}/tests/layering/check.sh
  ${CMAKE_C_COMPILER} ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
