// Open-time confinement beneath a data root: links out of it, `..`, FIFOs,
// and a path swapped for a link after it was staged.

#include "common/confine.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "common/files.h"
#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"

namespace attune::common {
namespace {

namespace fs = std::filesystem;
using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

class ConfineTest : public ::testing::Test {
 protected:
  ConfineTest() {
    base_ = fs::temp_directory_path() / ("attune_confine_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "root/models/m");
    fs::create_directories(base_ / "outside");
    Write(base_ / "root/train.csv", "text,label\ngood,pos\n");
    Write(base_ / "outside/secret.txt", "the secret\n");
    root_ = (base_ / "root").string();
  }
  ~ConfineTest() override { fs::remove_all(base_); }
  static void Write(const fs::path& p, const std::string& s) { ::attune::testing::WriteText(p.string(), s); }
  static std::string Read(const std::string& p) { return ::attune::testing::ReadText(p); }
  fs::path base_;
  std::string root_;
};

TEST_F(ConfineTest, AFileBeneathOpensAndLinksOutOfTheRootDoNot) {
  EXPECT_THAT(OpenBeneath(root_, root_ + "/train.csv", FileKind::kRegular), IsOk());
  fs::create_symlink(base_ / "outside/secret.txt", base_ / "root/passwd.tsv");
  EXPECT_THAT(OpenBeneath(root_, root_ + "/passwd.tsv", FileKind::kRegular),
              StatusIs(absl::StatusCode::kPermissionDenied, "passwd.tsv"));
  fs::create_symlink("../outside", base_ / "root/escape");
  EXPECT_THAT(OpenBeneath(root_, root_ + "/escape/secret.txt", FileKind::kRegular),
              StatusIs(absl::StatusCode::kPermissionDenied, "escape/secret.txt"));
  EXPECT_THAT(OpenBeneath(root_, root_ + "/../outside/secret.txt", FileKind::kRegular),
              StatusIs(absl::StatusCode::kPermissionDenied, "is not beneath the data root"));
  EXPECT_THAT(OpenBeneath(root_, root_ + "/missing.csv", FileKind::kRegular), StatusIs(absl::StatusCode::kNotFound, ""));
  // A relative link that stays inside is followed where openat2 confines it;
  // without openat2 every link is refused.
  fs::create_symlink("train.csv", base_ / "root/alias.csv");
  if (HaveOpenat2()) {
    EXPECT_THAT(OpenBeneath(root_, root_ + "/alias.csv", FileKind::kRegular), IsOk());
  } else {
    EXPECT_THAT(OpenBeneath(root_, root_ + "/alias.csv", FileKind::kRegular),
                StatusIs(absl::StatusCode::kPermissionDenied, ""));
  }
}

TEST_F(ConfineTest, AFifoIsRefusedNotWaitedOn) {
  // Opening a FIFO for reading blocks until a writer comes: data.train = a
  // FIFO hung the trainer's open() forever.
  ASSERT_EQ(::mkfifo((root_ + "/train.fifo").c_str(), 0600), 0);
  EXPECT_THAT(OpenBeneath(root_, root_ + "/train.fifo", FileKind::kRegular),
              StatusIs(absl::StatusCode::kPermissionDenied, "not a regular file"));
  EXPECT_THAT(OpenBeneath(root_, root_ + "/models", FileKind::kRegular),
              StatusIs(absl::StatusCode::kPermissionDenied, "is a directory"));
}

TEST_F(ConfineTest, AStagedFileKeepsItsContentWhenThePathIsSwappedForALink) {
  StagedInputs staged((base_ / "staging").string());
  auto at = staged.Stage(root_, root_ + "/train.csv", "data.train");
  ASSERT_THAT(at, IsOk());
  EXPECT_EQ(fs::path(*at).filename(), "train.csv");  // the name and extension stay
  // The attack: after the check, the file is replaced by a link to a secret.
  fs::remove(base_ / "root/train.csv");
  fs::create_symlink(base_ / "outside/secret.txt", base_ / "root/train.csv");
  EXPECT_EQ(Read(*at), "text,label\ngood,pos\n");
  EXPECT_EQ(staged.Unstage("bad row in " + *at + ":2"), "bad row in " + root_ + "/train.csv:2");
}

TEST_F(ConfineTest, AModelDirectoryIsStagedFileByFileAndALinkOutIsRefused) {
  Write(base_ / "root/models/m/config.json", "{}");
  Write(base_ / "root/models/m/vocab.txt", "[PAD]\n");
  fs::create_directories(base_ / "root/models/m/sub");
  {
    StagedInputs staged((base_ / "staging").string());
    auto at = staged.Stage(root_, root_ + "/models/m", "model.path");
    ASSERT_THAT(at, IsOk());
    EXPECT_EQ(Read(*at + "/vocab.txt"), "[PAD]\n");
    EXPECT_EQ(Read(*at + "/config.json"), "{}");
  }
  EXPECT_FALSE(fs::exists(base_ / "staging"));  // removed with its owner
  fs::remove(base_ / "root/models/m/vocab.txt");
  fs::create_symlink(base_ / "outside/secret.txt", base_ / "root/models/m/vocab.txt");
  StagedInputs staged((base_ / "staging").string());
  EXPECT_THAT(staged.Stage(root_, root_ + "/models/m", "model.path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "model.path: " + root_ + "/models/m/vocab.txt"));
}

TEST_F(ConfineTest, AnOutputDirectoryIsWrittenThroughItsDescriptorNotItsPath) {
  StagedInputs staged((base_ / "staging").string());
  auto at = staged.PinDirectory(root_, root_ + "/runs/a/out", "output_dir", /*create=*/true, /*no_links_inside=*/true);
  ASSERT_THAT(at, IsOk());
  EXPECT_TRUE(fs::is_directory(base_ / "root/runs/a/out"));  // made, parents too
  Write(fs::path(*at) / "first.txt", "1");
  EXPECT_EQ(Read(root_ + "/runs/a/out/first.txt"), "1");
  // The attack: while the job runs, the path is moved away and replaced by a
  // link out of the root. The trainer's writes still land in its directory.
  fs::rename(base_ / "root/runs/a", base_ / "root/runs/moved");
  fs::create_symlink(base_ / "outside", base_ / "root/runs/a");
  fs::create_directories(base_ / "root/runs/moved/out/checkpoints");
  Write(fs::path(*at) / "checkpoints/second.txt", "2");
  EXPECT_EQ(Read(root_ + "/runs/moved/out/checkpoints/second.txt"), "2");
  EXPECT_FALSE(fs::exists(base_ / "outside/out"));
  EXPECT_EQ(staged.Unstage("wrote " + *at + "/model"), "wrote " + root_ + "/runs/a/out/model");
}

// NOTE [pinned directories] (common/files.h): inside the pinned output
// directory, a subdirectory swapped for a link out of the root mid-run is
// never followed by the trainer's file operations (write, atomic write, mkdir,
// read, hash, size, rename, list, remove): each is refused naming the link, or
// removes the link itself, and the outside stays as it was.
TEST_F(ConfineTest, ALinkPlantedInsideAPinnedOutputDirectoryIsNeverFollowed) {
  StagedInputs staged((base_ / "staging").string());
  auto at = staged.PinDirectory(root_, root_ + "/out", "output_dir", /*create=*/true, /*no_links_inside=*/true);
  ASSERT_THAT(at, IsOk());
  const std::string out = *at;
  // Ordinary use works: directories, files, atomic writes, renames, listing, removal.
  ASSERT_THAT(MakeDirs(out + "/checkpoints/.tmp-step-1"), IsOk());
  ASSERT_THAT(WriteFileSynced(out + "/checkpoints/.tmp-step-1/model.safetensors", "weights"), IsOk());
  ASSERT_THAT(RenamePath(out + "/checkpoints/.tmp-step-1", out + "/checkpoints/step-000000001"), IsOk());
  ASSERT_THAT(WriteFileAtomic(out + "/eval_report.json", "{}"), IsOk());
  EXPECT_EQ(Read(root_ + "/out/checkpoints/step-000000001/model.safetensors"), "weights");
  EXPECT_THAT(ReadFile(out + "/eval_report.json"), IsOk());
  EXPECT_THAT(FileSize(out + "/checkpoints/step-000000001/model.safetensors"), IsOk());
  auto listed = ListDirectory(out + "/checkpoints");
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_TRUE((*listed)[0].is_directory);

  // The attack: checkpoints/ and model/ become links to a directory outside.
  fs::create_directories(base_ / "outside/step-000000001");
  Write(base_ / "outside/step-000000001/keep.txt", "outside data");
  fs::rename(base_ / "root/out/checkpoints", base_ / "root/out/moved");
  fs::create_symlink(base_ / "outside", base_ / "root/out/checkpoints");
  fs::create_symlink(base_ / "outside", base_ / "root/out/model");
  const auto refused = [](const absl::Status& s) {
    return s.code() == absl::StatusCode::kPermissionDenied &&
           std::string(s.message()).find("is a symbolic link or not a directory") != std::string::npos;
  };
  EXPECT_TRUE(refused(WriteFileSynced(out + "/checkpoints/x.txt", "x")));
  EXPECT_TRUE(refused(WriteFileAtomic(out + "/model/config.json", "{}")));
  EXPECT_TRUE(refused(MakeDirs(out + "/checkpoints/.tmp-step-2")));
  EXPECT_TRUE(refused(ReadFile(out + "/checkpoints/step-000000001/keep.txt").status()));
  EXPECT_TRUE(refused(Sha256OfFile(out + "/checkpoints/step-000000001/keep.txt").status()));
  EXPECT_TRUE(refused(FileSize(out + "/model/secret.txt").status()));
  EXPECT_TRUE(refused(RenamePath(out + "/moved/step-000000001", out + "/checkpoints/step-000000002")));
  EXPECT_TRUE(refused(RemoveTree(out + "/checkpoints/step-000000001")));
  EXPECT_FALSE(PathExists(out + "/checkpoints/step-000000001"));
  // The link as a leaf is neither written through nor read through.
  EXPECT_EQ(WriteFileSynced(out + "/model", "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReadFile(out + "/model").status().code(), absl::StatusCode::kPermissionDenied);
  auto links = ListDirectory(out);
  ASSERT_THAT(links, IsOk());
  for (const auto& e : *links) EXPECT_EQ(e.is_directory, e.name == "moved") << e.name;
  // Removing the output tree removes the links, not what they point to.
  ASSERT_THAT(RemoveTree(out + "/checkpoints"), IsOk());
  ASSERT_THAT(RemoveTree(out + "/model"), IsOk());
  EXPECT_FALSE(fs::exists(fs::symlink_status(base_ / "root/out/checkpoints")));
  EXPECT_EQ(Read((base_ / "outside/step-000000001/keep.txt").string()), "outside data");
  EXPECT_EQ(Read((base_ / "outside/secret.txt").string()), "the secret\n");
  EXPECT_FALSE(fs::exists(base_ / "outside/x.txt"));
  EXPECT_FALSE(fs::exists(base_ / "outside/config.json"));
  EXPECT_FALSE(fs::exists(base_ / "outside/.tmp-step-2"));
  // `..` does not climb out of the pin either.
  EXPECT_EQ(WriteFileSynced(out + "/../escaped.txt", "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(fs::exists(base_ / "root/escaped.txt"));
}

TEST_F(ConfineTest, AnOutputDirectoryOutsideTheRootOrHoldingLinksIsRefused) {
  StagedInputs staged((base_ / "staging").string());
  auto pin = [&](const std::string& path, bool create = true) {
    return staged.PinDirectory(root_, path, "output_dir", create, /*no_links_inside=*/true);
  };
  EXPECT_THAT(pin(root_), StatusIs(absl::StatusCode::kPermissionDenied, "is the data root itself"));
  EXPECT_THAT(pin(root_ + "/"), StatusIs(absl::StatusCode::kPermissionDenied, "is the data root itself"));
  fs::create_symlink(base_ / "root/nowhere", base_ / "root/dangling");
  EXPECT_THAT(pin(root_ + "/dangling"), StatusIs(absl::StatusCode::kPermissionDenied, "dangling symbolic link"));
  fs::create_symlink("../outside", base_ / "root/escape");
  EXPECT_THAT(pin(root_ + "/escape/run"), StatusIs(absl::StatusCode::kPermissionDenied, "output_dir: "));
  EXPECT_FALSE(fs::exists(base_ / "outside/run")) << "nothing is made outside the root";
  EXPECT_THAT(pin(base_.string() + "/outside/run"), StatusIs(absl::StatusCode::kPermissionDenied, "not beneath"));
  fs::create_directories(base_ / "root/old/checkpoints");
  fs::create_symlink(base_ / "outside", base_ / "root/old/checkpoints/ckpt-1");
  EXPECT_THAT(pin(root_ + "/old"),
              StatusIs(absl::StatusCode::kPermissionDenied, "old/checkpoints/ckpt-1 is a symbolic link"));
  EXPECT_THAT(pin(root_ + "/never", /*create=*/false), StatusIs(absl::StatusCode::kNotFound, "does not exist"));
  EXPECT_FALSE(fs::exists(base_ / "root/never"));
}

TEST_F(ConfineTest, WithoutARootLinksAreFollowedButFifosStillRefused) {
  fs::create_symlink(base_ / "outside/secret.txt", base_ / "root/notes.txt");
  StagedInputs staged((base_ / "staging").string());
  auto at = staged.Stage("", root_ + "/notes.txt", "data.train");
  ASSERT_THAT(at, IsOk());
  EXPECT_EQ(Read(*at), "the secret\n");  // no root: the operator confined nothing
  ASSERT_EQ(::mkfifo((root_ + "/train.fifo").c_str(), 0600), 0);
  EXPECT_THAT(staged.Stage("", root_ + "/train.fifo", "data.train"),
              StatusIs(absl::StatusCode::kPermissionDenied, "data.train: " + root_ + "/train.fifo is not a regular file"));
  auto out = staged.PinDirectory("", base_.string() + "/outside/run", "output_dir", true, false);
  ASSERT_THAT(out, IsOk());
  EXPECT_TRUE(fs::is_directory(base_ / "outside/run"));
}

}  // namespace
}  // namespace attune::common
