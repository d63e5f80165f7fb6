#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds Attune and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# The fuzz targets: a clang project of their own (tests/fuzz), run by ctest's `fuzz` test.
bash scripts/fuzz.sh --build-only
# The sanitizer tree (build-asan): our code under ASan + UBSan.
bash scripts/sanitize.sh --build-only
(cd build && ctest --output-on-failure --timeout 600 -j2 "$@")
# Then the whole suite again, with the sanitized binaries (skipped when
# ctest arguments select tests, e.g. `scripts/test.sh -L unit`).
if [ $# -eq 0 ]; then
  bash scripts/sanitize.sh
fi
