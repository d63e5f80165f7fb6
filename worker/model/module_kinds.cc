#include "worker/model/module_kinds.h"

#include "absl/strings/match.h"
#include "worker/model/decoder.h"

namespace attune::worker::model {

bool IsNormModule(const torch::nn::Module& module) {
  return dynamic_cast<const torch::nn::LayerNormImpl*>(&module) != nullptr ||
         dynamic_cast<const RmsNormImpl*>(&module) != nullptr;
}

std::unordered_set<const c10::TensorImpl*> NoWeightDecayParameters(torch::nn::Module& root) {
  std::unordered_set<const c10::TensorImpl*> out;
  auto add = [&](const torch::nn::Module& module) {
    const bool norm = IsNormModule(module);
    for (const auto& p : module.named_parameters(/*recurse=*/false)) {
      if (norm || p.key() == "bias" || absl::EndsWith(p.key(), "_bias")) out.insert(p.value().unsafeGetTensorImpl());
    }
  };
  // The root apart: include_self would need it held by a shared_ptr.
  add(root);
  for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/false)) add(*item.value());
  return out;
}

}  // namespace attune::worker::model
