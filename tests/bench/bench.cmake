# The real-scale benchmark's programs (tests/bench/published_set.sh runs them; neither is a test):
#   bench_make_checkpoint  random gemma-2-2b-it-shaped checkpoint (bf16, sharded) + GemmaScope-shaped SAEs
#   bench_machine          this machine's sgemm rate and read bandwidth
foreach(name make_checkpoint machine)
  add_executable(bench_${name} ${CMAKE_SOURCE_DIR}/tests/bench/${name}.c)
  target_compile_options(bench_${name} PRIVATE ${UP_WARNINGS})
  target_include_directories(bench_${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(bench_${name} PRIVATE upcore)
endforeach()
