#include "worker/train/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace attune::worker::train {

absl::StatusOr<torch::Device> ResolveDevice(const std::string& requested, const common::JobConfig& c, int rank) {
  std::string want = requested.empty() ? (c.gpus_per_rank > 0 ? "cuda" : "cpu") : requested;
  if (want == "cpu") return torch::Device(torch::kCPU);
  const std::string why_gpu = requested.empty()
                                  ? absl::StrCat("workers.gpus_per_rank: ", c.gpus_per_rank, " asks for a GPU")
                                  : absl::StrCat("--device ", requested, " asks for a GPU");
  int index = -1;
  if (want != "cuda" && !(want.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(want.substr(5), &index) && index >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--device: '", requested, "' is not cpu, cuda or cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        why_gpu, ", but no CUDA device is usable here: this build links a libtorch without CUDA, or the "
                 "machine has no visible GPU (torch::cuda::is_available() is false); use a GPU worker image (the "
                 "CUDA build), or ", requested.empty() ? "workers.gpus_per_rank: 0" : "--device cpu", " to run on CPUs"));
  }
  const int devices = static_cast<int>(torch::cuda::device_count());
  if (index < 0) index = rank % devices;
  if (index >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat(why_gpu, " (cuda:", index, "), but only ", devices, " CUDA device(s) are visible"));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

task::Batch OnDevice(const task::Batch& b, const torch::Device& device) {
  if (device.is_cpu()) return b;
  task::Batch out = b;
  for (at::Tensor* t : {&out.ids, &out.types, &out.mask, &out.targets, &out.positions, &out.rows}) {
    if (t->defined()) *t = t->to(device, /*non_blocking=*/true);
  }
  return out;
}

}  // namespace attune::worker::train
