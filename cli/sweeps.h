#pragma once

// The attune CLI's sweep commands over gRPC: attune sweep submit | get |
// list | cancel.

#include <memory>
#include <string>

#include "attune/v1/sweep.grpc.pb.h"
#include "cli/jobs.h"

namespace attune::cli {

// Each command returns the process exit code: 0, or the gRPC status code.
class SweepClient {
 public:
  explicit SweepClient(const ClientOptions& o);
  // Prints the sweep id on the first line; with `watch`, follows it to its
  // end (0 when it SUCCEEDED, 1 otherwise).
  int Submit(const std::string& file, bool watch, const std::string& idempotency_key);
  int Get(const std::string& id);
  int List();
  int Cancel(const std::string& id);
  int Watch(const std::string& id);

 private:
  ClientOptions o_;
  std::unique_ptr<v1::SweepService::Stub> stub_;
};

// The document `attune sweep get -o json` prints: id, name, state, message,
// trial_steps, trials (trial, job_id, parameters by spec path, state,
// objective, best_objective, steps, stopped_early, stopped_reason, message)
// and best (trial, objective, model_dir, job_id; null before a trial completed).
nlohmann::json SweepDocument(const v1::Sweep& s);

}  // namespace attune::cli
