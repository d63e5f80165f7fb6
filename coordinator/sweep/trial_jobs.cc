#include "coordinator/sweep/trial_jobs.h"

namespace attune::coordinator::sweep {

absl::StatusOr<std::string> JobManagerTrialJobs::Submit(const std::string& spec_json, const std::string& key,
                                                        const Submitter& who) {
  std::string canonical;
  auto config = compile_(spec_json, &canonical);
  if (!config.ok()) return config.status();
  auto job = jobs_.Submit(*config, canonical, key, who);
  if (!job.ok()) return job.status();
  return job->id;
}

absl::Status JobManagerTrialJobs::Validate(const std::string& spec_json, const Submitter& who) {
  std::string canonical;
  auto config = compile_(spec_json, &canonical);
  if (!config.ok()) return config.status();
  return jobs_.Check(*config, who);
}

std::vector<Event> JobManagerTrialJobs::Events(const std::string& job_id, int64_t from_index) {
  auto events = jobs_.WaitEvents(job_id, from_index, absl::ZeroDuration());
  return events.ok() ? *events : std::vector<Event>{};
}

absl::Status JobManagerTrialJobs::Cancel(const std::string& job_id) {
  auto job = jobs_.Cancel(job_id);
  if (!job.ok() && job.status().code() != absl::StatusCode::kFailedPrecondition) return job.status();
  return absl::OkStatus();  // already ended: nothing to stop
}

}  // namespace attune::coordinator::sweep
