#include "worker/model/decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace attune::worker::model {
namespace {

// x [.., d] -> [-x2, x1] with x1, x2 its halves (HF's rotate_half).
torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// NOTE [gradient checkpointing]: a decoder layer's forward runs without
// keeping its activations; backward runs it again from its saved input (under
// the autocast state and with the random state it first ran with) and
// back-propagates through that, as PyTorch's reentrant checkpoint and HF's
// gradient_checkpointing do. Parameter gradients accumulate in the inner
// backward; the layer's input gradient is returned. An input that needs no
// gradient (LoRA: frozen embeddings) is made a leaf that does, or the layer
// would be skipped by backward and its LoRA branches never trained.
class LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, DecoderLayerImpl* layer,
                               torch::Tensor cos, torch::Tensor sin, torch::Tensor allowed) {
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["autocast_cpu"] = at::autocast::is_cpu_enabled();
    ctx->saved_data["autocast_cuda"] = at::autocast::is_enabled();
    ctx->saved_data["rng"] = at::detail::getDefaultCPUGenerator().get_state();
    ctx->save_for_backward({x, cos, sin, allowed});
    return layer->forward(x, cos, sin, allowed);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    torch::Tensor x = saved[0].detach().requires_grad_(true);
    const bool cpu = ctx->saved_data["autocast_cpu"].toBool(), cuda = ctx->saved_data["autocast_cuda"].toBool();
    const bool prev_cpu = at::autocast::is_cpu_enabled(), prev_cuda = at::autocast::is_enabled();
    auto generator = at::detail::getDefaultCPUGenerator();
    const torch::Tensor rng_now = generator.get_state();
    generator.set_state(ctx->saved_data["rng"].toTensor());
    at::autocast::set_cpu_enabled(cpu);
    at::autocast::set_enabled(cuda);
    at::autocast::increment_nesting();
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      y = layer->forward(x, saved[1], saved[2], saved[3]);
    }
    // The bf16 copies of the weights made here must not outlive this pass:
    // the optimizer is about to change the weights.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(prev_cpu);
    at::autocast::set_enabled(prev_cuda);
    generator.set_state(rng_now);
    torch::autograd::backward({y}, {grad[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

RmsNormImpl::RmsNormImpl(int64_t size, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({size}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  const auto dtype = x.scalar_type();
  torch::Tensor h = x.to(torch::kFloat);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * h.to(dtype);
}

DecoderLayerImpl::DecoderLayerImpl(const DecoderConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  const int64_t e = c.hidden_size;
  auto linear = [&](const char* name, int64_t in, int64_t out, bool bias) {
    return register_module(name, LoraLinear(in, out, bias));
  };
  input_layernorm = register_module("input_layernorm", RmsNorm(e, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(e, c.rms_norm_eps));
  const bool qkv_bias = c.attention_bias || c.qkv_bias;
  q_proj = linear("q_proj", e, heads_ * head_dim_, qkv_bias);
  k_proj = linear("k_proj", e, kv_heads_ * head_dim_, qkv_bias);
  v_proj = linear("v_proj", e, kv_heads_ * head_dim_, qkv_bias);
  o_proj = linear("o_proj", heads_ * head_dim_, e, c.attention_bias);
  if (c.qk_norm) {
    q_norm = register_module("q_norm", RmsNorm(head_dim_, c.rms_norm_eps));
    k_norm = register_module("k_norm", RmsNorm(head_dim_, c.rms_norm_eps));
  }
  gate_proj = linear("gate_proj", e, c.intermediate_size, c.mlp_bias);
  up_proj = linear("up_proj", e, c.intermediate_size, c.mlp_bias);
  down_proj = linear("down_proj", c.intermediate_size, e, c.mlp_bias);
}

void DecoderLayerImpl::AddMethod(const MethodConfig& method) {
  if (method.type != Method::kLora) return;
  for (auto [name, l] : std::vector<std::pair<const char*, LoraLinear*>>{{"q_proj", &q_proj},
                                                                         {"k_proj", &k_proj},
                                                                         {"v_proj", &v_proj},
                                                                         {"o_proj", &o_proj},
                                                                         {"gate_proj", &gate_proj},
                                                                         {"up_proj", &up_proj},
                                                                         {"down_proj", &down_proj}}) {
    if (std::find(method.lora_targets.begin(), method.lora_targets.end(), name) != method.lora_targets.end()) {
      (*l)->EnableLora(method.lora_rank, method.lora_alpha, method.lora_dropout);
    }
  }
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                        const torch::Tensor& allowed, KvCache* cache, size_t layer) {
  const int64_t b = x.size(0), t = x.size(1);
  const torch::Tensor h = input_layernorm(x);
  torch::Tensor q = q_proj(h).view({b, t, heads_, head_dim_});
  torch::Tensor k = k_proj(h).view({b, t, kv_heads_, head_dim_});
  torch::Tensor v = v_proj(h).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
  if (q_norm) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = q.transpose(1, 2);  // [b, heads, t, d]
  k = k.transpose(1, 2);
  q = q * cos + RotateHalf(q) * sin;
  k = k * cos + RotateHalf(k) * sin;
  if (cache != nullptr) {
    torch::Tensor& keys = cache->keys[layer];
    torch::Tensor& values = cache->values[layer];
    if (!keys.defined()) {
      keys = torch::zeros({b, kv_heads_, cache->capacity, head_dim_}, k.options());
      values = torch::zeros({b, kv_heads_, cache->capacity, head_dim_}, v.options());
    }
    const int64_t past = cache->length;
    keys.narrow(2, past, t).copy_(k);
    values.narrow(2, past, t).copy_(v);
    k = keys.narrow(2, 0, past + t);
    v = values.narrow(2, 0, past + t);
  }
  if (kv_heads_ != heads_) {
    // Each key/value head serves heads / kv_heads consecutive query heads.
    k = k.repeat_interleave(heads_ / kv_heads_, 1);
    v = v.repeat_interleave(heads_ / kv_heads_, 1);
  }
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  // Softmax in fp32 (as HF's eager attention), back to the activations' dtype.
  const torch::Tensor probs = torch::softmax(scores.to(torch::kFloat), -1).to(q.scalar_type());
  const torch::Tensor attn = torch::matmul(probs, v).transpose(1, 2).reshape({b, t, heads_ * head_dim_});
  const torch::Tensor y = x + o_proj(attn);
  const torch::Tensor g = post_attention_layernorm(y);
  return y + down_proj(torch::silu(gate_proj(g)) * up_proj(g));
}

void KvCache::SelectRows(const torch::Tensor& rows) {
  for (auto* list : {&keys, &values}) {
    for (auto& t : *list) {
      if (t.defined()) t = t.index_select(0, rows.to(t.device()));
    }
  }
  if (mask.defined()) mask = mask.index_select(0, rows.to(mask.device()));
}

std::vector<double> RotaryInverseFrequencies(const DecoderConfig& c) {
  std::vector<double> out;
  const int64_t d = c.head_dim;
  for (int64_t i = 0; i < d; i += 2) {
    // HF: 1 / base ** (arange(0, d, 2) / d), the exponent in fp32.
    const double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(static_cast<float>(i) / static_cast<float>(d)));
    if (!c.rope_llama3) {
      out.push_back(f);
      continue;
    }
    // Llama 3's rescaling: long wavelengths divided by `factor`, short ones
    // kept, the band between interpolated.
    const double old_len = static_cast<double>(c.rope_original_max_positions);
    const double low_wavelen = old_len / c.rope_low_freq_factor, high_wavelen = old_len / c.rope_high_freq_factor;
    const double wavelen = 2 * M_PI / f;
    if (wavelen < high_wavelen) {
      out.push_back(f);
    } else if (wavelen > low_wavelen) {
      out.push_back(f / c.rope_factor);
    } else {
      const double smooth = (old_len / wavelen - c.rope_low_freq_factor) /
                            (c.rope_high_freq_factor - c.rope_low_freq_factor);
      out.push_back((1 - smooth) * f / c.rope_factor + smooth * f);
    }
  }
  return out;
}

DecoderLmImpl::DecoderLmImpl(DecoderConfig config, MethodConfig method)
    : config_(std::move(config)), method_(std::move(method)) {
  const DecoderConfig& c = config_;
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(register_module(absl::StrCat("layer", i), DecoderLayer(c)));
  }
  norm = register_module("norm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  if (!c.tie_word_embeddings) {
    lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
  }
  const std::vector<double> f = RotaryInverseFrequencies(c);
  inv_freq_ = register_buffer("inv_freq", torch::tensor(f, torch::kFloat64).to(torch::kFloat));
  facts_.architecture = c.architecture;
  facts_.base_prefix = "model.";
  facts_.top_prefixes = {"model.", "lm_head."};
  facts_.peft_task_type = "CAUSAL_LM";
}

std::vector<std::pair<std::string, torch::Tensor>> DecoderLmImpl::NamedParameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto add_linear = [&](const std::string& p, LoraLinear& l) {
    out.emplace_back(p + ".weight", l->weight);
    if (l->bias.defined()) out.emplace_back(p + ".bias", l->bias);
    if (l->lora_A) {
      out.emplace_back(p + ".lora_A.weight", l->lora_A->weight);
      out.emplace_back(p + ".lora_B.weight", l->lora_B->weight);
    }
  };
  out.emplace_back("model.embed_tokens.weight", embed_tokens->weight);
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& l = layers[i];
    const std::string p = absl::StrCat("model.layers.", i);
    out.emplace_back(p + ".input_layernorm.weight", l->input_layernorm->weight);
    add_linear(p + ".self_attn.q_proj", l->q_proj);
    add_linear(p + ".self_attn.k_proj", l->k_proj);
    add_linear(p + ".self_attn.v_proj", l->v_proj);
    add_linear(p + ".self_attn.o_proj", l->o_proj);
    if (l->q_norm) {
      out.emplace_back(p + ".self_attn.q_norm.weight", l->q_norm->weight);
      out.emplace_back(p + ".self_attn.k_norm.weight", l->k_norm->weight);
    }
    out.emplace_back(p + ".post_attention_layernorm.weight", l->post_attention_layernorm->weight);
    add_linear(p + ".mlp.gate_proj", l->gate_proj);
    add_linear(p + ".mlp.up_proj", l->up_proj);
    add_linear(p + ".mlp.down_proj", l->down_proj);
  }
  out.emplace_back("model.norm.weight", norm->weight);
  if (lm_head) out.emplace_back("lm_head.weight", lm_head->weight);
  return out;
}

torch::Tensor DecoderLmImpl::CausalLmLogits(const torch::Tensor& ids, const torch::Tensor& mask) {
  return Forward(ids, mask, nullptr, /*last_only=*/false);
}

torch::Tensor DecoderLmImpl::Forward(const torch::Tensor& ids, const torch::Tensor& mask, KvCache* cache,
                                     bool last_only) {
  const torch::Tensor h = Hidden(ids, mask, cache);
  return LmLogits(last_only ? h.select(1, h.size(1) - 1) : h);
}

torch::Tensor DecoderLmImpl::LmLogits(const torch::Tensor& hidden) {
  return lm_head ? lm_head(hidden) : torch::matmul(hidden, embed_tokens->weight.t());
}

torch::Tensor DecoderLmImpl::Hidden(const torch::Tensor& ids, const torch::Tensor& mask, KvCache* cache) {
  TORCH_CHECK(ids.dim() == 2 && mask.sizes() == ids.sizes(), "decoder forward: ids and mask must be [batch, seq]");
  const int64_t t = ids.size(1);
  const int64_t past = cache != nullptr ? cache->length : 0;
  TORCH_CHECK(past + t <= config_.max_position_embeddings, "a sequence of ", past + t,
              " tokens exceeds max_position_embeddings ", config_.max_position_embeddings);
  if (cache != nullptr) {
    TORCH_CHECK(past + t <= cache->capacity, "the KV cache holds ", cache->capacity, " positions, not ", past + t);
    TORCH_CHECK(past == 0 || cache->mask.size(0) == ids.size(0), "the KV cache holds ", cache->mask.size(0),
                " rows, not ", ids.size(0));
    if (cache->keys.empty()) {
      cache->keys.resize(layers.size());
      cache->values.resize(layers.size());
    }
  }
  torch::Tensor x = embed_tokens(ids);
  // NOTE [packed sequences]: the mask numbers the examples a row holds (1,
  // 2, ...; 0 is padding), so a query sees only earlier keys of its own
  // example, and positions count that example's tokens: a packed row computes
  // exactly what its examples would alone. A plain 0/1 mask is one example per
  // row, and a left-padded row starts at position 0.
  const torch::Tensor full_mask =
      past > 0 ? torch::cat({cache->mask, mask.to(cache->mask.device())}, 1) : mask;  // [b, past + t]
  const torch::Tensor segment = full_mask.to(torch::kLong);
  const torch::Tensor real = segment.gt(0);
  const auto long_opts = ids.options().dtype(torch::kLong);
  const torch::Tensor q_idx = (torch::arange(t, long_opts) + past).unsqueeze(1);
  const torch::Tensor k_idx = torch::arange(past + t, long_opts).unsqueeze(0);
  const torch::Tensor same = segment.narrow(1, past, t).unsqueeze(2).eq(segment.unsqueeze(1)) &
                             real.unsqueeze(1) & (k_idx <= q_idx).unsqueeze(0);  // [b, t, past + t]
  const torch::Tensor positions = (same.sum(-1) - 1).clamp_min(0);
  const torch::Tensor freqs = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq_.to(positions.device());
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  const torch::Tensor cos = emb.cos().to(x.scalar_type()).unsqueeze(1);
  const torch::Tensor sin = emb.sin().to(x.scalar_type()).unsqueeze(1);
  // A query sees earlier (and its own) keys of its example, within the
  // sliding window; every query sees itself, so that a padding row's softmax
  // stays finite.
  torch::Tensor allowed = same;
  if (config_.sliding_window > 0) allowed = allowed & (k_idx > q_idx - config_.sliding_window).unsqueeze(0);
  allowed = allowed | (k_idx == q_idx).unsqueeze(0);
  allowed = allowed.unsqueeze(1);  // [b, 1, t, past + t]
  const bool checkpoint = checkpointing_ && cache == nullptr && is_training() && torch::GradMode::is_enabled();
  for (size_t i = 0; i < layers.size(); ++i) {
    if (checkpoint) {
      x = LayerCheckpoint::apply(x.requires_grad() ? x : x.detach().requires_grad_(true), layers[i].get(), cos, sin,
                                 allowed);
    } else {
      x = layers[i]->forward(x, cos, sin, allowed, cache, i);
    }
  }
  if (cache != nullptr) {
    cache->mask = full_mask;
    cache->length = past + t;
  }
  return norm(x);
}

torch::Tensor DecoderLmImpl::SequenceLogits(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, config_.architecture, " has no sequence classification head");
}
torch::Tensor DecoderLmImpl::Encode(const torch::Tensor& ids, const torch::Tensor&, const torch::Tensor& mask) {
  return Hidden(ids, mask, nullptr);
}
torch::Tensor DecoderLmImpl::NextTokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) {
  return LmLogits(hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions));
}
torch::Tensor DecoderLmImpl::TokenLogits(const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, config_.architecture, " has no token classification head");
}
torch::Tensor DecoderLmImpl::MaskedLmLogits(const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, config_.architecture, " has no masked-LM head");
}

absl::StatusOr<DecoderLm> CreateDecoder(const DecoderConfig& config, const MethodConfig& method, uint64_t seed) {
  if (auto s = config.Validate(config.architecture); !s.ok()) return s;
  if (method.type != Method::kFull && method.type != Method::kLora) {
    return absl::UnimplementedError(absl::StrCat("method.type ", MethodName(method.type), " is not available for ",
                                                 config.architecture, " yet (full or lora)"));
  }
  if (method.type == Method::kLora) {
    if (method.lora_rank <= 0 || method.lora_targets.empty()) {
      return absl::InvalidArgumentError("method.lora: rank must be > 0 and targets non-empty");
    }
    for (const auto& t : method.lora_targets) {
      const auto& known = DecoderLoraTargets();
      if (std::find(known.begin(), known.end(), t) == known.end()) {
        return absl::InvalidArgumentError(absl::StrCat("method.lora.targets: '", t, "' is not a projection of ",
                                                       config.architecture,
                                                       " (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"));
      }
    }
  }
  torch::manual_seed(seed);
  DecoderLm m(config, method);
  {
    torch::NoGradGuard g;
    for (auto& [name, p] : m->NamedParameters()) {
      if (absl::EndsWith(name, "norm.weight")) {
        p.fill_(1);
      } else if (absl::EndsWith(name, ".bias")) {
        p.zero_();
      } else {
        p.normal_(0, config.initializer_range);
      }
    }
  }
  if (method.type == Method::kLora) {
    torch::manual_seed(seed ^ 0x9e3779b97f4a7c15ULL);
    for (auto& layer : m->layers) layer->AddMethod(method);
    for (auto& [name, p] : m->NamedParameters()) p.set_requires_grad(absl::StrContains(name, ".lora_"));
  }
  return m;
}

}  // namespace attune::worker::model
