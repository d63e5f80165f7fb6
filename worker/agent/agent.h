#pragma once

// The worker agent: registers with the coordinator, heartbeats, starts one
// trainer process per assignment (fork+exec of this binary's `train`),
// supervises it, relays its progress events and log lines, and kills it on
// cancel or fencing. A trainer crash never takes the agent down. While the
// coordinator is away the agent keeps its trainers running and reconnects
// with capped exponential backoff. Runs on one thread (Run()).

#include <sys/types.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "worker/agent/trainer_metrics.h"

namespace attune::worker::agent {

struct AgentTask {
  std::string job_id;
  int64_t generation = 0;
  int rank = 0, world_size = 1;
  std::string rendezvous, backend, spec_json;
  // Given to the trainer as ATTUNE_RENDEZVOUS_SECRET (NOTE [rendezvous
  // secret] in worker/comm/kv_store.h); empty: the store admits anyone.
  std::string rendezvous_secret;
};

struct TaskState {
  std::string job_id;
  int64_t generation = 0;
  int rank = 0;
  bool running = false;
  int exit_code = 0;
  std::vector<std::string> log_lines;
  std::string error;  // when !running: the trainer's own account of its failure, if it gave one
  bool stopped_unreachable = false;  // when !running: stopped by the lease, not by a fault (NOTE [agent lease])
};

struct HeartbeatReply {
  bool reregister = false;
  std::vector<AgentTask> start;
  std::vector<std::pair<std::string, int64_t>> stop;  // job, generation
};

// A trainer's event, as the trainer wrote it (one JSON object).
struct TrainerEvent {
  std::string job_id;
  int64_t generation = 0;
  int rank = 0;
  std::string json;
};

struct RegistrationInfo {
  std::string worker_id, host;
  int cpus = 1, gpus = 0;
  int rendezvous_port = 0;
};

// Outbound calls to the coordinator. Implementations set a deadline on every
// call; kUnavailable means "try again later".
class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;
  virtual absl::Status Register(const RegistrationInfo& info) = 0;
  virtual absl::StatusOr<HeartbeatReply> Heartbeat(const std::string& worker_id,
                                                   const std::vector<TaskState>& tasks) = 0;
  virtual absl::Status Report(const std::string& worker_id, const TrainerEvent& event) = 0;
};

struct AgentOptions {
  RegistrationInfo info;
  std::string trainer_binary;  // this binary
  std::string work_dir;        // spec files of assignments
  // When set, passed to every trainer (--data_root): it opens each input
  // beneath this directory, at the moment it opens it (common/confine.h).
  std::string data_root;
  // When set, passed to every trainer (--embeddings_dir): where the
  // model.init_embeddings tables are installed.
  std::string embeddings_dir;
  // NOTE [GPU allocation]: the devices this agent offers (info.gpus of them):
  // the entries of its own CUDA_VISIBLE_DEVICES, else 0..gpus-1. A trainer of
  // a spec with workers.gpus_per_rank = g gets g devices no running trainer
  // holds, as its CUDA_VISIBLE_DEVICES, and --device=cuda:0 (the first of
  // them); one with g = 0 gets CUDA_VISIBLE_DEVICES="" (no GPU). Too few free
  // devices refuses the assignment.
  std::vector<std::string> gpu_ids;
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration stop_grace = absl::Seconds(10);
  // NOTE [progress watchdog]: a trainer that has started stepping and then
  // sends nothing (no step, no heartbeat) for max(20 x its median step time,
  // this floor) is hung (SIGSTOPped, swapping, stuck outside a collective): the
  // agent kills it and reports why, and the coordinator restarts the job.
  absl::Duration progress_timeout = absl::Minutes(5);
  // NOTE [agent lease] (agent.cc): with no answered heartbeat for this long,
  // the agent stops its trainers. Zero: never. Keep it below the
  // coordinator's --heartbeat-timeout-s.
  absl::Duration coordinator_lease = absl::ZeroDuration();
  // How long a finished task's metric series stay (so the last values get scraped).
  absl::Duration forget_series_after = absl::Minutes(5);
};

class Agent {
 public:
  // `client` and `metrics` must outlive the agent.
  Agent(CoordinatorClient& client, AgentOptions options, common::Metrics& metrics);
  ~Agent();
  // Runs until `stop` becomes true; then stops its trainers.
  void Run(const std::atomic<bool>& stop);

 private:
  struct Proc {
    AgentTask task;
    pid_t pid = -1;
    int log_fd = -1, event_fd = -1;
    std::string log_buf, event_buf;
    std::vector<std::string> new_lines;
    bool running = true;
    int exit_code = 0;
    std::string error;     // from the trainer's "error" event, or the agent's own reason
    bool stopped_unreachable = false;  // the lease stopped it (NOTE [agent lease])
    absl::Time last_event = absl::InfinitePast();  // the trainer's last event of any kind
    bool stepping = false;                          // it has reported a step (the watchdog is armed)
    std::vector<double> step_seconds;               // its recent step times
    absl::Duration silence_limit;                   // NOTE [progress watchdog], from step_seconds
    int reports_left = 5;  // times a finished task is still reported
    double cpu_reported = 0;  // trainer CPU seconds already counted
    std::vector<std::string> gpus;  // the devices it holds while running
    absl::Time kill_at = absl::InfiniteFuture();
  };
  absl::Status Start(const AgentTask& t);
  absl::StatusOr<std::vector<std::string>> TakeGpus(const AgentTask& t) const;
  void Stop(Proc& p, const std::string& why);
  void Poll();
  // Exports a trainer event's metrics, keeps an "error" event's message and
  // the watchdog's state; false for events not to relay to the coordinator.
  bool Export(Proc& p, const std::string& event_json);
  // NOTE [progress watchdog]: how long `p` may stay silent.
  absl::Duration SilenceLimit(const Proc& p) const;
  void ExportProcessStats();
  std::string Key(const std::string& job, int64_t gen, int rank) const;

  CoordinatorClient& client_;
  AgentOptions options_;
  common::Metrics& metrics_;
  std::map<std::string, Proc> procs_;
  std::vector<TrainerEvent> outbox_;
  std::deque<std::pair<absl::Time, TrainerLabels>> forget_;
  double own_cpu_reported_ = 0;
};

}  // namespace attune::worker::agent
