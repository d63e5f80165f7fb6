#pragma once

// A decoder LLM of the Llama family (decoder_config.h) as a `Model` (NOTE
// [model interface]) with a causal-LM head: token embeddings, layers of
// RMSNorm -> grouped-query self-attention with rotary embeddings -> residual,
// RMSNorm -> SwiGLU -> residual, a final RMSNorm and the LM head (the
// embedding matrix when tied). Parameters carry Hugging Face's names
// (model.layers.N.self_attn.q_proj.weight, ...), so checkpoints load through
// hf_checkpoint.h. Thread-compatible.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/model/decoder_config.h"
#include "worker/model/model.h"
#include "worker/model/peft.h"

namespace attune::worker::model {

// RMSNorm as Hugging Face's LlamaRMSNorm computes it: in fp32, then the
// weight in the input's dtype.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

// The keys and values of the tokens a decoder has seen, per layer, so that
// each new token costs one position's work (incremental decoding). Keys are
// stored rotated and before grouped-query repetition, in buffers of a fixed
// capacity allocated on first use.
struct KvCache {
  // At most this many positions (prompt and generated tokens).
  explicit KvCache(int64_t capacity) : capacity(capacity) {}
  int64_t capacity;
  int64_t length = 0;                        // positions filled
  std::vector<torch::Tensor> keys, values;   // per layer [batch, kv_heads, capacity, head_dim]
  torch::Tensor mask;                        // [batch, length]: 1 real token, 0 padding
  // Keeps only the given batch rows (finished rows dropped).
  void SelectRows(const torch::Tensor& rows);
};

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const DecoderConfig& c);
  // x [batch, seq, hidden]; cos/sin [batch, 1, seq, head_dim]; allowed
  // [batch, 1, seq, past + seq] (true where a query may see a key). With a
  // cache, the new keys and values are written at positions [past, past +
  // seq) of `keys`/`values` (allocated here when undefined) and the queries
  // attend to all of them.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, KvCache* cache = nullptr, size_t layer = 0);

  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  // A LoRA branch on each projection the method targets (AddMethod).
  void AddMethod(const MethodConfig& method);

  LoraLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RmsNorm q_norm{nullptr}, k_norm{nullptr};  // Qwen3
  LoraLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(DecoderLayer);

class DecoderLmImpl : public Model {
 public:
  DecoderLmImpl(DecoderConfig config, MethodConfig method);

  Head head() const override { return Head::kCausalLm; }
  const HfFacts& hf() const override { return facts_; }
  const std::vector<std::string>& labels() const override { return labels_; }
  const std::string& problem_type() const override { return problem_type_; }
  const MethodConfig& method() const override { return method_; }
  int64_t max_positions() const override { return config_.max_position_embeddings; }
  int64_t train_max_length() const override { return config_.train_max_length; }
  void set_train_max_length(int64_t n) override { config_.train_max_length = n; }
  std::string ConfigJson() const override { return config_.ToJson(); }
  // The LoRA targets by their HF module names (q_proj, ...): each names
  // exactly the Linear modules that carry lora_A/lora_B.
  std::vector<std::string> PeftTargetModules() const override {
    return method_.type == Method::kLora ? method_.lora_targets : std::vector<std::string>{};
  }
  std::vector<std::pair<std::string, torch::Tensor>> NamedParameters() override;
  torch::Tensor input_embeddings() override { return embed_tokens->weight; }
  double initializer_range() const override { return config_.initializer_range; }

  torch::Tensor SequenceLogits(const torch::Tensor& ids, const torch::Tensor& types,
                               const torch::Tensor& mask) override;
  // Hidden(ids, mask, nullptr): the final norm's output.
  torch::Tensor Encode(const torch::Tensor& ids, const torch::Tensor& types, const torch::Tensor& mask) override;
  torch::Tensor TokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) override;
  torch::Tensor MaskedLmLogits(const torch::Tensor& hidden, const torch::Tensor& positions) override;
  torch::Tensor CausalLmLogits(const torch::Tensor& ids, const torch::Tensor& mask) override;
  torch::Tensor NextTokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) override;
  // The logits of `ids` [batch, seq] (`mask` 1 on real tokens, 0 on left
  // padding) following what `cache` holds, which is extended by them; with
  // `last_only` only the last position's [batch, vocab]. Positions count the
  // real tokens before each one, so left-padded rows start at 0.
  torch::Tensor Forward(const torch::Tensor& ids, const torch::Tensor& mask, KvCache* cache, bool last_only);
  // The same in two halves: the final norm's output [batch, seq, hidden],
  // and the LM head on (some of) it, so that long sequences need not hold
  // [batch, seq, vocab] logits at once.
  torch::Tensor Hidden(const torch::Tensor& ids, const torch::Tensor& mask, KvCache* cache);
  torch::Tensor LmLogits(const torch::Tensor& hidden);

  const DecoderConfig& config() const { return config_; }
  // NOTE [gradient checkpointing] in decoder.cc: training forwards keep only
  // each layer's input and recompute the layer in backward.
  bool SetGradientCheckpointing(bool on) override {
    checkpointing_ = on;
    return true;
  }

  torch::nn::Embedding embed_tokens{nullptr};
  std::vector<DecoderLayer> layers;
  RmsNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tied to embed_tokens

 private:
  DecoderConfig config_;
  MethodConfig method_;
  HfFacts facts_;
  std::vector<std::string> labels_;
  std::string problem_type_;
  torch::Tensor inv_freq_;  // [head_dim / 2], fp32 (a buffer, not a parameter)
  bool checkpointing_ = false;
};
TORCH_MODULE(DecoderLm);

// The rotary inverse frequencies HF computes for `c` (rope_theta, and
// rope_scaling of type llama3), in fp64.
std::vector<double> RotaryInverseFrequencies(const DecoderConfig& c);

// A decoder with HF's initialisation (normal(0, initializer_range) for
// linear and embedding weights, zero biases, unit norms), drawn from `seed`.
// method lora adds PEFT-initialised branches (from a second stream, so that
// the base weights are those of full fine-tuning) on its targets
// (DecoderLoraTargets' names) and trains them alone; head and adapter are
// refused (kUnimplemented).
absl::StatusOr<DecoderLm> CreateDecoder(const DecoderConfig& config, const MethodConfig& method, uint64_t seed);

}  // namespace attune::worker::model
