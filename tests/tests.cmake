# Every tests/test_*.c is one cmocka executable registered with ctest.
# Every tests/bench_*.c is a benchmark executable (prints figures, never fails on time).
file(GLOB UP_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/test_*.c)
foreach(src ${UP_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_compile_options(${name} PRIVATE ${UP_WARNINGS})
  target_compile_definitions(${name} PRIVATE
    UP_TEST_DIR="${CMAKE_SOURCE_DIR}/tests" UP_BUILD_DIR="${CMAKE_BINARY_DIR}"
    UP_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  target_link_libraries(${name} PRIVATE upcore PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  # ctest runs tests side by side on few cores: one thread each, and threads that sleep rather
  # than spin while waiting, or spinning OpenMP and OpenBLAS threads starve each other.
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "CMOCKA_MESSAGE_OUTPUT=STDOUT;OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
endforeach()

file(GLOB UP_BENCH_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/bench_*.c)
foreach(src ${UP_BENCH_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_compile_options(${name} PRIVATE ${UP_WARNINGS})
  target_link_libraries(${name} PRIVATE upcore)
endforeach()

# Further test registrations (CLI and Lua tests, conformance) live beside their sources.
file(GLOB UP_TEST_CMAKE CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/*.test.cmake)
foreach(f ${UP_TEST_CMAKE})
  include(${f})
endforeach()

# The real-scale benchmark's programs (tests/bench/).
include(${CMAKE_SOURCE_DIR}/tests/bench/bench.cmake)
