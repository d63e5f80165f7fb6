#include "common/checkpoint.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/files.h"
#include "common/testing/status_matchers.h"

namespace attune::common {
namespace {

namespace fs = std::filesystem;
using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("attune_ckpt_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  CheckpointInfo Write(int64_t step, const std::string& payload, int keep = 5) {
    auto tmp = BeginCheckpoint(root_.string(), step);
    EXPECT_THAT(tmp, IsOk());
    EXPECT_THAT(WriteFileSynced(*tmp + "/model.bin", payload), IsOk());
    EXPECT_THAT(WriteFileSynced(*tmp + "/state.json", "{}"), IsOk());
    auto info = CommitCheckpoint(root_.string(), *tmp, step, {"model.bin", "state.json"}, keep);
    EXPECT_THAT(info, IsOk());
    return *info;
  }

  fs::path root_;
};

TEST_F(CheckpointTest, LatestCommittedWins) {
  Write(10, "ten");
  Write(20, "twenty");
  auto latest = FindLatestCheckpoint(root_.string(), nullptr);
  ASSERT_THAT(latest, IsOk());
  EXPECT_EQ(latest->step, 20);
  EXPECT_EQ(*ReadFile(latest->dir + "/model.bin"), "twenty");
}

TEST_F(CheckpointTest, UncommittedTemporaryDirectoryIsIgnored) {
  Write(10, "ten");
  auto tmp = BeginCheckpoint(root_.string(), 30);
  ASSERT_THAT(WriteFileSynced(*tmp + "/model.bin", "partial"), IsOk());
  EXPECT_EQ(FindLatestCheckpoint(root_.string(), nullptr)->step, 10);
}

TEST_F(CheckpointTest, TruncatedFileFallsBackToPreviousCheckpoint) {
  Write(10, "ten-ten-ten");
  auto info = Write(20, "twenty-twenty");
  fs::resize_file(info.dir + "/model.bin", 5);
  std::vector<std::string> skipped;
  auto latest = FindLatestCheckpoint(root_.string(), &skipped);
  ASSERT_THAT(latest, IsOk());
  EXPECT_EQ(latest->step, 10);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("truncated"), std::string::npos) << skipped[0];
}

TEST_F(CheckpointTest, FlippedByteIsDetected) {
  auto info = Write(20, "twenty-twenty");
  {
    std::fstream f(info.dir + "/model.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('X');
  }
  EXPECT_THAT(VerifyCheckpoint(info.dir), StatusIs(absl::StatusCode::kDataLoss, "SHA-256"));
  EXPECT_THAT(FindLatestCheckpoint(root_.string(), nullptr), StatusIs(absl::StatusCode::kNotFound, ""));
}

TEST_F(CheckpointTest, MissingManifestOrFileIsRejected) {
  auto a = Write(10, "a");
  auto b = Write(20, "b");
  fs::remove(b.dir + "/manifest.json");
  fs::remove(a.dir + "/state.json");
  EXPECT_THAT(VerifyCheckpoint(b.dir), StatusIs(absl::StatusCode::kDataLoss, "no manifest"));
  EXPECT_THAT(VerifyCheckpoint(a.dir), StatusIs(absl::StatusCode::kDataLoss, "missing"));
  EXPECT_THAT(FindLatestCheckpoint(root_.string(), nullptr), StatusIs(absl::StatusCode::kNotFound, ""));
}

TEST_F(CheckpointTest, KeepsOnlyTheLastN) {
  for (int s = 1; s <= 4; ++s) Write(s * 10, "x", /*keep=*/2);
  int committed = 0;
  for (const auto& e : fs::directory_iterator(root_)) committed += e.path().filename().string().rfind("step-", 0) == 0;
  EXPECT_EQ(committed, 2);
  EXPECT_EQ(FindLatestCheckpoint(root_.string(), nullptr)->step, 40);
}

}  // namespace
}  // namespace attune::common
