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
// Buckets launch in index order on every rank, whatever order the hooks
// fire in, so that the ranks' collectives pair up.
// The reduction is a sum: the trainer divides each rank's loss by the
// examples of the whole global step, so the sum is the global average.
//
// NOTE [sharded buckets]: with ReducerOptions::shard (workers.sharding:
// optimizer, ZeRO-1), each bucket is padded to a multiple of the world size
// and cut into world-size equal parts; rank r owns part r of every bucket.
// Buckets are reduce-scattered instead of allreduced, so after
// FinishBackward a rank has the summed gradients of its part alone
// (shard_grad), and the parameters' .grad hold nothing meaningful. The
// optimizer updates the owned pieces (OwnedPieces) and GatherParameters
// all-gathers every rank's updated part into every rank's parameters.
// Buckets depend only on the parameters' order and sizes, so every rank, and
// every run of the same model and world size, cuts them the same way.
//
// NOTE [sharded gradients]: with ReducerOptions::shard_gradients as well
// (workers.sharding: gradients, ZeRO-2) a rank keeps only its part of the
// gradients between steps: each bucket's part is a buffer of its own
// (shard_grad), and the whole bucket exists only while its gradients travel.
// The hook copies a parameter's gradient into its bucket's staging buffer
// and drops the parameter's .grad (never the gradient itself in place:
// autograd may hand several parameters views of one buffer, which an in-place
// reduce-scatter would overwrite); a parameter larger than the bucket cap is
// cut across several buckets, so no staging buffer exceeds the cap; a full
// bucket is
// reduce-scattered at once and, when more than kInFlightBuckets are
// travelling, the oldest is waited for, its part added to shard_grad and its
// staging buffer freed. Every
// backward is reduced (micro-batches of an accumulated step too, as
// DeepSpeed's ZeRO-2 does): the engine calls FinishBackward after each, and
// the parts sum the micro-batches. ZeroShardGradients clears them after the
// optimizer's step. Peak gradient memory: the parts (4/N bytes a parameter)
// and the buckets in flight, beside the gradient autograd is producing, not
// the 4 bytes a parameter of the other modes.
//
// Thread-compatible; hooks run on the thread that calls backward().
// `comm` must outlive the reducer.

#include <cstdint>
#include <functional>
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
  // NOTE [sharded buckets].
  bool shard = false;
  // NOTE [sharded gradients] (with shard).
  bool shard_gradients = false;
};

struct ReducerStats {
  int64_t steps = 0;                 // reductions (FinishBackward calls): one a step, one a backward when sharding gradients
  int64_t buckets = 0;
  int64_t bytes_per_step = 0;        // on the wire, per rank, per reduction
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
  // NOTE [sharded gradients]: every backward is reduced, and FinishBackward
  // follows each one.
  bool reduces_every_backward() const { return options_.shard_gradients; }

  const ReducerStats& stats() const { return stats_; }
  size_t bucket_count() const { return buckets_.size(); }

  // Sharded mode (NOTE [sharded buckets]). A piece: the elements
  // [param_offset, param_offset + length) of trainable parameter `param`
  // (flattened), at [shard_offset, ...) of this rank's part of `bucket`.
  struct Piece {
    size_t param = 0;
    size_t bucket = 0;
    int64_t param_offset = 0, shard_offset = 0, length = 0;
  };
  std::vector<Piece> OwnedPieces() const;
  // This rank's part of a bucket's summed gradients, after FinishBackward.
  const at::Tensor& shard_grad(size_t bucket) const;
  // Zeroes every shard_grad (after the optimizer's step): with
  // shard_gradients they accumulate over backwards until then.
  void ZeroShardGradients();
  // Collective, bucket by bucket: `fill(bucket, part)` writes this rank's
  // part (float32, zeroed) of a bucket; then `use(param, param_offset,
  // values)` is given the flattened values of each of the bucket's
  // parameters (or of its elements from param_offset on, for one the bucket
  // holds part of) as gathered from every rank's part. Memory: one bucket's
  // worth at a time.
  absl::Status GatherBuckets(const std::function<void(size_t, at::Tensor&)>& fill,
                             const std::function<void(size_t, int64_t, const at::Tensor&)>& use);
  // Every rank's owned pieces of the parameters (as its optimizer left them)
  // into every rank's parameters, gathered in place in the buckets' buffers
  // (the spent gradients: the parameters' .grad hold copies of the values
  // until the next step zeroes them).
  absl::Status GatherParameters();

 private:
  struct Bucket;
  void MarkReady(size_t param);
  void Launch(Bucket& b);
  // NOTE [sharded gradients]: waits for a launched bucket, adds its part to
  // shard_grad and frees its staging buffer.
  absl::Status Retire(Bucket& b);

  std::vector<at::Tensor> params_;
  Communicator& comm_;
  ReducerOptions options_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  // A parameter's elements [param_offset, param_offset + length) at
  // [offset, offset + length) of a bucket: one segment a parameter, except
  // that shard_gradients cuts one larger than the bucket cap into several.
  struct Segment {
    size_t bucket = 0;
    int64_t offset = 0, param_offset = 0, length = 0;
  };
  std::vector<std::vector<Segment>> segments_;  // per parameter
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<bool> ready_;
  std::vector<Bucket*> in_flight_;  // shard_gradients: launched, not yet retired, oldest first
  size_t next_launch_ = 0;          // buckets launch in index order
  bool sync_ = false;
  absl::Status launch_error_;
  double first_launch_ = -1;
  ReducerStats stats_;
};

}  // namespace attune::worker::comm
