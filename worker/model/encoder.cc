#include "worker/model/encoder.h"

#include <cmath>
#include <utility>

namespace attune::worker::model {

void InitLinear(torch::Tensor& w, torch::Tensor& b, double std) {
  torch::NoGradGuard g;
  w.normal_(0, std);
  if (b.defined()) b.zero_();
}

BertLayerImpl::BertLayerImpl(const BertConfig& c)
    : heads(c.num_attention_heads), head_dim(c.hidden_size / c.num_attention_heads) {
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  query = register_module("query", LoraLinear(h, h));
  key = register_module("key", LoraLinear(h, h));
  value = register_module("value", LoraLinear(h, h));
  attn_out = register_module("attn_out", LoraLinear(h, h));
  inter = register_module("inter", LoraLinear(h, f));
  out = register_module("out", LoraLinear(f, h));
  attn_ln = register_module("attn_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(c.layer_norm_eps)));
  out_ln = register_module("out_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(c.layer_norm_eps)));
  attn_drop = register_module("attn_drop", torch::nn::Dropout(c.attention_probs_dropout_prob));
  hidden_drop = register_module("hidden_drop", torch::nn::Dropout(c.hidden_dropout_prob));
  for (LoraLinear* l : {&query, &key, &value, &attn_out, &inter, &out}) {
    InitLinear((*l)->weight, (*l)->bias, c.initializer_range);
  }
}

void BertLayerImpl::AddMethod(const MethodConfig& m) {
  const std::pair<LoraLinear*, const char*> targets[] = {{&query, "query"},          {&key, "key"},
                                                         {&value, "value"},          {&attn_out, "attention.output"},
                                                         {&inter, "intermediate"},   {&out, "output"}};
  for (auto [l, name] : targets) {
    if (IsLoraTarget(m, name)) (*l)->EnableLora(m.lora_rank, m.lora_alpha, m.lora_dropout);
  }
  if (m.type == Method::kAdapter) {
    const int64_t h = query->weight.size(0);
    attn_adapter = register_module("attn_adapter", BottleneckAdapter(h, m.adapter_size));
    ffn_adapter = register_module("ffn_adapter", BottleneckAdapter(h, m.adapter_size));
  }
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask_bias) {
  const int64_t b = x.size(0), t = x.size(1);
  auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads, head_dim}).transpose(1, 2); };
  torch::Tensor q = split(query(x)), k = split(key(x)), v = split(value(x));
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim));
  scores = scores + mask_bias;
  torch::Tensor probs = attn_drop(torch::softmax(scores, -1));
  torch::Tensor ctx = torch::matmul(probs, v).transpose(1, 2).reshape({b, t, heads * head_dim});
  torch::Tensor a = hidden_drop(attn_out(ctx));
  if (attn_adapter) a = attn_adapter(a);
  torch::Tensor h1 = attn_ln(a + x);
  torch::Tensor f = hidden_drop(out(torch::gelu(inter(h1))));
  if (ffn_adapter) f = ffn_adapter(f);
  return out_ln(f + h1);
}

}  // namespace attune::worker::model
