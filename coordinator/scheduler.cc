#include "coordinator/scheduler.h"

#include <algorithm>

namespace attune::coordinator {

std::vector<Placement> Schedule(std::vector<WorkerView> cluster, std::vector<QueuedJob> queue) {
  std::stable_sort(queue.begin(), queue.end(), [](const QueuedJob& a, const QueuedJob& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.seq < b.seq;
  });
  std::vector<Placement> out;
  for (const QueuedJob& job : queue) {
    std::vector<WorkerView> trial = cluster;
    Placement p{job.id, {}};
    for (int64_t r = 0; r < job.ranks; ++r) {
      WorkerView* best = nullptr;
      for (auto& w : trial) {
        if (w.free_cpus < job.cpus_per_rank || w.free_gpus < job.gpus_per_rank) continue;
        if (!best || w.free_cpus > best->free_cpus || (w.free_cpus == best->free_cpus && w.id < best->id)) best = &w;
      }
      if (!best) break;
      best->free_cpus -= job.cpus_per_rank;
      best->free_gpus -= job.gpus_per_rank;
      p.workers.push_back(best->id);
    }
    if (static_cast<int64_t>(p.workers.size()) != job.ranks) break;  // reservation: the head blocks the rest
    cluster = std::move(trial);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace attune::coordinator
