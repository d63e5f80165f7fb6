#include "worker/train/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "absl/strings/str_cat.h"

namespace attune::worker::train {
namespace {

// The one place that knows both autocast APIs.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool CpuEnabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
void SetCpu(bool on) {
  at::autocast::set_autocast_enabled(at::kCPU, on);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
}
bool CudaEnabled() { return at::autocast::is_autocast_enabled(at::kCUDA); }
void SetCuda(bool on) {
  at::autocast::set_autocast_enabled(at::kCUDA, on);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
}
#else
bool CpuEnabled() { return at::autocast::is_cpu_enabled(); }
void SetCpu(bool on) {
  at::autocast::set_cpu_enabled(on);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
}
bool CudaEnabled() { return at::autocast::is_enabled(); }
void SetCuda(bool on) {
  at::autocast::set_enabled(on);
  at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
}
#endif

}  // namespace

absl::StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name.empty() || name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(absl::StrCat("hyperparameters.precision: '", name, "' is not fp32 or bf16"));
}

const char* PrecisionName(Precision p) { return p == Precision::kBf16 ? "bf16" : "fp32"; }

AutocastScope::AutocastScope(Precision p, bool cuda) {
  if (p != Precision::kBf16) return;
  active_ = true;
  cuda_ = cuda;
  prev_cpu_ = CpuEnabled();
  SetCpu(true);
  if (cuda_) {
    prev_cuda_ = CudaEnabled();
    SetCuda(true);
  }
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Leaving the outermost scope drops the bf16 copies of the weights, which
  // the optimizer step is about to change.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  SetCpu(prev_cpu_);
  if (cuda_) SetCuda(prev_cuda_);
}

}  // namespace attune::worker::train
