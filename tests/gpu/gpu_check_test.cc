// Label `gpu`: the NCCL communicator and the CUDA trainer, through
// attune-gpu-check. Without a usable GPU each test is skipped (ctest reports
// "Skipped", never "Passed"), naming why.

#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/process.h"

namespace {

using attune::testing::Bin;
using attune::testing::RunCommand;

std::vector<nlohmann::json> Lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) v.push_back(j);
  }
  return v;
}

// The reason there is no GPU to test on, or empty when there is one.
std::string NoGpuReason(const std::vector<nlohmann::json>& lines) {
  for (const auto& j : lines) {
    if (j.value("check", "") == "nccl_init" && !j.value("ok", false)) {
      const std::string e = j.value("error", "");
      if (e.find("FAILED_PRECONDITION") != std::string::npos) return e;
    }
  }
  return "";
}

TEST(GpuCheckTest, NcclCollectivesAndCudaBucketsMatchACpuReference) {
  const int port = attune::testing::FreePort();
  auto r = RunCommand(Bin("attune-gpu-check") + " nccl --port " + std::to_string(port), 300);
  auto lines = Lines(r.output);
  if (std::string why = NoGpuReason(lines); !why.empty()) GTEST_SKIP() << why;
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int checks = 0;
  for (const auto& j : lines) {
    EXPECT_TRUE(j.value("ok", false)) << j.dump();
    ++checks;
  }
  // init, 3 dtypes x 2 places of allreduce, broadcast and allgather per place, barrier, reducer, summary.
  EXPECT_GE(checks, 14) << r.output;
}

TEST(GpuCheckTest, TheTrainerTrainsOnTheGpuInBothPrecisions) {
  auto probe = RunCommand(Bin("attune-gpu-check") + " nccl --port " + std::to_string(attune::testing::FreePort()), 300);
  if (std::string why = NoGpuReason(Lines(probe.output)); !why.empty()) GTEST_SKIP() << why;
  attune::testing::TempDir dir("gpu-train");
  for (const std::string precision : {"fp32", "bf16"}) {
    auto r = RunCommand(Bin("attune-gpu-check") + " train --device cuda --hidden 128 --layers 2 --heads 2 --seq 64 "
                        "--batch 16 --steps 14 --vocab 8000 --precision " + precision + " --work " + dir.path(), 600);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto lines = Lines(r.output);
    ASSERT_FALSE(lines.empty()) << r.output;
    const auto& j = lines.back();
    EXPECT_EQ(j.value("precision", ""), precision);
    EXPECT_EQ(j.value("steps", 0), 14);
    EXPECT_GT(j.value("samples_per_second", 0.0), 0.0);
    EXPECT_LT(j.value("last_loss", 99.0), 2.0) << j.dump();
  }
}

}  // namespace
