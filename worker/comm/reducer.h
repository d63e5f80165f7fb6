#pragma once

// The C++ DDP reducer: bucketed gradient allreduce launched from autograd
// hooks, overlapping communication with the rest of backward.
//
// Protocol, per optimizer step:
//   1. PrepareForBackward(sync) before each backward; with sync = false
//      (accumulation micro-batches) the hooks do nothing, like DDP's no_sync.
//   2. During the syncing backward, the post-hook of each parameter's
//      gradient accumulator copies its (accumulated) gradient into its bucket;
//      when a bucket's last gradient is in, its async allreduce starts.
//      Buckets hold trainable parameters only, in reverse registration order
//      (roughly the order backward produces them), up to the byte cap.
//   3. FinishBackward() launches any bucket whose parameters got no gradient
//      (their slots are zero), waits for every bucket within the collective
//      timeout and writes the sums back into each parameter's .grad.
// The reduction is a sum: the trainer divides each rank's loss by the
// examples of the whole global step, so the sum is the global average.
//
// Thread-compatible; hooks run on the thread that calls backward().
// `comm` must outlive the reducer.

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "worker/comm/communicator.h"

namespace torch::autograd {
struct Node;
}

namespace attune::worker::comm {

struct ReducerOptions {
  int64_t bucket_cap_bytes = 25 * 1000 * 1000;
  // none | fp16 | bf16: the dtype buckets travel in (Gloo reduces fp16, not bf16).
  std::string compression = "none";
  // false: launch every bucket after backward instead of from hooks.
  bool overlap = true;
};

struct ReducerStats {
  int64_t steps = 0;
  int64_t buckets = 0;
  int64_t bytes_per_step = 0;        // on the wire, per rank
  double comm_seconds = 0;           // first launch to last completion, summed over steps
  double exposed_seconds = 0;        // waiting after backward ended, summed over steps
  double hidden_fraction() const { return comm_seconds > 0 ? 1.0 - exposed_seconds / comm_seconds : 0.0; }
};

class Reducer {
 public:
  Reducer(std::vector<at::Tensor> trainable, Communicator& comm, ReducerOptions options);
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Makes every rank start identical: broadcasts `tensors` from rank 0.
  static absl::Status BroadcastFromRankZero(Communicator& comm, const std::vector<at::Tensor>& tensors);

  void PrepareForBackward(bool sync);
  absl::Status FinishBackward();

  const ReducerStats& stats() const { return stats_; }
  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket;
  void MarkReady(size_t param);
  void Launch(Bucket& b);

  std::vector<at::Tensor> params_;
  Communicator& comm_;
  ReducerOptions options_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<std::pair<size_t, int64_t>> slot_;  // param -> (bucket, offset)
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<bool> ready_;
  bool sync_ = false;
  absl::Status launch_error_;
  double first_launch_ = -1;
  ReducerStats stats_;
};

}  // namespace attune::worker::comm
