#pragma once

// The scheduler: a pure, deterministic function of the queue and the cluster.
//
// 1. Jobs are taken by priority (higher first), then submission order.
// 2. A job is placed whole or not at all (gang scheduling): each rank goes to
//    the worker with the most free CPUs that also has the GPUs it needs
//    (ties: worker id), which spreads ranks over workers.
// 3. A job that the cluster could not hold even with every worker idle is
//    held with the reason, and does not block anything.
// 4. Reservation with backfill: the first job that fits the cluster but not
//    its free resources reserves its placement on the idle cluster (the same
//    every tick while the cluster is unchanged). Jobs behind it are placed only
//    on what the reservation leaves: on a reserved worker of total T with R
//    reserved, at most T - R may be in use by others. So they never delay it:
//    once the jobs running when it was reserved end, it fits. Jobs behind a
//    second blocked job wait.

#include <cstdint>
#include <string>
#include <vector>

namespace attune::coordinator {

struct WorkerView {
  std::string id;
  int64_t free_cpus = 0;
  int64_t free_gpus = 0;
  // Capacity (free plus in use); negative: the same as free.
  int64_t total_cpus = -1;
  int64_t total_gpus = -1;
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

// A job the cluster could never hold as it is, and why.
struct Held {
  std::string job_id;
  std::string reason;
};

std::vector<Placement> Schedule(std::vector<WorkerView> cluster, std::vector<QueuedJob> queue,
                                std::vector<Held>* held = nullptr);

}  // namespace attune::coordinator
