#include "worker/model/peft.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace attune::worker::model {

LoraLinearImpl::LoraLinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

const std::vector<std::string>& DecoderLoraTargets() {
  static const auto* targets =
      new std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return *targets;
}

void LoraLinearImpl::EnableLora(int64_t rank, double alpha, double dropout) {
  const int64_t in = weight.size(1), out = weight.size(0);
  lora_A = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(in, rank).bias(false)));
  lora_B = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(rank, out).bias(false)));
  lora_dropout = register_module("lora_dropout", torch::nn::Dropout(dropout));
  torch::NoGradGuard g;
  // PEFT's initialisation: A ~ kaiming-uniform(a = sqrt(5)), B = 0, so the
  // adapted model starts equal to the base model.
  torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
  lora_B->weight.zero_();
  scale = alpha / static_cast<double>(rank);
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  if (lora_A) y = y + lora_B(lora_A(lora_dropout(x))) * scale;
  return y;
}

void LoraLinearImpl::MergeLora() {
  if (!lora_A) return;
  torch::NoGradGuard g;
  weight.add_(torch::matmul(lora_B->weight, lora_A->weight) * scale);
  unregister_module("lora_A");
  unregister_module("lora_B");
  unregister_module("lora_dropout");
  lora_A = nullptr;
  lora_B = nullptr;
  lora_dropout = nullptr;
}

BottleneckAdapterImpl::BottleneckAdapterImpl(int64_t hidden, int64_t size) {
  down = register_module("down", torch::nn::Linear(hidden, size));
  up = register_module("up", torch::nn::Linear(size, hidden));
  torch::NoGradGuard g;
  down->weight.normal_(0, 0.01);
  down->bias.zero_();
  up->weight.zero_();
  up->bias.zero_();
}

torch::Tensor BottleneckAdapterImpl::forward(const torch::Tensor& x) {
  return x + up(torch::gelu(down(x)));
}

std::vector<std::string> PeftTargetModules(const std::vector<std::string>& targets, int64_t layers) {
  std::vector<std::string> out;
  for (const auto& t : targets) {
    if (t == "query" || t == "key" || t == "value") {
      out.push_back("attention.self." + t);
    } else if (t == "attention.output" || t == "intermediate") {
      out.push_back(t + ".dense");
    } else if (t == "output") {
      for (int64_t i = 0; i < layers; ++i) out.push_back(absl::StrCat("encoder.layer.", i, ".output.dense"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> AttuneTargets(const std::vector<std::string>& modules) {
  std::vector<std::string> out;
  auto add = [&](const std::string& t) {
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  };
  for (std::string m : modules) {
    if (absl::StartsWith(m, "attention.self.")) m = m.substr(15);
    if (m == "query" || m == "key" || m == "value" || m == "attention.output" || m == "intermediate" || m == "output") {
      add(m);
    } else if (m == "attention.output.dense" || m == "intermediate.dense") {
      add(m.substr(0, m.size() - 6));
    } else if (absl::StartsWith(m, "encoder.layer.") && absl::EndsWith(m, ".output.dense") &&
               !absl::StrContains(m, "attention")) {
      add("output");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("target_modules entry '", m, "' is not a LoRA target Attune runs"));
    }
  }
  return out;
}

bool IsLoraTarget(const MethodConfig& m, const std::string& name) {
  if (m.type != Method::kLora) return false;
  for (const auto& t : m.lora_targets) {
    if (t == name) return true;
  }
  return false;
}

}  // namespace attune::worker::model
