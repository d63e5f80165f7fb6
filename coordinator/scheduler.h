#pragma once

// The scheduler: a pure, deterministic function of the queue and the cluster.
//
// 1. Jobs are taken by priority (higher first), then submission order.
// 2. A job is placed whole or not at all (gang scheduling): each rank goes to
//    the worker with the most free CPUs that also has the GPUs it needs
//    (ties: worker id), which spreads ranks over workers.
// 3. Reservation: when the job at the head cannot be placed, nothing behind it
//    is placed either, so small jobs cannot overtake a large one forever.

#include <cstdint>
#include <string>
#include <vector>

namespace attune::coordinator {

struct WorkerView {
  std::string id;
  int64_t free_cpus = 0;
  int64_t free_gpus = 0;
};

struct QueuedJob {
  std::string id;
  int64_t priority = 0;
  int64_t seq = 0;
  int64_t ranks = 1;
  int64_t cpus_per_rank = 1;
  int64_t gpus_per_rank = 0;
};

struct Placement {
  std::string job_id;
  std::vector<std::string> workers;  // one per rank
};

std::vector<Placement> Schedule(std::vector<WorkerView> cluster, std::vector<QueuedJob> queue);

}  // namespace attune::coordinator
