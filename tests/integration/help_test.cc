// Every binary answers --help with its usage and its own flags, and exits 0.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

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

// Flag values that overflowed or starved a process before (--max_message_mb
// 4096 became 0, --threads 100000 started 29,000 threads) are refused at start,
// naming the flag, with exit code 2.
TEST(FlagRangeTest, OutOfRangeFlagsAreRefusedNamingTheFlag) {
  const std::string spec = std::string(ATTUNE_SOURCE_DIR) + "/examples/fine_foods.yaml";
  struct Case {
    std::string command, message;
  };
  for (const Case& c :
       {Case{"attune-coordinator --max-message-mb 4096", "--max_message_mb must be in [1, 1024], not 4096"},
        Case{"attune-coordinator --heartbeat_timeout_s 0", "--heartbeat_timeout_s must be in [1, 3600]"},
        // gRPC took a port past 65535 and served on another one.
        Case{"attune-coordinator --listen 127.0.0.1:99999",
             "--listen must be HOST:PORT with PORT in [0, 65535], not '127.0.0.1:99999'"},
        Case{"attune-coordinator --listen 50051", "--listen must be HOST:PORT"},
        Case{"attune-coordinator --metrics_listen 'a b:9'", "--metrics_listen must be HOST:PORT"},
        Case{"attune-worker agent --metrics_listen 127.0.0.1:-1", "--metrics_listen must be HOST:PORT"},
        Case{"attune-worker train --spec " + spec + " --threads 100000", "--threads must be in [0, 256], not 100000"},
        Case{"attune-worker train --spec " + spec + " --threads -1", "--threads must be in [0, 256]"},
        Case{"attune-worker train --spec " + spec + " --world_size 0", "--world_size must be in [1, 1024]"},
        Case{"attune-worker train --spec " + spec + " --nproc -1", "--nproc must be in [0, 64]"},
        Case{"attune-worker train --spec " + spec + " --bucket_cap_mb -5", "--bucket_cap_mb must be in [1, 1024]"},
        Case{"attune-worker train --spec " + spec + " --world_size 2 --rank 2", "--rank must be < --world_size"},
        Case{"attune-worker agent --cpus -3", "--cpus must be in [0, 4096]"},
        // 0 (never stop the trainers) is in range, as --help says.
        Case{"attune-worker agent --coordinator_lease_s -1", "--coordinator_lease_s must be in [0, 3600], not -1"},
        // An agent confines its jobs unless told, in so many words, not to.
        Case{"attune-worker agent --coordinator 127.0.0.1:1", "give --data-root DIR"},
        Case{"attune-worker agent --coordinator 127.0.0.1:1 --data-root /tmp --unconfined", "contradict"},
        Case{"attune predict --model m --input i --batch_size 0", "--batch_size must be in [1, 65536], not 0"},
        Case{"attune predict --model m --input i --threads 100000", "--threads must be in [1, 256]"},
        Case{"attune list --timeout_s 0", "--timeout_s must be in [1, 86400]"}}) {
    auto r = RunCommand(Bin(c.command.substr(0, c.command.find(' '))) + c.command.substr(c.command.find(' ')), 30);
    EXPECT_EQ(r.exit_code, 2) << c.command << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.command << "\n" << r.output;
  }
  // The rendezvous secret comes from the environment; it is checked like a flag.
  auto r = RunCommand("env ATTUNE_RENDEZVOUS_SECRET='abc;x' " + Bin("attune-worker") + " train --spec " + spec +
                          " --world_size 2 --rank 1 --rendezvous 127.0.0.1:1",
                      30);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("ATTUNE_RENDEZVOUS_SECRET must be 32 to 128 lowercase hex digits"), std::string::npos)
      << r.output;
}

// `attune predict --input X --output X` truncated X to 0 bytes; a failed
// predict left a partial output behind.
TEST(PredictOutputTest, TheInputIsNeverOverwrittenAndAFailureLeavesNoFile) {
  const std::string dir = ::testing::TempDir() + "/predict_output_" + std::to_string(::getpid());
  ASSERT_EQ(RunCommand("mkdir -p " + dir + "/sub").exit_code, 0);
  const std::string input = dir + "/in.csv";
  { std::ofstream(input) << "text\ngood food\n"; }
  for (const std::string& same : {input, dir + "/sub/../in.csv"}) {
    auto r = RunCommand(Bin("attune") + " predict --model " + dir + " --input " + input + " --output " + same);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("--output is the --input file"), std::string::npos) << r.output;
  }
  ASSERT_EQ(RunCommand("ln -s " + input + " " + dir + "/link.csv").exit_code, 0);
  EXPECT_EQ(RunCommand(Bin("attune") + " predict --model " + dir + " --input " + input + " --output " + dir +
                       "/link.csv").exit_code,
            2);
  EXPECT_EQ(std::filesystem::file_size(input), 15u);
  // No model in `dir`: predict fails, and neither the output (beside `dir`:
  // nothing may be written inside the model) nor a partial file is left.
  const std::string out = dir + "-out.jsonl";
  auto r = RunCommand(Bin("attune") + " predict --model " + dir + " --input " + input + " --output " + out);
  EXPECT_EQ(r.exit_code, 65) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(dir).parent_path())) {
    EXPECT_NE(e.path().string().rfind(out, 0), 0u) << e.path();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attune
