#!/usr/bin/env bash
# The sanitizer build (NOTE [sanitizer build] in CMakeLists.txt): our code
# under ASan + UBSan in build-asan/, and the whole ctest suite run there (every
# label but fuzz, deploy and gpu): the services, trainer, rendezvous, NCCL
# communicator (against tests/fakes/cuda), agent and CLI through real
# processes and sockets, with the sanitized binaries (the Python client's test
# runs in the plain pass only: its subject is Python).
#   sanitize.sh --build-only   configure and build every target (scripts/test.sh)
#   sanitize.sh [CTEST ARGS]   build if needed, then run the suite (scripts/test.sh
#                              runs it after the plain suite); e.g. -R KvStore
# UB is fatal; a memory error fails the run with the report.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
# The torch precompiled header (NOTE [torch precompiled header] in cmake/AttuneHelpers.cmake).
export CCACHE_SLOPPINESS=pch_defines,time_macros
build_only=0
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
fi
out=build-asan
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [ ! -f "$out/CMakeCache.txt" ]; then
  cmake -S . -B "$out" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTUNE_SANITIZE=ON -DATTUNE_BENCHES=OFF \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
fi
cmake --build "$out" -j "$(nproc)"
[ "$build_only" = 1 ] && exit 0

# libtorch and gloo are not instrumented: their allocations made before ours
# are not leaks of ours, so leak checking stays off (the fuzz tree's
# sanitized_unit_tests check leaks in the torch-free code); everything else is on.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$out"
exec ctest --output-on-failure --timeout 1800 -j "$(nproc)" -LE '^(fuzz|sanitize|deploy|gpu)$' "$@"
