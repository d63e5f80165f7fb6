// The agent checks what a coordinator sends before it names a file or a
// process argument (a fake coordinator, in process).

#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "common/metrics.h"
#include "worker/agent/agent.h"

namespace attune::worker::agent {
namespace {

namespace fs = std::filesystem;

// Hands out `tasks` in its first heartbeat reply and records the reports.
class FakeCoordinator : public CoordinatorClient {
 public:
  explicit FakeCoordinator(std::vector<AgentTask> tasks) : tasks_(std::move(tasks)) {}
  absl::Status Register(const RegistrationInfo&) override { return absl::OkStatus(); }
  absl::StatusOr<HeartbeatReply> Heartbeat(const std::string&, const std::vector<TaskState>& tasks) override {
    std::lock_guard<std::mutex> l(mu_);
    HeartbeatReply r;
    r.start = std::move(tasks_);
    tasks_.clear();
    for (const auto& t : tasks) seen_.push_back(t);
    return r;
  }
  absl::Status Report(const std::string&, const TrainerEvent&) override { return absl::OkStatus(); }
  std::vector<TaskState> seen() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  std::vector<AgentTask> tasks_;
  std::vector<TaskState> seen_;
};

TEST(AgentTest, RefusesAssignmentsThatWouldEscapeItsWorkDirOrAreOutOfRange) {
  const fs::path root = fs::temp_directory_path() / ("attune_agent_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "work");
  const fs::path escaped = root / "escaped-g1-r0.json";
  std::vector<AgentTask> tasks = {
      {"../escaped", 1, 0, 1, "", "gloo", "{}", ""},          // a path, not a name
      {"j-ok", 1, 3, 2, "", "gloo", "{}", ""},                // rank beyond the world size
      {"j-ok2", -1, 0, 1, "", "gloo", "{}", ""},              // a negative generation
      {"j-ok3", 1, 0, 1, "", "gloo;rm -rf /", "{}", ""},      // not a backend name
      // workers.gpus_per_rank that is not a count (this worker has no GPU, so
      // anything but 0 is refused too)
      {"j-gpu1", 1, 0, 1, "", "gloo", R"({"workers": {"gpus_per_rank": "many"}})", ""},
      {"j-gpu2", 1, 0, 1, "", "gloo", R"({"workers": {"gpus_per_rank": "-3"}})", ""},
      {"j-gpu3", 1, 0, 1, "", "gloo", R"({"workers": {"gpus_per_rank": 1.5}})", ""},
      {"j-gpu4", 1, 0, 1, "", "gloo", R"({"workers": {"gpus_per_rank": [1]}})", ""},
      {"j-gpu5", 1, 0, 1, "", "gloo", R"({"workers": {"gpus_per_rank": "99999999999999999999"}})", ""},
      // a rendezvous secret that is not hex (it would become an environment entry)
      {"j-sec1", 1, 0, 2, "127.0.0.1:1", "gloo", "{}", "0123456789abcdef0123456789abcdef\nLD_PRELOAD=/x"},
      {"j-sec2", 1, 0, 2, "127.0.0.1:1", "gloo", "{}", "abc"},
  };
  FakeCoordinator coordinator(tasks);
  common::NullMetrics metrics;
  AgentOptions o;
  o.info.worker_id = "w0";
  o.trainer_binary = "/bin/true";
  o.work_dir = (root / "work").string();
  o.heartbeat_interval = absl::Milliseconds(50);
  Agent agent(coordinator, o, metrics);
  std::atomic<bool> stop{false};
  std::thread run([&] { agent.Run(stop); });
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  stop = true;
  run.join();
  EXPECT_FALSE(fs::exists(escaped));
  EXPECT_TRUE(fs::is_empty(root / "work")) << "no spec file was written";
  EXPECT_TRUE(coordinator.seen().empty()) << "no task was started";
  fs::remove_all(root);
}

// NOTE [GPU allocation]: each GPU trainer gets devices no running trainer
// holds, as its CUDA_VISIBLE_DEVICES, and --device=cuda:0; a CPU trainer sees
// no GPU; an assignment beyond the free devices is refused.
TEST(AgentTest, GivesEachGpuTrainerItsOwnDevicesAndCpuTrainersNone) {
  const fs::path root = fs::temp_directory_path() / ("attune_agent_gpu_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "work");
  fs::create_directories(root / "seen");
  // The "trainer": records what it was given, then runs long enough for all
  // assignments to arrive while it holds its devices.
  const fs::path trainer = root / "trainer.sh";
  {
    std::ofstream f(trainer);
    f << "#!/bin/sh\nfor a in \"$@\"; do case $a in --job_id=*) j=${a#--job_id=};; esac; done\n"
      << "echo \"visible=${CUDA_VISIBLE_DEVICES-unset} secret=${ATTUNE_RENDEZVOUS_SECRET-unset} args=$*\" > "
      << (root / "seen").string() << "/$j\nsleep 3\n";
  }
  fs::permissions(trainer, fs::perms::owner_all);
  const std::string gpu1 = R"({"workers": {"gpus_per_rank": "1"}})";  // protobuf JSON: int64 as a string
  std::vector<AgentTask> tasks = {
      {"g-a", 1, 0, 1, "", "nccl", gpu1, "00112233445566778899aabbccddeeff"},
      {"cpu", 1, 0, 1, "", "gloo", "{}", ""},
      {"g-b", 1, 0, 1, "", "nccl", R"({"workers": {"gpus_per_rank": 1}})", ""},
      {"g-c", 1, 0, 1, "", "nccl", gpu1, ""},  // both devices are held by now
  };
  FakeCoordinator coordinator(tasks);
  common::NullMetrics metrics;
  AgentOptions o;
  o.info.worker_id = "w0";
  o.info.gpus = 2;
  o.gpu_ids = {"4", "7"};  // as from the agent's own CUDA_VISIBLE_DEVICES=4,7
  o.trainer_binary = trainer.string();
  o.work_dir = (root / "work").string();
  o.heartbeat_interval = absl::Milliseconds(50);
  // The agent's own environment never passes a secret on: only the assignment's.
  ::setenv("ATTUNE_RENDEZVOUS_SECRET", "ffffffffffffffffffffffffffffffff", 1);
  Agent agent(coordinator, o, metrics);
  std::atomic<bool> stop{false};
  std::thread run([&] { agent.Run(stop); });
  auto read = [&](const std::string& job) {
    std::ifstream f(root / "seen" / job);
    std::string line;
    std::getline(f, line);
    return line;
  };
  for (int i = 0; i < 100 && (read("g-a").empty() || read("g-b").empty() || read("cpu").empty()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop = true;
  run.join();
  EXPECT_NE(read("g-a").find("visible=4 "), std::string::npos) << read("g-a");
  EXPECT_NE(read("g-a").find("--device=cuda:0"), std::string::npos) << read("g-a");
  EXPECT_NE(read("g-b").find("visible=7 "), std::string::npos) << read("g-b");
  ::unsetenv("ATTUNE_RENDEZVOUS_SECRET");
  EXPECT_NE(read("g-a").find("secret=00112233445566778899aabbccddeeff "), std::string::npos) << read("g-a");
  EXPECT_EQ(read("g-a").find("0011223344"), read("g-a").find("secret=") + 7) << "the secret is not an argument";
  EXPECT_NE(read("cpu").find("secret=unset "), std::string::npos) << read("cpu");
  EXPECT_NE(read("cpu").find("visible= "), std::string::npos) << "a CPU trainer sees no GPU: " << read("cpu");
  EXPECT_EQ(read("cpu").find("--device"), std::string::npos) << read("cpu");
  EXPECT_FALSE(fs::exists(root / "seen" / "g-c")) << "a third GPU trainer on two devices was started";
  fs::remove_all(root);
}

}  // namespace
}  // namespace attune::worker::agent
