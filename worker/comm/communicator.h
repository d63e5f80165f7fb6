#pragma once

// Collectives between the ranks of one training job.
//
// NOTE [collective order]: collectives must be issued in the same order on
// every rank; a rank that issues a different one deadlocks or corrupts the
// group until the timeout set at creation fails every waiter.
//
// Thread safety: a Communicator is used by one training thread at a time;
// Abort() may be called from any thread (a watchdog) and unblocks every
// waiter with kAborted.

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace attune::worker::comm {

// Handle of an asynchronous collective (after c10d's Work).
class Work {
 public:
  virtual ~Work() = default;
  // kOk when done; kDeadlineExceeded past `timeout`; kAborted or
  // kUnavailable (naming op, rank and peer where known) when it failed.
  virtual absl::Status Wait(absl::Duration timeout) = 0;
};

struct CommunicatorOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_host = "127.0.0.1";  // rank 0's host: it serves the store
  int master_port = 0;
  // Bounds the rendezvous and every collective; set once, at creation.
  absl::Duration timeout = absl::Seconds(60);
  std::string job = "job";  // for messages
  // NCCL: the CUDA device this rank uses; -1: rank modulo the visible devices
  // (the trainer's "cuda"). Ignored by Gloo.
  int device_index = -1;
  // NOTE [rendezvous secret] in kv_store.h: rank 0's store admits only
  // connections that present it; empty admits anyone.
  std::string rendezvous_secret;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;

  // In place, summed over ranks. `tensor` must be contiguous and dense.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllReduceSum(at::Tensor tensor) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Broadcast(at::Tensor tensor, int root) = 0;
  // Sums `input` (1-D, contiguous, world_size() * n elements) over the ranks
  // and leaves this rank's part of the sum, elements [rank * n, (rank + 1) *
  // n), in `output` (n elements, the same dtype; it may be that block of
  // `input` itself). `input` is the collective's scratch space: its other
  // blocks are unspecified once the work is done. Each
  // rank moves (world - 1) / world of `input`, half an allreduce's traffic.
  virtual absl::StatusOr<std::unique_ptr<Work>> ReduceScatterSum(at::Tensor input, at::Tensor output) = 0;
  // In place: `buffer` (1-D, contiguous, world_size() * n elements) holds
  // this rank's block at [rank * n, (rank + 1) * n); on return every rank's
  // block is in it, in rank order. No other memory than the buffer is needed.
  virtual absl::Status AllGatherInPlace(at::Tensor buffer) = 0;
  // Every rank's `input` (same shape on all ranks), in rank order.
  virtual absl::Status AllGather(const at::Tensor& input, std::vector<at::Tensor>* outputs) = 0;
  virtual absl::Status Barrier() = 0;
  virtual void Abort() = 0;
  virtual absl::Duration timeout() const = 0;
};

// Blocking conveniences built on the interface.
absl::Status AllReduceSumBlocking(Communicator& c, at::Tensor tensor);
absl::Status BroadcastBlocking(Communicator& c, at::Tensor tensor, int root);
absl::Status ReduceScatterSumBlocking(Communicator& c, at::Tensor input, at::Tensor output);
// The arguments ReduceScatterSum and AllGatherInPlace accept: kInvalidArgument naming what is wrong.
absl::Status CheckReduceScatter(const Communicator& c, const at::Tensor& input, const at::Tensor& output);
absl::Status CheckAllGatherInPlace(const Communicator& c, const at::Tensor& buffer);
// Concatenates each rank's 1-D `input` (lengths may differ), in rank order.
absl::StatusOr<at::Tensor> AllGatherVariable(Communicator& c, const at::Tensor& input);

// Gloo over a c10d TCPStore at master_host:master_port (rank 0 serves it).
// Fails with kDeadlineExceeded naming the missing ranks when they do not
// all arrive within the timeout.
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const CommunicatorOptions& options);

// NCCL on CUDA devices (NOTE [NCCL communicator] in nccl_communicator.cc):
// the ncclUniqueId travels through the rendezvous store, one communicator per
// trainer process (one job generation) on its own CUDA stream. CUDA tensors
// on the rank's device are reduced in place; host tensors are staged through
// the device. Without a usable GPU (or in a build without NCCL) this returns
// kFailedPrecondition with the reason; it never crashes.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const CommunicatorOptions& options);
// The checks CreateNcclCommunicator makes before its rendezvous: NCCL in the
// build, a visible CUDA device, the device index within them.
absl::Status CheckNcclBackend(const CommunicatorOptions& options);

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 const CommunicatorOptions& options);

}  // namespace attune::worker::comm
