#pragma once

// Domain types of the coordinator. No proto, no gRPC.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/job_config.h"

namespace attune::coordinator {

// Job lifecycle: VALIDATING -> QUEUED -> SCHEDULED -> RUNNING <-> RECOVERING ->
// SUCCEEDED | FAILED | CANCELLED, with CANCELLING between any live state and
// CANCELLED. The numbers match attune.v1.JobState.
enum class JobState {
  kValidating = 1,
  kQueued = 2,
  kScheduled = 3,
  kRunning = 4,
  kRecovering = 5,
  kCancelling = 6,
  kSucceeded = 7,
  kFailed = 8,
  kCancelled = 9,
  kUnschedulable = 10,  // NOTE [unschedulable] in job_manager.cc
};
const char* JobStateName(JobState s);
bool IsTerminal(JobState s);

struct ProgressInfo {
  int64_t step = 0, total_steps = 0;
  double epoch = 0, loss = 0, learning_rate = 0, samples_per_second = 0;
};

struct EvalInfo {
  int64_t step = -1;
  std::map<std::string, double> metrics;  // by name, as the trainer reported them
};

// The metric map a trainer may report: at most 64 names of [a-z0-9_]{1,64},
// finite values. Anything else is refused (kInvalidArgument, naming it).
absl::Status ValidateEvalMetrics(const std::map<std::string, double>& metrics);

struct Job {
  std::string id;
  int64_t seq = 0;  // submission order
  std::string idempotency_key;  // scoped to the owner ("owner/key")
  std::string owner;            // the submitting identity; empty when authentication is off
  common::JobConfig config;
  std::string spec_json;  // the spec as submitted (proto3 JSON), handed to agents
  JobState state = JobState::kValidating;
  std::string message;
  int64_t generation = 0;
  int64_t restarts = 0;
  int64_t created_ms = 0, updated_ms = 0;
  int64_t not_before_ms = 0;  // restart backoff
  ProgressInfo progress;
  EvalInfo last_eval;
  EvalInfo baseline;  // TF-IDF + logistic regression on the validation set
  std::string baseline_method;
  int64_t last_checkpoint_step = -1;
  std::vector<std::string> workers;  // per rank, current attempt
  // model.from_job, resolved to a job id at submit; cleared once that job has
  // succeeded and spec_json names its model (NOTE [job chaining]).
  std::string depends_on;
};

enum class EventType {
  kStateChanged = 1,
  kProgress = 2,
  kEvaluation = 3,
  kCheckpoint = 4,
  kWorkerLost = 5,
  kRestart = 6,
  kBaseline = 7,  // eval: the baseline's metrics; message: its method
};

struct Event {
  int64_t index = 0;
  int64_t unix_ms = 0;
  EventType type = EventType::kStateChanged;
  JobState state = JobState::kValidating;
  std::string message;
  ProgressInfo progress;
  EvalInfo eval;
  int64_t generation = 0;
};

}  // namespace attune::coordinator
