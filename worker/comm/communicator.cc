#include "worker/comm/communicator.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace attune::worker::comm {

#ifndef ATTUNE_WITH_GLOO
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const CommunicatorOptions& o) {
  return absl::FailedPreconditionError(absl::StrCat("job=", o.job, " rank=", o.rank,
                                                    ": workers.backend gloo: this build's libtorch has no Gloo headers"));
}
#endif

absl::Status AllReduceSumBlocking(Communicator& c, at::Tensor t) {
  auto w = c.AllReduceSum(t);
  if (!w.ok()) return w.status();
  return (*w)->Wait(c.timeout());
}

absl::Status BroadcastBlocking(Communicator& c, at::Tensor t, int root) {
  auto w = c.Broadcast(t, root);
  if (!w.ok()) return w.status();
  return (*w)->Wait(c.timeout());
}

absl::Status ReduceScatterSumBlocking(Communicator& c, at::Tensor input, at::Tensor output) {
  auto w = c.ReduceScatterSum(input, output);
  if (!w.ok()) return w.status();
  return (*w)->Wait(c.timeout());
}

absl::Status CheckReduceScatter(const Communicator& c, const at::Tensor& input, const at::Tensor& output) {
  const int64_t world = c.world_size();
  if (input.dim() != 1 || output.dim() != 1 || !input.is_contiguous() || !output.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(c.backend(), " reduce_scatter: input and output must be 1-D and contiguous"));
  }
  if (input.scalar_type() != output.scalar_type() || input.device() != output.device()) {
    return absl::InvalidArgumentError(absl::StrCat(c.backend(), " reduce_scatter: input and output differ in dtype or device"));
  }
  if (input.numel() != world * output.numel()) {
    return absl::InvalidArgumentError(absl::StrCat(c.backend(), " reduce_scatter: input has ", input.numel(),
                                                   " elements, not world size ", world, " x output's ", output.numel()));
  }
  return absl::OkStatus();
}

absl::Status CheckAllGatherInPlace(const Communicator& c, const at::Tensor& buffer) {
  if (buffer.dim() != 1 || !buffer.is_contiguous() || buffer.numel() % c.world_size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(c.backend(), " allgather in place: the buffer must be 1-D, contiguous "
                                                   "and a multiple of world size ", c.world_size(), " (it has ",
                                                   buffer.numel(), " elements)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> AllGatherVariable(Communicator& c, const at::Tensor& input) {
  // 1. gather lengths; 2. pad to the longest; 3. gather; 4. trim and concatenate.
  at::Tensor len = torch::tensor({input.size(0)}, torch::kInt64);
  std::vector<at::Tensor> lens;
  if (auto s = c.AllGather(len, &lens); !s.ok()) return s;
  int64_t longest = 0;
  for (const auto& l : lens) longest = std::max(longest, l.item<int64_t>());
  at::Tensor padded = torch::zeros({longest}, input.options());
  padded.slice(0, 0, input.size(0)).copy_(input);
  std::vector<at::Tensor> parts;
  if (auto s = c.AllGather(padded, &parts); !s.ok()) return s;
  std::vector<at::Tensor> trimmed;
  for (size_t r = 0; r < parts.size(); ++r) trimmed.push_back(parts[r].slice(0, 0, lens[r].item<int64_t>()));
  return torch::cat(trimmed);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 const CommunicatorOptions& options) {
  if (backend == "gloo") return CreateGlooCommunicator(options);
  if (backend == "nccl") return CreateNcclCommunicator(options);
  return absl::InvalidArgumentError(absl::StrCat("workers.backend: '", backend, "' is not gloo or nccl"));
}

}  // namespace attune::worker::comm
