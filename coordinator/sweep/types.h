#pragma once

// Domain types of sweeps. No proto, no gRPC: the rpc layer converts
// attune.v1.SweepSpec into SweepConfig.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/types.h"

namespace attune::coordinator::sweep {

// The values one parameter may take.
struct ParamDomain {
  enum class Kind { kChoice, kIntRange, kUniform, kLogUniform };
  std::string path;  // a spec path: "hyperparameters.learning_rate"
  Kind kind = Kind::kChoice;
  std::vector<std::string> choices;  // kChoice: each a JSON literal ("0.1", "\"lora\"", "true")
  double low = 0, high = 0;          // the ranges; kIntRange includes both ends
};

struct EarlyStopConfig {
  enum class Type { kNone, kMedian, kAsha } type = Type::kNone;
  // asha (in optimizer steps; evaluations are converted at submit)
  int64_t grace_steps = 0;
  int64_t reduction_factor = 4;
  int64_t max_steps = 0;
  // median
  int64_t min_trials = 3;
  int64_t start_step = 0;
};

struct SweepConfig {
  std::string name;
  std::string base_spec_json;  // the base job spec, proto3 JSON with proto field names
  std::string output_dir;      // the base spec's
  std::string task;            // the base spec's task
  std::vector<ParamDomain> params;  // sorted by path
  std::string objective;
  bool maximize = true;
  std::string algorithm = "random";  // random | grid
  int64_t seed = 0;
  int64_t max_trials = 0;
  int64_t parallel_trials = 1;
  EarlyStopConfig early_stopping;
};

enum class SweepState { kRunning = 1, kSucceeded = 2, kFailed = 3, kCancelling = 4, kCancelled = 5 };
const char* SweepStateName(SweepState s);
inline bool IsTerminal(SweepState s) {
  return s == SweepState::kSucceeded || s == SweepState::kFailed || s == SweepState::kCancelled;
}

struct TrialRecord {
  int64_t index = 0;
  std::map<std::string, std::string> params;  // path -> JSON literal
  std::string job_id;                         // empty until submitted
  JobState state = JobState::kQueued;         // the job's, as last seen
  bool terminal = false;                      // the job ended (or could not be submitted)
  std::map<int64_t, double> curve;            // objective by evaluation step
  bool has_final = false;                     // completed: the exported model's objective
  double final_objective = 0;
  int64_t steps = 0;
  bool stopped_early = false;
  std::string stopped_reason, message;
  std::map<int64_t, double> rungs;  // asha: rung step -> the objective recorded there
};

// The objective a trial is ranked by: the exported model's when it
// completed, else its last evaluation's. False when it has none.
bool TrialObjective(const TrialRecord& t, double* value);

struct SweepRecord {
  std::string id;
  int64_t seq = 0;
  std::string idempotency_key;
  std::string owner;         // the submitting identity; its trials are its jobs
  bool owner_admin = false;  // whether it submitted as an admin (trials may build on anyone's jobs)
  SweepConfig config;
  std::string spec_json;  // the SweepSpec as submitted (proto3 JSON), for display
  SweepState state = SweepState::kRunning;
  std::string message;
  std::vector<TrialRecord> trials;  // by index
  int64_t best_trial = -1;
  double best_objective = 0;
  int64_t created_ms = 0, updated_ms = 0;
  int64_t version = 0;
  bool cancel_requested = false;
};

// Serialisation for the state store (JSON text).
std::string SweepToJson(const SweepRecord& s);
absl::StatusOr<SweepRecord> SweepFromJson(const std::string& text);

}  // namespace attune::coordinator::sweep
