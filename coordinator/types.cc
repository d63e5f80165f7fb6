#include "coordinator/types.h"

namespace attune::coordinator {

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
  }
  return "UNKNOWN";
}

bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

}  // namespace attune::coordinator
