#!/usr/bin/env bash
# The sanitizer build (NOTE [sanitizer build] in CMakeLists.txt): our code
# under ASan + UBSan in build-asan/, and the tests that run its services,
# trainer, rendezvous, NCCL communicator (against tests/fakes/cuda) and agent
# through real processes and sockets:
#   sanitize.sh --build-only   configure and build (scripts/test.sh)
#   sanitize.sh                build if needed, then run the tests
#   sanitize.sh --all          the nightly run: build every target there and run
#                              the whole ctest suite of build-asan (all labels but
#                              fuzz, sanitize, deploy and gpu); about an hour on 2 cores
# UB is fatal; a leak or memory error fails the run with the report.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
build_only=0
all=0
case "${1:-}" in
  --build-only) build_only=1 ;;
  --all) all=1 ;;
  '') ;;
  *) echo "sanitize.sh: unknown option $1 (--build-only, --all)" >&2; exit 2 ;;
esac
out=build-asan
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [ ! -f "$out/CMakeCache.txt" ]; then
  cmake -S . -B "$out" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTUNE_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
fi
targets=(attune-coordinator attune-worker attune kv_store_test comm_test nccl_fake_test agent_test data_root_test help_test
  service_test)
if [ "$all" = 1 ]; then
  cmake --build "$out" -j "$(nproc)"
else
  cmake --build "$out" -j "$(nproc)" --target "${targets[@]}"
fi
[ "$build_only" = 1 ] && exit 0

# libtorch and gloo are not instrumented: their allocations made before ours
# are not leaks of ours, so leak checking stays off; everything else is on.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ "$all" = 1 ]; then
  cd "$out"
  exec ctest --output-on-failure --timeout 1800 -j "$(nproc)" -LE '^(fuzz|sanitize|deploy|gpu)$'
fi
run() {
  echo "== $*"
  "$@" --gtest_brief=1
}
run "$out/tests/kv_store_test"
run "$out/tests/comm_test"
run "$out/tests/nccl_fake_test"
run "$out/tests/agent_test"
run "$out/tests/data_root_test"
run "$out/tests/help_test"
run "$out/tests/service_test" --gtest_filter='ServiceTest.SubmitAndWatchToSucceededWithMetrics:ServiceTest.TokensAreRequiredWhenConfigured:ServiceTest.SubmittersSeeAndChangeOnlyTheirOwnJobsAndSweeps:ServiceTest.AnAgentCannotTakeALiveWorkersId:ServiceTest.CertificateIdentitiesBindWorkerIdsAndOwners:ServiceTest.CertificateRolesAuthorizeWithoutTokens:ServiceTest.ADownloadEqualsTheFilesOnDiskAndALinkOutOfTheJobIsRefused:ServiceTest.InvalidSpecIsRejectedAndNothingIsStored:ServiceTest.KilledTrainerRecoversFromItsCheckpoint'
