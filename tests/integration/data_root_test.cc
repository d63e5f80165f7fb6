// `attune-worker train --data-root R` (what an agent started with
// --data-root passes its trainers): inputs are opened beneath R when they are
// opened, and the refusals name the spec field and the user's path.

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

#include "tests/testing/process.h"
#include "tests/testing/task_data.h"

namespace attune {
namespace {

namespace fs = std::filesystem;
using testing::Bin;
using testing::RunCommand;

class DataRootTest : public ::testing::Test {
 protected:
  DataRootTest() {
    base_ = fs::temp_directory_path() / ("attune_dataroot_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "root");
    fs::create_directories(base_ / "outside");
    testing::WriteTinyBinaryCsvs(base_ / "root/train.csv", base_ / "root/valid.csv", "food", "great", "awful");
    std::ofstream(base_ / "outside/secret.csv") << "text,label\nthe secret,pos\nother,neg\n";
  }
  ~DataRootTest() override { fs::remove_all(base_); }

  // Trains for 2 steps on `train` (relative to the root) into `output_dir`.
  testing::CommandResult Train(const std::string& train, const std::string& output_dir) {
    const fs::path spec = base_ / "spec.yaml";
    std::ofstream(spec) << "name: confined\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, "
                           "num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 64}\n"
                           "  vocab_size: 100\ndata: {train: "
                        << (base_ / "root" / train).string() << ", validation: " << (base_ / "root/valid.csv").string()
                        << ", max_length: 24}\nhyperparameters: {max_steps: 2, batch_size: 4}\n"
                           "evaluation: {baseline: false}\noutput_dir: "
                        << output_dir << "\n";
    return RunCommand(Bin("attune-worker") + " train --spec " + spec.string() + " --data-root " +
                          (base_ / "root").string(),
                      120);
  }
  fs::path base_;
};

TEST_F(DataRootTest, InputsBeneathTheRootTrainAndErrorsNameTheUsersPaths) {
  auto ok = Train("train.csv", (base_ / "root/out").string());
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(fs::exists(base_ / "root/out/model/model.safetensors")) << ok.output;
  // The output directory is written through its descriptor; what is printed is the user's path.
  EXPECT_NE(ok.output.find("model:   " + (base_ / "root/out/model").string() + "\n"), std::string::npos) << ok.output;
  // The data report names the file the spec gave.
  std::ifstream report(base_ / "root/out/data_report.json");
  const std::string text((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"" + (base_ / "root/train.csv").string() + "\""), std::string::npos) << text;
  EXPECT_EQ(text.find("attune-inputs"), std::string::npos) << text;
  // A malformed file: the message names it as the user wrote it, not the staged copy.
  std::ofstream(base_ / "root/broken.csv") << "text,label\n\"unterminated,pos\n";
  auto bad = Train("broken.csv", (base_ / "root/out2").string());
  EXPECT_EQ(bad.exit_code, 65) << bad.output;
  EXPECT_NE(bad.output.find((base_ / "root/broken.csv").string() + ":2"), std::string::npos) << bad.output;
  EXPECT_EQ(bad.output.find("attune-inputs"), std::string::npos) << bad.output;
}

TEST_F(DataRootTest, LinksOutFifosAndBadOutputDirsAreRefusedNamingTheField) {
  // passwd.tsv -> a file outside: refused, not read.
  fs::create_symlink(base_ / "outside/secret.csv", base_ / "root/link.csv");
  auto link = Train("link.csv", (base_ / "root/out").string());
  EXPECT_EQ(link.exit_code, 65) << link.output;
  EXPECT_NE(link.output.find("data.train: " + (base_ / "root/link.csv").string()), std::string::npos) << link.output;
  EXPECT_EQ(link.output.find("the secret"), std::string::npos);
  // A FIFO: refused at once (the test's timeout would catch a hang).
  ASSERT_EQ(::mkfifo((base_ / "root/train.fifo").c_str(), 0600), 0);
  auto fifo = Train("train.fifo", (base_ / "root/out").string());
  EXPECT_EQ(fifo.exit_code, 65) << fifo.output;
  EXPECT_NE(fifo.output.find("not a regular file"), std::string::npos) << fifo.output;
  // output_dir: the root itself, a dangling link, a place outside.
  auto root = Train("train.csv", (base_ / "root").string());
  EXPECT_EQ(root.exit_code, 65) << root.output;
  EXPECT_NE(root.output.find("output_dir: " + (base_ / "root").string() + " is the data root itself"), std::string::npos)
      << root.output;
  fs::create_symlink(base_ / "nowhere", base_ / "root/dangling");
  auto dangling = Train("train.csv", (base_ / "root/dangling").string());
  EXPECT_EQ(dangling.exit_code, 65) << dangling.output;
  EXPECT_NE(dangling.output.find("is a dangling symbolic link"), std::string::npos) << dangling.output;
  auto outside = Train("train.csv", (base_ / "outside/out").string());
  EXPECT_EQ(outside.exit_code, 65) << outside.output;
  EXPECT_NE(outside.output.find("output_dir:"), std::string::npos) << outside.output;
  EXPECT_FALSE(fs::exists(base_ / "outside/out"));
  // An output tree with a link out inside (model -> outside): nothing is written through it.
  fs::create_directories(base_ / "root/planted");
  fs::create_symlink(base_ / "outside", base_ / "root/planted/model");
  auto planted = Train("train.csv", (base_ / "root/planted").string());
  EXPECT_EQ(planted.exit_code, 65) << planted.output;
  EXPECT_NE(planted.output.find("planted/model is a symbolic link"), std::string::npos) << planted.output;
  EXPECT_FALSE(fs::exists(base_ / "outside/model.safetensors"));
}

}  // namespace
}  // namespace attune
