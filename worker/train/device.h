#pragma once

// Where a rank computes: the CPU, or a CUDA GPU. The engine places the model,
// each batch, the loss and the evaluation on it; checkpoints and exports are
// always written from CPU copies (model::FromTorch), and loading copies into
// the placed parameters, so files never depend on the device.

#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "worker/task/task.h"

namespace attune::worker::train {

// `requested`: "cpu", "cuda" (the rank's GPU: rank modulo the visible
// devices) or "cuda:N"; empty means "cuda" when the spec asks for
// workers.gpus_per_rank > 0, else "cpu". A GPU that this build or machine
// cannot give is kFailedPrecondition naming why (a CPU-only libtorch, no
// visible device, an index past the devices), so the job fails at once with
// that reason instead of crashing later.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& requested, const common::JobConfig& c, int rank);

// Moves every tensor of `b` to `device`; the CPU's batches are left as they are.
task::Batch OnDevice(const task::Batch& b, const torch::Device& device);

}  // namespace attune::worker::train
