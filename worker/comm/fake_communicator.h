#pragma once

// An in-process Communicator for tests (TESTONLY): N ranks are N threads of
// one process sharing a FakeGroup. Collectives meet in lockstep, as real ones
// do: each rank's call returns when every rank has made the same call, with
// the sum (or the gathered tensors) computed in rank order, so results are
// deterministic. A rank that never arrives makes the others fail with
// kDeadlineExceeded after the group's timeout. Thread-safe.

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "worker/comm/communicator.h"

namespace attune::worker::comm {

class FakeGroup {
 public:
  explicit FakeGroup(int world_size, absl::Duration timeout = absl::Seconds(30));
  // The communicator of `rank`; it must not outlive the group.
  std::unique_ptr<Communicator> Rank(int rank);

 private:
  friend class FakeCommunicator;
  // Deposits `input` as `rank`'s part of the current collective and waits for
  // the others; then every rank's part, in rank order.
  absl::StatusOr<std::vector<at::Tensor>> Meet(int rank, const at::Tensor& input, const char* op);

  const int world_;
  const absl::Duration timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t round_ = 0;  // collectives completed
  int arrived_ = 0;
  std::vector<at::Tensor> parts_, done_parts_;
};

}  // namespace attune::worker::comm
