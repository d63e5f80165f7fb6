#pragma once

// ZeRO-1 and ZeRO-2 (workers.sharding: optimizer, gradients; the reducer
// keeps the gradients whole or only each rank's part, NOTE [sharded
// gradients]): each rank keeps the AdamW state of
// its own part of the trained parameters (NOTE [sharded buckets] in
// worker/comm/reducer.h) and updates that part alone; the updated parts are
// then all-gathered, so every rank again holds the whole model. A rank keeps
// 8 bytes of AdamW state per parameter it owns: 8 / N of an unsharded run's.
//
// The update is torch's AdamW applied to views of the owned pieces (with the
// decay group of their parameter), so each element moves exactly as it does
// unsharded; only the gradient sums (reduce-scatter) and the clipping norm
// (summed over ranks) are added up in another order.
//
// NOTE [consolidated optimizer checkpoints]: checkpoints hold the optimizer
// as an unsharded run's (one optimizer.pt for every parameter), so a run may
// resume in any mode and at any world size. Writing one gathers the state to
// rank 0 (ExportTo, collective), which holds the whole state while it writes;
// a resuming rank loads the whole state and keeps its part (ImportFrom).

#include <memory>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "worker/comm/communicator.h"
#include "worker/comm/reducer.h"

namespace attune::worker::train {

class ShardedAdamW {
 public:
  // `trainable`: the reducer's parameters, in its order (which it shards;
  // ReducerOptions::shard; it outlives this); decays[i]: whether trainable[i]
  // is in the weight-decay group. Fails on a parameter that is not contiguous.
  static absl::StatusOr<std::unique_ptr<ShardedAdamW>> Create(const std::vector<torch::Tensor>& trainable,
                                                             const std::vector<bool>& decays,
                                                             comm::Reducer& reducer, comm::Communicator& comm,
                                                             const common::JobConfig& c);

  void SetLearningRate(double lr);
  // After Reducer::FinishBackward: the norm of the whole gradient (every
  // rank's part, collective) and, when max_norm > 0, scales this rank's part
  // as clip_grad_norm_ scales the whole. Returns the norm before clipping.
  absl::StatusOr<double> ClipGradNorm(double max_norm);
  // One AdamW step on the owned pieces, then the parameters gathered.
  absl::Status Step();

  // NOTE [consolidated optimizer checkpoints]. Collective. On rank 0 `full`
  // (an AdamW over `trainable`, in MakeAdamW's groups) is given every
  // parameter's state; other ranks leave it alone.
  absl::Status ExportTo(torch::optim::AdamW& full);
  // Takes this rank's part of `full`'s state (every rank; no communication).
  void ImportFrom(torch::optim::AdamW& full);

 private:
  ShardedAdamW(const std::vector<torch::Tensor>& trainable, comm::Reducer& reducer, comm::Communicator& comm)
      : trainable_(trainable), reducer_(reducer), comm_(comm) {}

  std::vector<torch::Tensor> trainable_;
  comm::Reducer& reducer_;
  comm::Communicator& comm_;
  std::vector<comm::Reducer::Piece> pieces_;
  std::vector<torch::Tensor> views_;  // views_[k]: piece k of its parameter, sharing its storage
  std::unique_ptr<torch::optim::AdamW> opt_;
  int64_t owned_ = 0;  // trained elements this rank keeps state for
};

}  // namespace attune::worker::train
