#pragma once

// Training runs of N ranks in one test process: each rank an Engine in its
// own thread over a comm::FakeGroup, from Setup through Finish, as the
// separate processes of a job would run them.

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "common/job_config.h"
#include "worker/comm/fake_communicator.h"
#include "worker/train/engine.h"

namespace attune::testing {

struct EngineRanks {
  explicit EngineRanks(int world) : group(world) {}
  worker::comm::FakeGroup group;
  std::vector<std::unique_ptr<worker::comm::Communicator>> comms;
  std::deque<worker::train::TrainerOptions> options;  // engines hold references into it
  std::vector<std::unique_ptr<worker::train::Engine>> engines;
  std::vector<absl::Status> statuses;  // each rank's first failure, or OK
};

// Runs `c` on `world` ranks to its end (exported). One rank runs without a
// communicator. bucket_cap_bytes > 0 replaces the reducer's bucket size.
inline std::unique_ptr<EngineRanks> RunEngines(const common::JobConfig& c, int world, bool resume = false,
                                               bool eval_only = false, int64_t bucket_cap_bytes = 0) {
  auto out = std::make_unique<EngineRanks>(world);
  for (int r = 0; r < world; ++r) {
    worker::train::TrainerOptions& o = out->options.emplace_back();
    o.resume = resume;
    o.eval_only = eval_only;
    if (bucket_cap_bytes > 0) o.bucket_cap_bytes = bucket_cap_bytes;
    if (world > 1) {
      out->comms.push_back(out->group.Rank(r));
      o.communicator = out->comms.back().get();
    }
    out->engines.push_back(std::make_unique<worker::train::Engine>(c, o, nullptr));
  }
  auto run = [](worker::train::Engine& e) -> absl::Status {
    if (auto s = e.Setup(); !s.ok()) return s;
    while (!e.Done()) {
      if (auto s = e.Step(); !s.ok()) return s;
    }
    return e.Finish().status();
  };
  out->statuses.resize(static_cast<size_t>(world));
  std::vector<std::thread> others;
  for (size_t r = 1; r < static_cast<size_t>(world); ++r) {
    others.emplace_back([&, r] { out->statuses[r] = run(*out->engines[r]); });
  }
  out->statuses[0] = run(*out->engines[0]);
  for (auto& t : others) t.join();
  return out;
}

// A copy of an engine's named parameters.
inline std::vector<std::pair<std::string, torch::Tensor>> CopyParameters(worker::train::Engine& e) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, t] : e.model()->NamedParameters()) out.emplace_back(name, t.detach().clone());
  return out;
}

}  // namespace attune::testing
