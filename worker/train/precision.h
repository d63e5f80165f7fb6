#pragma once

// NOTE [mixed precision]: hyperparameters.precision: bf16 is autocast mixed
// precision, as HF Trainer's bf16=True and torch.autocast do: the weights,
// their gradients and the optimizer state stay fp32 ("master weights");
// inside the forward pass libtorch's autocast runs the matrix products
// (linear, matmul, addmm) in bf16 on bf16 copies of the weights. What stays
// fp32, by autocast's own lists or by the model's type promotion (checked by
// train_parts_test): embeddings, every LayerNorm (its input is the fp32
// residual stream; the MLM head's is cast), the attention softmax (its scores
// meet the fp32 mask), and the loss (the engine casts the logits to fp32
// first). Backward runs outside autocast, so the gradients that reach the
// reducer and the allreduce are fp32. Evaluation runs under the same autocast.
//
// The libtorch API differences (1.13's set_cpu_enabled against 2.x's
// set_autocast_enabled(device, ...)) live in precision.cc alone.

#include <string>

#include "absl/status/statusor.h"

namespace attune::worker::train {

enum class Precision { kFp32, kBf16 };

// "fp32" (or empty) and "bf16"; anything else is kInvalidArgument.
absl::StatusOr<Precision> ParsePrecision(const std::string& name);
const char* PrecisionName(Precision p);

// Autocast to bf16 on the CPU (and CUDA, when `cuda`) for its lifetime when
// `p` is kBf16; nothing for kFp32. Restores the previous state and drops the
// cast-weight cache on exit. Not thread-safe across threads sharing a scope:
// autocast state is thread-local in libtorch.
class AutocastScope {
 public:
  explicit AutocastScope(Precision p, bool cuda = false);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false, cuda_ = false;
  bool prev_cpu_ = false, prev_cuda_ = false;
};

}  // namespace attune::worker::train
