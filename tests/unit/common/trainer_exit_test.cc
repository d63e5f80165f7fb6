#include "common/trainer_exit.h"

#include <unistd.h>

#include <cstdlib>

#include <gtest/gtest.h>

#include "common/checkpoint.h"

namespace attune::common {
namespace {

TEST(TrainerExitTest, StatusesMapToTheContract) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeForStatus(absl::InvalidArgumentError("x")), 65);
  EXPECT_EQ(ExitCodeForStatus(absl::NotFoundError("x")), 65);
  EXPECT_EQ(ExitCodeForStatus(absl::FailedPreconditionError("non-finite loss")), 65);
  EXPECT_EQ(ExitCodeForStatus(absl::DataLossError("x")), 65);
  EXPECT_EQ(ExitCodeForStatus(absl::PermissionDeniedError("x")), 65);
  EXPECT_EQ(ExitCodeForStatus(absl::InternalError("x")), 70);
  EXPECT_EQ(ExitCodeForStatus(absl::ResourceExhaustedError("No space left on device")), 73);
  EXPECT_EQ(ExitCodeForStatus(absl::CancelledError("SIGTERM")), 143);
  EXPECT_EQ(ExitCodeForStatus(absl::AbortedError("x")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::DeadlineExceededError("collective timed out")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::UnavailableError("peer gone")), 1);
}

TEST(TrainerExitTest, AFencedAttemptExits75) {
  const std::string dir = ::testing::TempDir() + "/lease_" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  ASSERT_TRUE(TakeLease(dir, {"j1", 1}).ok());
  EXPECT_TRUE(CheckLease(dir, {"j1", 1}).ok());
  ASSERT_TRUE(TakeLease(dir, {"j1", 2}).ok());  // the next attempt
  const absl::Status old = CheckLease(dir, {"j1", 1});
  EXPECT_EQ(old.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(old.message().find("fenced: generation 2 of job j1"), std::string::npos) << old;
  EXPECT_EQ(ExitCodeForStatus(old), 75);
  EXPECT_FALSE(TakeLease(dir, {"j1", 1}).ok());  // an old attempt cannot take it back
  EXPECT_TRUE(CheckLease(dir, {"j2", 1}).ok());  // another job's lease is not this job's fence
  EXPECT_TRUE(CheckLease(dir, {}).ok());         // a hand-run trainer takes no lease
  std::system(("rm -rf " + dir).c_str());
}

TEST(TrainerExitTest, OnlyDeterministicFailuresArePermanent) {
  for (int code : {2, 65, 70, 73}) EXPECT_TRUE(IsPermanentExit(code)) << code;
  for (int code : {1, 137, 143, 139, 42}) EXPECT_FALSE(IsPermanentExit(code)) << code;
  EXPECT_EQ(ExitCodeMeaning(137), "killed by signal 9");
  EXPECT_EQ(ExitCodeMeaning(65), "invalid input");
}

TEST(TrainerExitTest, MessagesAreCappedAndFreeOfControlCharacters) {
  EXPECT_EQ(SanitizeTrainerMessage("bad\nline\x1b[31m"), "bad line [31m");
  EXPECT_EQ(SanitizeTrainerMessage(std::string(5000, 'a')).size(), 1024u);
}

}  // namespace
}  // namespace attune::common
