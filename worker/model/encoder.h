#pragma once

// The BERT encoder layer (self-attention and feed-forward, post-LayerNorm, as
// Hugging Face's BertLayer), with the PEFT modules a method adds to it.

#include <cstdint>

#include <torch/torch.h>

#include "worker/model/config.h"
#include "worker/model/peft.h"

namespace attune::worker::model {

// HF's initialisation of a Linear layer: weights ~ N(0, std), bias 0.
void InitLinear(torch::Tensor& w, torch::Tensor& b, double std);

struct BertLayerImpl : torch::nn::Module {
  explicit BertLayerImpl(const BertConfig& c);
  // Adds LoRA branches or bottleneck adapters as `m` asks.
  void AddMethod(const MethodConfig& m);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask_bias);
  int64_t heads, head_dim;
  // attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
  // intermediate.dense, output.{dense,LayerNorm}
  LoraLinear query{nullptr}, key{nullptr}, value{nullptr}, attn_out{nullptr}, inter{nullptr}, out{nullptr};
  torch::nn::LayerNorm attn_ln{nullptr}, out_ln{nullptr};
  torch::nn::Dropout attn_drop{nullptr}, hidden_drop{nullptr};
  BottleneckAdapter attn_adapter{nullptr}, ffn_adapter{nullptr};
};
TORCH_MODULE(BertLayer);

}  // namespace attune::worker::model
