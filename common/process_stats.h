#pragma once

// CPU time, memory and file descriptors of a process, from Linux /proc, and
// their export as Prometheus's standard process_* series.

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace attune::common {

struct ProcessStats {
  double cpu_seconds = 0;         // user + system
  int64_t resident_bytes = 0;     // RSS
  double start_unix_seconds = 0;  // when it started
  int open_fds = 0;
};

// kNotFound when there is no such process.
absl::StatusOr<ProcessStats> ReadProcessStats(pid_t pid);

// Sets process_cpu_seconds_total, process_resident_memory_bytes,
// process_start_time_seconds and process_open_fds for this process.
// `cpu_reported` holds the CPU seconds already added to the counter.
void ExportOwnProcessStats(Metrics& m, double* cpu_reported);

}  // namespace attune::common
