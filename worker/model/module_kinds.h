#pragma once

// What the trainer needs to know of a model's modules by their kind, not by
// their names. Thread-compatible.

#include <unordered_set>

#include <torch/torch.h>

namespace attune::worker::model {

// A normalisation module: torch::nn::LayerNorm, a decoder's RmsNorm.
bool IsNormModule(const torch::nn::Module& module);

// NOTE [no weight decay by kind]: the parameters that take no weight decay
// are every parameter of a normalisation module and every bias (a
// parameter whose own name is `bias` or ends in `_bias`, such as the
// masked-LM head's), whatever the modules are called. For BERT this is the
// set Hugging Face's Trainer chooses by the names `bias` and `LayerNorm`
// (tested for every method and head); a norm under another name (a Llama's
// `input_layernorm`, an RMSNorm) is not decayed by mistake. Identified by the
// tensor each parameter holds.
std::unordered_set<const c10::TensorImpl*> NoWeightDecayParameters(torch::nn::Module& root);

}  // namespace attune::worker::model
