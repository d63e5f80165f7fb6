#include "coordinator/scheduler.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace attune::coordinator {
namespace {

// Places every rank of `job` on `workers` (taking what it uses), or returns
// false and leaves them unchanged.
bool Place(const QueuedJob& job, std::vector<WorkerView>* workers, std::vector<std::string>* placed) {
  std::vector<WorkerView> trial = *workers;
  std::vector<std::string> out;
  for (int64_t r = 0; r < job.ranks; ++r) {
    WorkerView* best = nullptr;
    for (auto& w : trial) {
      if (w.free_cpus < job.cpus_per_rank || w.free_gpus < job.gpus_per_rank) continue;
      if (!best || w.free_cpus > best->free_cpus || (w.free_cpus == best->free_cpus && w.id < best->id)) best = &w;
    }
    if (!best) return false;
    best->free_cpus -= job.cpus_per_rank;
    best->free_gpus -= job.gpus_per_rank;
    out.push_back(best->id);
  }
  *workers = std::move(trial);
  *placed = std::move(out);
  return true;
}

// The most ranks of `job`'s shape the cluster holds when idle.
int64_t MaxRanks(const QueuedJob& job, const std::vector<WorkerView>& idle) {
  int64_t n = 0;
  for (const auto& w : idle) {
    int64_t k = job.cpus_per_rank > 0 ? w.free_cpus / job.cpus_per_rank : int64_t{1} << 31;
    if (job.gpus_per_rank > 0) k = std::min(k, w.free_gpus / job.gpus_per_rank);
    n += std::max<int64_t>(0, k);
  }
  return n;
}

}  // namespace

std::vector<Placement> Schedule(std::vector<WorkerView> cluster, std::vector<QueuedJob> queue,
                                std::vector<Held>* held) {
  std::stable_sort(queue.begin(), queue.end(), [](const QueuedJob& a, const QueuedJob& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.seq < b.seq;
  });
  std::vector<WorkerView> idle = cluster;  // every worker with nothing running
  for (auto& w : idle) {
    if (w.total_cpus >= 0) w.free_cpus = w.total_cpus;
    if (w.total_gpus >= 0) w.free_gpus = w.total_gpus;
  }
  std::vector<Placement> out;
  bool reserved = false, blocked = false;
  // A worker holds min(CPUs / cpus_per_rank, GPUs / gpus_per_rank) ranks of a
  // shape whatever else it holds, so a job fits the idle cluster exactly when
  // their sum reaches its ranks. By shape, as most jobs share a few.
  std::map<std::pair<int64_t, int64_t>, int64_t> capacity;
  for (const QueuedJob& job : queue) {
    auto shape = std::make_pair(job.cpus_per_rank, job.gpus_per_rank);
    auto cap = capacity.find(shape);
    if (cap == capacity.end()) cap = capacity.emplace(shape, MaxRanks(job, idle)).first;
    std::vector<std::string> workers;
    if (cap->second < job.ranks) {
      if (held) {
        held->push_back({job.id, absl::StrCat("unschedulable: needs ", job.ranks, " ranks of ", job.cpus_per_rank,
                                              " CPUs and ", job.gpus_per_rank, " GPUs each; the ", idle.size(),
                                              " registered workers hold at most ", cap->second,
                                              " such ranks")});
      }
      continue;
    }
    if (blocked) continue;  // behind a second blocked job: wait
    if (Place(job, &cluster, &workers)) {
      out.push_back({job.id, std::move(workers)});
      continue;
    }
    if (reserved) {
      blocked = true;
      continue;
    }
    // Reserve the job's placement on the idle cluster; others may use only
    // total - reserved on those workers from now on.
    reserved = true;
    std::vector<WorkerView> fit = idle;
    Place(job, &fit, &workers);
    std::map<std::string, std::pair<int64_t, int64_t>> r;
    for (const auto& id : workers) {
      r[id].first += job.cpus_per_rank;
      r[id].second += job.gpus_per_rank;
    }
    for (size_t i = 0; i < cluster.size(); ++i) {
      auto it = r.find(cluster[i].id);
      if (it == r.end()) continue;
      const int64_t used_cpus = idle[i].free_cpus - cluster[i].free_cpus;
      const int64_t used_gpus = idle[i].free_gpus - cluster[i].free_gpus;
      cluster[i].free_cpus = std::max<int64_t>(0, idle[i].free_cpus - it->second.first - used_cpus);
      cluster[i].free_gpus = std::max<int64_t>(0, idle[i].free_gpus - it->second.second - used_gpus);
    }
  }
  return out;
}

}  // namespace attune::coordinator
