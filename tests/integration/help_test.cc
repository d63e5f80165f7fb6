// Every binary answers --help with its usage and its own flags, and exits 0.

#include <chrono>

#include <gtest/gtest.h>

#include "tests/testing/process.h"

namespace attune {
namespace {

using testing::Bin;
using testing::RunCommand;

TEST(HelpTest, EveryBinaryListsItsFlags) {
  struct Case {
    std::string command, usage, flag;
  };
  for (const Case& c : {Case{"attune --help", "usage: attune submit", "--top_k"},
                        Case{"attune predict -h", "usage: attune submit", "--coordinator"},
                        Case{"attune-worker --help", "usage: attune-worker train", "--coordinator_lease_s"},
                        Case{"attune-worker agent --help", "usage: attune-worker train", "--progress_timeout_s"},
                        Case{"attune-coordinator --help", "usage: attune-coordinator", "--heartbeat_timeout_s"}}) {
    auto r = RunCommand(Bin(c.command.substr(0, c.command.find(' '))) + c.command.substr(c.command.find(' ')), 30);
    EXPECT_EQ(r.exit_code, 0) << c.command << "\n" << r.output;
    EXPECT_NE(r.output.find(c.usage), std::string::npos) << c.command << "\n" << r.output;
    EXPECT_NE(r.output.find(c.flag + " (default: "), std::string::npos) << c.command << "\n" << r.output;
    EXPECT_EQ(r.output.find("--flagfile"), std::string::npos) << "absl's own flags are not listed";
    EXPECT_NE(r.output.find("examples:\n  " + c.command.substr(0, c.command.find(' ')) + " "), std::string::npos)
        << c.command << "\n" << r.output;
  }
}

// The exit codes of docs/errors.md ("The attune CLI's exit codes"), without a coordinator.
TEST(CliExitCodeTest, UsageErrorsBadSpecsAndAnUnreachableCoordinator) {
  EXPECT_EQ(RunCommand(Bin("attune") + " frobnicate").exit_code, 2);
  EXPECT_EQ(RunCommand(Bin("attune") + " get").exit_code, 2);  // no job id
  // A spec refused before any call: 3 (INVALID_ARGUMENT), the bad --set path named.
  const std::string spec = std::string(ATTUNE_SOURCE_DIR) + "/examples/fine_foods.yaml";
  auto bad = RunCommand(Bin("attune") + " submit -f " + spec + " --set hyperparameters.learnin_rate=3e-4 --coordinator 127.0.0.1:1");
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  EXPECT_NE(bad.output.find("hyperparameters.learnin_rate: unknown field"), std::string::npos) << bad.output;
  auto no_eq = RunCommand(Bin("attune") + " submit -f " + spec + " --set method.type --coordinator 127.0.0.1:1");
  EXPECT_EQ(no_eq.exit_code, 3) << no_eq.output;
  EXPECT_NE(no_eq.output.find("--set method.type: expected PATH=VALUE"), std::string::npos) << no_eq.output;
  // Nobody listens: 14 (UNAVAILABLE) within the call timeout, naming the address.
  for (const char* command : {" list", " submit -f "}) {
    const auto start = std::chrono::steady_clock::now();
    auto r = RunCommand(Bin("attune") + command + (std::string(command) == " list" ? "" : spec) +
                        " --coordinator 127.0.0.1:1 --timeout_s 3");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(r.exit_code, 14) << r.output;
    EXPECT_NE(r.output.find("cannot reach the coordinator at 127.0.0.1:1"), std::string::npos) << r.output;
    EXPECT_LT(secs, 8) << command;
  }
}

}  // namespace
}  // namespace attune
