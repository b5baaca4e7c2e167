# Fuzz targets: one libFuzzer target per reader of outside data (tests/fuzz/README.md).
#
# UP_FUZZ_TARGETS is the one list of them. Target NAME is tests/fuzz/fuzz_NAME.c, its seed
# corpus tests/fuzz/seeds_NAME/. A target listed in UP_FUZZ_LUA_TARGETS also links the Lua host
# (lua/*.c but main.c) and drives the project's Lua readers in a Lua state.
#
# Two builds use this file:
#   - the normal one (any compiler) registers, per target, the ctest test fuzz_NAME, which runs
#     it for 20 s on its seed corpus; the test fuzz_build (a fixture they all require) first
#     builds every target, once, through tests/fuzz/run.sh --build; and fuzz_lua_replay, which
#     replays the Lua targets' seeds through the plain host (tests/fuzz/replay_lua.sh);
#   - the fuzz build that run.sh configures (clang, -DUP_FUZZ=ON, in <build>/fuzz/build, every
#     layer compiled with -fsanitize=fuzzer-no-link,address,undefined) defines the executables.
# Without clang or libFuzzer's runtime the tests are skipped (exit 77).
include_guard(GLOBAL)

set(UP_FUZZ_TARGETS
  tokenizer_load tokenizer_encode
  safetensors safetensors_dir npy npz model sae_saelens prompts grid_cell
  settings set_value organism_json neuronpedia)
set(UP_FUZZ_LUA_TARGETS settings set_value organism_json neuronpedia)
set(UP_FUZZ_SRC ${CMAKE_SOURCE_DIR}/tests/fuzz)

if(UP_FUZZ)
  file(GLOB up_fuzz_host_sources ${CMAKE_SOURCE_DIR}/lua/*.c)
  list(REMOVE_ITEM up_fuzz_host_sources ${CMAKE_SOURCE_DIR}/lua/main.c)
  foreach(t ${UP_FUZZ_TARGETS})
    set(sources ${UP_FUZZ_SRC}/fuzz_${t}.c ${UP_FUZZ_SRC}/fuzz_util.c)
    if(t IN_LIST UP_FUZZ_LUA_TARGETS)
      list(APPEND sources ${UP_FUZZ_SRC}/fuzz_lua.c ${up_fuzz_host_sources})
    endif()
    add_executable(fuzz_${t} ${sources})
    target_include_directories(fuzz_${t} PRIVATE ${CMAKE_SOURCE_DIR}/core ${UP_FUZZ_SRC} ${CMAKE_SOURCE_DIR}/lua)
    target_compile_definitions(fuzz_${t} PRIVATE
      UP_FUZZ_TINY="${CMAKE_SOURCE_DIR}/tests/tokenizer/tiny/tokenizer.json"
      UP_LUA_DIR="${CMAKE_SOURCE_DIR}/lua" UP_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
      UP_FUZZ_LUA="${UP_FUZZ_SRC}/lua" UP_VERSION="${PROJECT_VERSION}")
    if(t IN_LIST UP_FUZZ_LUA_TARGETS)
      target_link_libraries(fuzz_${t} PRIVATE upcore PkgConfig::LUA PkgConfig::LIBCONFIG)
    else()
      target_link_libraries(fuzz_${t} PRIVATE up_method) # and the layers below it
    endif()
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
  endforeach()
  add_custom_target(fuzz_all)
  list(TRANSFORM UP_FUZZ_TARGETS PREPEND fuzz_ OUTPUT_VARIABLE up_fuzz_all)
  add_dependencies(fuzz_all ${up_fuzz_all})
else()
  # The Lua targets' seeds replayed in the plain host: their regressions hold without clang too.
  add_test(NAME fuzz_lua_replay COMMAND bash ${UP_FUZZ_SRC}/replay_lua.sh $<TARGET_FILE:upstream> ${UP_FUZZ_LUA_TARGETS})
endif()
# The fuzz targets are built with the sanitizers anyway: the sanitizer pass (-DUP_SANITIZE=ON,
# scripts/test-sanitize.sh) does not run them a second time.
if(NOT UP_FUZZ AND NOT UP_SANITIZE)
  add_test(NAME fuzz_build COMMAND bash ${UP_FUZZ_SRC}/run.sh --build)
  set_tests_properties(fuzz_build PROPERTIES FIXTURES_SETUP fuzz_binaries SKIP_RETURN_CODE 77 TIMEOUT 1200
    ENVIRONMENT "UP_FUZZ_BUILD=${CMAKE_BINARY_DIR}/fuzz")
  foreach(t ${UP_FUZZ_TARGETS})
    add_test(NAME fuzz_${t} COMMAND bash ${UP_FUZZ_SRC}/run.sh --no-build 20 ${t})
    set_tests_properties(fuzz_${t} PROPERTIES FIXTURES_REQUIRED fuzz_binaries SKIP_RETURN_CODE 77 TIMEOUT 300
      ENVIRONMENT "UP_FUZZ_BUILD=${CMAKE_BINARY_DIR}/fuzz")
  endforeach()
endif()
