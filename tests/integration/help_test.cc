// Every binary answers --help with its usage and its own flags, and exits 0.

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
  }
}

}  // namespace
}  // namespace attune
