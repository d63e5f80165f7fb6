#pragma once

// Parameter-efficient fine-tuning: LoRA branches on the encoder's Linear
// layers and Houlsby bottleneck adapters, and the mapping between Attune's
// LoRA target names and PEFT's target_modules (for exports PEFT loads).

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "worker/model/config.h"

namespace attune::worker::model {

// nn.Linear with an optional LoRA branch: y = x W^T + b + (alpha/r) B(A(dropout(x))).
// Without `bias`, b is undefined (a decoder's projections).
struct LoraLinearImpl : torch::nn::Module {
  LoraLinearImpl(int64_t in, int64_t out, bool bias = true);
  void EnableLora(int64_t rank, double alpha, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  // W += scale * B A, then drops the branch. Idempotent.
  void MergeLora();
  bool has_lora() const { return !lora_A.is_empty(); }

  torch::Tensor weight, bias;
  torch::nn::Linear lora_A{nullptr}, lora_B{nullptr};
  torch::nn::Dropout lora_dropout{nullptr};
  double scale = 0;
};
TORCH_MODULE(LoraLinear);

// Houlsby bottleneck: x + up(gelu(down(x))), with `up` zero-initialised.
struct BottleneckAdapterImpl : torch::nn::Module {
  BottleneckAdapterImpl(int64_t hidden, int64_t size);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear down{nullptr}, up{nullptr};
};
TORCH_MODULE(BottleneckAdapter);

// Attune's LoRA targets as PEFT target_modules: suffixes of the HF module
// names that match those modules and no others ("output" is each layer's
// output.dense, which ".output.dense" alone would confuse with
// attention.output.dense).
std::vector<std::string> PeftTargetModules(const std::vector<std::string>& targets, int64_t layers);
// The inverse, accepting Attune's own names too (older exports).
absl::StatusOr<std::vector<std::string>> AttuneTargets(const std::vector<std::string>& modules);
// Whether `m` puts a LoRA branch on the module Attune calls `name`.
bool IsLoraTarget(const MethodConfig& m, const std::string& name);

// A decoder's LoRA targets (HF's module names, as PEFT's target_modules
// give them for Llama, Mistral and Qwen), all of them by default.
const std::vector<std::string>& DecoderLoraTargets();

}  // namespace attune::worker::model
