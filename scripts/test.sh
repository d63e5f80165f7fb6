#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds Attune and runs every test, then
# prints how long each phase took (ctest prints its own time per label).
set -euo pipefail
cd "$(dirname "$0")/.."
phases=()
phase() {  # phase NAME COMMAND...: runs it and records its wall time
  local name=$1 start=$SECONDS
  shift
  "$@"
  phases+=("$(printf '%-28s %4d s' "$name" $((SECONDS - start)))")
}
summary() {
  [ ${#phases[@]} -gt 0 ] || return 0
  echo "== scripts/test.sh phases ($(nproc) cores):"
  printf '   %s\n' "${phases[@]}"
}
trap summary EXIT
phase "install-deps" bash scripts/install-deps.sh
phase "build (build/)" bash scripts/build.sh
# The fuzz targets: a clang project of their own (tests/fuzz), run by ctest's `fuzz` test.
phase "build fuzz (build/fuzz)" bash scripts/fuzz.sh --build-only
# The sanitizer tree (build-asan): our code under ASan + UBSan.
phase "build sanitizers (build-asan)" bash scripts/sanitize.sh --build-only
phase "tests (build/)" bash -c 'cd build && ctest --output-on-failure --timeout 600 -j2 "$@"' ctest "$@"
# Then the whole suite again, with the sanitized binaries (skipped when
# ctest arguments select tests, e.g. `scripts/test.sh -L unit`).
if [ $# -eq 0 ]; then
  phase "tests under sanitizers" bash scripts/sanitize.sh
fi
