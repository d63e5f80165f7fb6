#pragma once

// Maps a trainer's events (the JSON lines it writes to the agent) onto
// Prometheus series labelled job_id and rank. The catalogue, with each
// metric's meaning and the panel that shows it, is docs/observability.md.

#include <string>

#include "common/metrics.h"

namespace attune::worker::agent {

struct TrainerLabels {
  std::string job_id;
  int rank = 0;
  std::string backend;  // gloo | nccl
};

// Records one event. Malformed or unknown events are ignored (they are the
// trainer's business, not the agent's).
void ExportTrainerEvent(common::Metrics& m, const TrainerLabels& who, const std::string& event_json);

// attune_worker_task_running{job_id,rank}: 1 while the trainer process runs;
// attune_train_attempt{job_id,rank}: the attempt (generation) it belongs to.
void SetTaskRunning(common::Metrics& m, const TrainerLabels& who, bool running);
void SetTaskAttempt(common::Metrics& m, const TrainerLabels& who, int64_t generation);

// Drops every series of this job and rank (after the task ended and its last
// values had time to be scraped).
void ForgetTrainer(common::Metrics& m, const TrainerLabels& who);

// Bucket boundaries, in seconds.
extern const std::vector<double> kStepBuckets;       // 5 ms .. 60 s
extern const std::vector<double> kAllreduceBuckets;  // 0.5 ms .. 5 s
extern const std::vector<double> kCheckpointBuckets; // 0.1 s .. 30 min

}  // namespace attune::worker::agent
