#include "coordinator/types.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/task_catalog.h"

namespace attune::coordinator {

absl::Status ValidateEvalMetrics(const std::map<std::string, double>& metrics) {
  constexpr size_t kMaxMetrics = 64, kMaxName = 64;
  if (metrics.size() > kMaxMetrics) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: ", metrics.size(), " values, at most ", kMaxMetrics, " are accepted"));
  }
  for (const auto& [name, value] : metrics) {
    if (!common::IsValidMetricName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics: name '", name.substr(0, kMaxName), "' must match [a-z0-9_]{1,64}"));
    }
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat("metrics.", name, ": ", value, " is not a finite number"));
    }
  }
  return absl::OkStatus();
}

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kValidating: return "VALIDATING";
    case JobState::kQueued: return "QUEUED";
    case JobState::kScheduled: return "SCHEDULED";
    case JobState::kRunning: return "RUNNING";
    case JobState::kRecovering: return "RECOVERING";
    case JobState::kCancelling: return "CANCELLING";
    case JobState::kSucceeded: return "SUCCEEDED";
    case JobState::kFailed: return "FAILED";
    case JobState::kCancelled: return "CANCELLED";
    case JobState::kUnschedulable: return "UNSCHEDULABLE";
  }
  return "UNKNOWN";
}

bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

}  // namespace attune::coordinator
