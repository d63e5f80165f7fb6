// The agent checks what a coordinator sends before it names a file or a
// process argument (a fake coordinator, in process).

#include <filesystem>
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
      {"../escaped", 1, 0, 1, "", "gloo", "{}"},          // a path, not a name
      {"j-ok", 1, 3, 2, "", "gloo", "{}"},                // rank beyond the world size
      {"j-ok2", -1, 0, 1, "", "gloo", "{}"},              // a negative generation
      {"j-ok3", 1, 0, 1, "", "gloo;rm -rf /", "{}"},      // not a backend name
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

}  // namespace
}  // namespace attune::worker::agent
