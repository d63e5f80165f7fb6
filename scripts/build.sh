#!/usr/bin/env bash
# Configures and builds into build/ (binaries in build/bin/).
#   build.sh                 every target: binaries, tests, benches
#   build.sh TARGET...       only these (scripts/demo.sh: the three binaries it runs)
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache: share results between checkouts in different directories.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
# The torch precompiled header (NOTE [torch precompiled header] in cmake/AttuneHelpers.cmake).
export CCACHE_SLOPPINESS=pch_defines,time_macros
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
