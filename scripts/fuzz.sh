#!/usr/bin/env bash
# Builds the clang sanitizer project (tests/fuzz: libFuzzer targets and the
# torch-free unit tests, under ASan + UBSan) into build/fuzz and runs it:
#   fuzz.sh --build-only     configure and build, nothing else (scripts/test.sh)
#   fuzz.sh --unit-tests     the sanitized unit tests
#   fuzz.sh [--seconds N]    every seed-corpus file once (the regression run),
#                            then N seconds of fuzzing per target (default 20)
#   fuzz.sh --seconds 0      the regression run only
#   fuzz.sh --ci             the regression run, then a fixed number of
#                            executions per target (about 10 s each here) from
#                            a seed derived from the commit: what ctest's
#                            `fuzz` test runs, so a failing CI run reproduces
#                            exactly on any machine with the same command
#   --seed N                 libFuzzer's seed (default: random, printed;
#                            with --ci: from the commit, printed)
# New inputs go to a scratch directory, not into tests/fuzz/corpus; a crash is
# written to build/fuzz/crashes/ and fails the run. Prints the executions per
# target and in all. Longer fuzzing is for sessions: what it finds goes into
# tests/fuzz/corpus with its fix.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20
build_only=0
unit_tests=0
ci=0
seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:-}"; shift ;;
    --seed) seed="${2:-}"; shift ;;
    --ci) ci=1 ;;
    --build-only) build_only=1 ;;
    --unit-tests) unit_tests=1 ;;
    *) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds wants a whole number" >&2; exit 2 ;; esac
case "$seed" in *[!0-9]*) echo "fuzz.sh: --seed wants a whole number" >&2; exit 2 ;; esac
if [ ${#seed} -gt 9 ]; then echo "fuzz.sh: --seed wants at most 9 digits" >&2; exit 2; fi

out=build/fuzz
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if ! command -v clang++-14 >/dev/null; then
  echo "fuzz.sh: clang++-14 is missing (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [ ! -f "$out/CMakeCache.txt" ]; then
  cmake -S tests/fuzz -B "$out" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
fi
cmake --build "$out" -j "$(nproc)"
[ "$build_only" = 1 ] && exit 0
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
if [ "$unit_tests" = 1 ]; then
  for t in "$out"/sanitized_*_test; do
    echo "== $t"
    "$t" --gtest_brief=1
  done
  exit 0
fi

targets=(job_spec data_reader safetensors torch_pickle tokenizer tokenizer_json tokenizer_model chat_template http_request
         state_row kv_store)
# --ci: executions per target, about 10 s each on this project's 2-core
# machines (a run's count does not depend on the machine's speed).
declare -A ci_runs=([job_spec]=20000 [data_reader]=60000 [safetensors]=130000 [torch_pickle]=110000
                    [tokenizer]=35000 [tokenizer_json]=60000 [tokenizer_model]=20000 [chat_template]=15000
                    [http_request]=2000000 [state_row]=35000 [kv_store]=450000)
seed_from=""
if [ -z "$seed" ]; then
  if [ "$ci" = 1 ]; then
    commit=$(git rev-parse --short=7 HEAD 2>/dev/null || true)
    if [ -n "$commit" ]; then
      seed=$((16#$commit))
      seed_from=" (from commit $commit)"
    else
      seed=1
      seed_from=" (not a git checkout)"
    fi
  else
    seed=$(( (RANDOM << 15 | RANDOM) + 1 ))
    seed_from=" (random)"
  fi
fi
if [ "$ci" = 1 ]; then
  echo "fuzz: seed $seed$seed_from; to reproduce: bash scripts/fuzz.sh --ci --seed $seed"
else
  echo "fuzz: seed $seed$seed_from"
fi
mkdir -p "$out/crashes"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
total=0
failed=0
for t in "${targets[@]}"; do
  corpus=tests/fuzz/corpus/$t
  bin=$out/fuzz_$t
  # Every corpus file once: the crashes found before stay fixed.
  if ! "$bin" -runs=0 "$corpus" >"$scratch/$t.regression.log" 2>&1; then
    echo "fuzz.sh: $t: a corpus file fails:" >&2
    tail -40 "$scratch/$t.regression.log" >&2
    failed=1
    continue
  fi
  files=$(find "$corpus" -type f | wc -l)
  if [ "$ci" = 0 ] && [ "$seconds" -eq 0 ]; then
    echo "fuzz $t: $files corpus files pass"
    continue
  fi
  if [ "$ci" = 1 ]; then
    budget=(-runs="${ci_runs[$t]}")
    what="${ci_runs[$t]} runs"
  else
    budget=(-max_total_time="$seconds")
    what="$seconds s"
  fi
  mkdir -p "$scratch/$t"
  started=$SECONDS
  if "$bin" "${budget[@]}" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$out/crashes/$t-" "$scratch/$t" "$corpus" >"$scratch/$t.log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -1)
    echo "fuzz $t: $files corpus files pass; ${execs:-0} executions ($what, $((SECONDS - started)) s), no crash"
    total=$((total + ${execs:-0}))
  else
    echo "fuzz.sh: $t: crashed (seed $seed); the input is in $out/crashes/:" >&2
    tail -60 "$scratch/$t.log" >&2
    failed=1
  fi
done
echo "fuzz: $total executions in all"
exit $failed
