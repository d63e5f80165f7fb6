# attune_cc_library(NAME n HDRS ... SRCS ... DEPS ... [PRIVATE_DEPS ...] [TORCH_PCH])
# Builds attune_<n> with the alias attune::<n>. DEPS are PUBLIC (they appear in
# our headers); PRIVATE_DEPS are implementation details. TORCH_PCH: its sources
# include <torch/torch.h> (NOTE [torch precompiled header]).
set(ATTUNE_WARNINGS -Wall -Wextra -Werror -Wno-unused-parameter)

# NOTE [torch precompiled header]: parsing <torch/torch.h> is most of the
# compile time of each of the 36 translation units that include it (an empty
# file that includes it: 40 s; with a precompiled header: 6 s, at -O2 -g on
# this project's 2-core machines), and they are compiled twice, in build/ and
# build-asan/. Each tree precompiles the header once (attune_torch_pch) and
# the targets that use torch reuse it, which works because every target of a
# tree compiles with the same optimisation, debug, sanitizer and ABI flags;
# warnings and our own definitions (ATTUNE_*) do not enter the header. A
# source of such a target that does not include torch is marked
# SKIP_PRECOMPILE_HEADERS. ccache caches the header and its users
# (CCACHE_SLOPPINESS=pch_defines,time_macros in scripts/build.sh and
# scripts/sanitize.sh). -DATTUNE_TORCH_PCH=OFF compiles without it.
# UNINSTRUMENTED: the target's own code is compiled without the sanitizers
# (NOTE [uninstrumented test code]); it reuses a second header built the same way.
option(ATTUNE_TORCH_PCH "Precompile <torch/torch.h> once per tree" ON)
function(attune_torch_pch target)
  cmake_parse_arguments(P "UNINSTRUMENTED" "" "" ${ARGN})
  if(NOT ATTUNE_TORCH_PCH)
    return()
  endif()
  set(pch attune_torch_pch)
  if(P_UNINSTRUMENTED)
    set(pch attune_torch_pch_uninstrumented)
  endif()
  if(NOT TARGET ${pch})
    add_library(${pch} STATIC ${PROJECT_SOURCE_DIR}/cmake/torch_pch.cc)
    target_link_libraries(${pch} PRIVATE ${TORCH_LIBRARIES})
    target_precompile_headers(${pch} PRIVATE <torch/torch.h>)
    target_compile_options(${pch} PRIVATE -pthread)
    if(P_UNINSTRUMENTED)
      target_compile_options(${pch} PRIVATE -fno-sanitize=all)
    endif()
  endif()
  target_precompile_headers(${target} REUSE_FROM ${pch})
  # -pthread defines _REENTRANT, which a header compiled without it refuses
  # (-Winvalid-pch); targets that link gRPC get it anyway, so all take it.
  target_compile_options(${target} PRIVATE -pthread)
endfunction()

function(attune_cc_library)
  cmake_parse_arguments(A "TORCH_PCH" "NAME" "HDRS;SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target attune_${A_NAME})
  if(A_SRCS)
    add_library(${target} STATIC ${A_SRCS} ${A_HDRS})
    target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
    target_compile_options(${target} PRIVATE ${ATTUNE_WARNINGS})
    if(A_TORCH_PCH)
      attune_torch_pch(${target})
    endif()
  else()
    add_library(${target} INTERFACE)
    target_include_directories(${target} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${target} INTERFACE ${A_DEPS})
  endif()
  add_library(attune::${A_NAME} ALIAS ${target})
endfunction()

# attune_cc_test(NAME n SRCS ... DEPS ... LABELS unit|integration|multiproc|gpu [TIMEOUT s] [SKIPPABLE] [TORCH_PCH]
#                [INSTRUMENTED])
# SKIPPABLE: a test that calls GTEST_SKIP (no GPU here) is reported Skipped.
# TORCH_PCH: as attune_cc_library's.
function(attune_cc_test)
  cmake_parse_arguments(A "SKIPPABLE;TORCH_PCH;INSTRUMENTED" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  target_compile_options(${A_NAME} PRIVATE ${ATTUNE_WARNINGS})
  # NOTE [uninstrumented test code]: in the sanitizer tree the tests' own
  # sources are compiled without ASan and UBSan; the libraries and binaries
  # they exercise are instrumented, and the executable links the sanitizer
  # runtime, so every access our code makes is checked (memory that test code
  # allocates gets the runtime's redzones too). Instrumenting the test
  # bodies checked only the tests' own code, for 830 of the tree's 1,960
  # compile seconds (2 cores, a fresh clone). INSTRUMENTED: a test that
  # compiles product sources itself.
  set(uninstrumented "")
  if(ATTUNE_SANITIZE AND NOT A_INSTRUMENTED)
    target_compile_options(${A_NAME} PRIVATE -fno-sanitize=all)
    set(uninstrumented UNINSTRUMENTED)
  endif()
  if(A_TORCH_PCH)
    attune_torch_pch(${A_NAME} ${uninstrumented})
  endif()
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
