# attune_cc_library(NAME n HDRS ... SRCS ... DEPS ... [PRIVATE_DEPS ...])
# Builds attune_<n> with the alias attune::<n>. DEPS are PUBLIC (they appear in
# our headers); PRIVATE_DEPS are implementation details.
set(ATTUNE_WARNINGS -Wall -Wextra -Werror -Wno-unused-parameter)

function(attune_cc_library)
  cmake_parse_arguments(A "" "NAME" "HDRS;SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target attune_${A_NAME})
  if(A_SRCS)
    add_library(${target} STATIC ${A_SRCS} ${A_HDRS})
    target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
    target_compile_options(${target} PRIVATE ${ATTUNE_WARNINGS})
  else()
    add_library(${target} INTERFACE)
    target_include_directories(${target} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} INTERFACE ${A_DEPS})
  endif()
  add_library(attune::${A_NAME} ALIAS ${target})
endfunction()

# attune_cc_test(NAME n SRCS ... DEPS ... LABELS unit|integration|multiproc|gpu [TIMEOUT s] [SKIPPABLE])
# SKIPPABLE: a test that calls GTEST_SKIP (no GPU here) is reported Skipped.
function(attune_cc_test)
  cmake_parse_arguments(A "SKIPPABLE" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  target_compile_options(${A_NAME} PRIVATE ${ATTUNE_WARNINGS})
  target_compile_definitions(${A_NAME} PRIVATE
    ATTUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" ATTUNE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  set(skip "")
  if(A_SKIPPABLE)
    set(skip SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
  endif()
  gtest_discover_tests(${A_NAME}
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT} ${skip})
endfunction()
