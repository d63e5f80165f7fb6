#pragma once

// SweepManager: runs sweeps (NOTE [sweeps]). Each trial is an ordinary job,
// submitted through TrialJobs with labels attune.dev/sweep=<id> and
// attune.dev/trial=<n> and output_dir <output_dir>/trial-<n>; PlanSweep()
// decides what to start and stop. Thread-safe: one mutex guards the sweeps;
// Tick() runs on the coordinator's tick thread and never calls TrialJobs
// while holding it. `store` and `jobs` must outlive it.
//
// Trial protocol (per tick and sweep; each step is stored before the next):
//   1. Refresh each trial from its job: state, evaluations (the objective
//      curve), steps, and the exported model's objective once it SUCCEEDED.
//   2. Plan. A trial to stop is stored as stopped_early, then its job is
//      cancelled (it keeps its last checkpoint and events).
//   3. A new trial is stored with its parameters, then submitted with the
//      idempotency key "sweep:<id>:trial:<n>", then stored with its job id.
//      A coordinator killed between the two stores resubmits with the same
//      key and gets the same job back: no trial is lost or run twice.
//   4. When every trial has ended: the best completed trial is linked as
//      <output_dir>/best, sweep_report.json and .html are written, and the
//      sweep SUCCEEDED (FAILED when no trial completed).

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/job_store.h"
#include "coordinator/sweep/trial_jobs.h"
#include "coordinator/sweep/types.h"

namespace attune::coordinator::sweep {

struct SweepOptions {
  // When set, the sweep's own writes (best, sweep_report.*) go only to an
  // output_dir that resolves inside it when they are made (it may have been
  // swapped for a symlink since submit).
  std::string data_root;
};

class SweepManager {
 public:
  SweepManager(JobStore& store, TrialJobs& jobs, SweepOptions options = {})
      : store_(store), jobs_(jobs), options_(std::move(options)) {}

  // Loads stored sweeps; live ones continue on the next Tick().
  absl::Status Recover();
  // Validates the config and probes the trial specs (each parameter's ends
  // and choices) through TrialJobs::Validate, so a bad path or value is
  // refused here, naming it. Idempotent per key.
  // `who` owns the sweep and its trials; a key is per owner.
  absl::StatusOr<SweepRecord> Submit(SweepConfig config, const std::string& spec_json,
                                     const std::string& idempotency_key, const Submitter& who = {});
  absl::StatusOr<SweepRecord> Get(const std::string& id);
  std::vector<SweepRecord> List();
  absl::StatusOr<SweepRecord> Cancel(const std::string& id);
  // The sweep once its version is past `after_version`, or as it is after `wait`.
  absl::StatusOr<SweepRecord> WaitChange(const std::string& id, int64_t after_version, absl::Duration wait);
  void Tick();

  // The spec JSON of trial `index` of `s` with `params`.
  static absl::StatusOr<std::string> TrialSpec(const SweepRecord& s, int64_t index,
                                               const std::map<std::string, std::string>& params);

 private:
  // Steps 1-4 of the protocol on a copy of the sweep; true when it changed.
  bool Advance(SweepRecord& s);
  bool Refresh(SweepRecord& s);
  absl::Status Store(SweepRecord& s);
  void Finish(SweepRecord& s);

  JobStore& store_;
  TrialJobs& jobs_;
  const SweepOptions options_;
  std::mutex submit_mu_;  // serialises Submit's id assignment and idempotency check
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, SweepRecord> sweeps_;
  // Tick thread only: the next event index to read, per trial job.
  std::map<std::string, int64_t> cursor_;
};

}  // namespace attune::coordinator::sweep
