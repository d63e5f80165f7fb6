// Device placement through the trainer binary: --device cpu trains the same
// model, bit for bit, as the default; a GPU asked for by the flag or by
// workers.gpus_per_rank on a machine or build without one fails at once,
// permanently (exit 65), saying why.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/files.h"
#include "tests/testing/process.h"
#include "tests/testing/task_data.h"

namespace attune {
namespace {

namespace fs = std::filesystem;
using testing::Bin;
using testing::RunCommand;

class DeviceTest : public ::testing::Test {
 protected:
  DeviceTest() : dir_("device") {
    testing::WriteTinyBinaryCsvs(dir_ / "train.csv", dir_ / "valid.csv", "tea", "lovely", "bitter");
  }
  testing::CommandResult Train(const std::string& out, const std::string& flags, int gpus = 0) {
    std::ofstream(dir_ / "spec.yaml")
        << "name: dev\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
           "intermediate_size: 32, max_position_embeddings: 64}\n  vocab_size: 100\ndata: {train: "
        << (dir_ / "train.csv") << ", validation: " << (dir_ / "valid.csv")
        << ", max_length: 24}\nhyperparameters: {max_steps: 4, batch_size: 4}\nevaluation: {baseline: false}\n"
           "workers: {count: 1, gpus_per_rank: "
        << gpus << "}\noutput_dir: " << (dir_ / out) << "\n";
    return RunCommand(Bin("attune-worker") + " train --spec " + (dir_ / "spec.yaml") + " " + flags, 120);
  }
  testing::TempDir dir_;
};

TEST_F(DeviceTest, TheCpuDeviceTrainsTheSameModelAndAMissingGpuIsAClearPermanentError) {
  auto plain = Train("plain", "");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_NE(plain.output.find("device=cpu"), std::string::npos) << plain.output;
  auto cpu = Train("cpu", "--device cpu");
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  EXPECT_EQ(*common::Sha256OfFile(dir_ / "plain/model/model.safetensors"),
            *common::Sha256OfFile(dir_ / "cpu/model/model.safetensors"));
  if (torch::cuda::is_available()) GTEST_SKIP() << "this build and machine have a GPU";
  auto flag = Train("flag", "--device cuda");
  EXPECT_EQ(flag.exit_code, 65) << flag.output;
  EXPECT_NE(flag.output.find("--device cuda asks for a GPU, but no CUDA device is usable here"), std::string::npos)
      << flag.output;
  auto spec = Train("spec", "", 1);
  EXPECT_EQ(spec.exit_code, 65) << spec.output;
  EXPECT_NE(spec.output.find("workers.gpus_per_rank: 1 asks for a GPU"), std::string::npos) << spec.output;
  EXPECT_FALSE(fs::exists(dir_ / "spec/checkpoints")) << "nothing is written before the device is known";
}

}  // namespace
}  // namespace attune
