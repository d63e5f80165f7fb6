#pragma once

// TrialJobs: the narrow interface through which sweeps run their trials as
// ordinary jobs, and its implementation over the JobManager.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "coordinator/job_manager.h"
#include "coordinator/types.h"

namespace attune::coordinator::sweep {

class TrialJobs {
 public:
  virtual ~TrialJobs() = default;
  // Validates `spec_json` like any submitted spec and submits it; a retry
  // with the same key returns the same job.
  // The job is `who`'s, as if `who` had submitted it.
  virtual absl::StatusOr<std::string> Submit(const std::string& spec_json, const std::string& idempotency_key,
                                             const Submitter& who) = 0;
  // The same checks without submitting (a sweep's probes at submit).
  virtual absl::Status Validate(const std::string& spec_json, const Submitter& who) = 0;
  virtual absl::StatusOr<Job> Get(const std::string& job_id) = 0;
  virtual std::vector<Event> Events(const std::string& job_id, int64_t from_index) = 0;
  virtual absl::Status Cancel(const std::string& job_id) = 0;
};

// Turns spec JSON into the canonical spec JSON and its JobConfig, refusing
// unknown fields and wrong types with their paths. The rpc layer provides it
// (it parses attune.v1.JobSpec).
using SpecCompiler =
    std::function<absl::StatusOr<common::JobConfig>(const std::string& spec_json, std::string* canonical_json)>;

// Over the JobManager. Thread-safe; `jobs` must outlive it.
class JobManagerTrialJobs final : public TrialJobs {
 public:
  JobManagerTrialJobs(JobManager& jobs, SpecCompiler compile) : jobs_(jobs), compile_(std::move(compile)) {}
  absl::StatusOr<std::string> Submit(const std::string& spec_json, const std::string& idempotency_key,
                                     const Submitter& who) override;
  absl::Status Validate(const std::string& spec_json, const Submitter& who) override;
  absl::StatusOr<Job> Get(const std::string& job_id) override { return jobs_.Get(job_id); }
  std::vector<Event> Events(const std::string& job_id, int64_t from_index) override;
  absl::Status Cancel(const std::string& job_id) override;

 private:
  JobManager& jobs_;
  SpecCompiler compile_;
};

}  // namespace attune::coordinator::sweep
