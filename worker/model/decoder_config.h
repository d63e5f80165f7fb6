#pragma once

// The configuration of a decoder LLM of the Llama family (model_type llama,
// mistral, qwen2, qwen3), read from a Hugging Face config.json. What the
// families differ in is data here: Qwen2's q/k/v biases, Qwen3's per-head
// q_norm/k_norm and free head_dim, Mistral's sliding window, Llama 3's
// rope_scaling. A value this build cannot run faithfully is refused with the
// file and the key, never approximated. Torch-free.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::worker::model {

struct DecoderConfig {
  std::string model_type;    // llama | mistral | qwen2 | qwen3
  std::string architecture;  // LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // grouped-query attention; = num_attention_heads when absent
  int64_t head_dim = 0;             // hidden_size / num_attention_heads when absent
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  // rope_scaling of type llama3 (Llama 3.1 and later); none otherwise.
  bool rope_llama3 = false;
  double rope_factor = 1, rope_low_freq_factor = 1, rope_high_freq_factor = 4;
  int64_t rope_original_max_positions = 0;
  bool attention_bias = false;  // q/k/v/o biases (Llama's attention_bias)
  bool qkv_bias = false;        // q/k/v biases only (Qwen2)
  bool mlp_bias = false;
  bool qk_norm = false;  // Qwen3: RMSNorm over each head of q and k before the rotation
  bool tie_word_embeddings = false;
  // Mistral: a query sees only the keys less than this many positions back (0: all).
  int64_t sliding_window = 0;
  double initializer_range = 0.02;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  // The data.max_length the model was trained with (config.json
  // "attune_max_length"; 0: unknown).
  int64_t train_max_length = 0;
  // The config.json text read, rewritten on export with the values above.
  std::string source_json;

  // The model_type values this build runs.
  static bool IsDecoderType(const std::string& model_type);
  // Reads an HF config.json text; errors name `source` and the key.
  static absl::StatusOr<DecoderConfig> FromJson(const std::string& json_text, const std::string& source);
  // config.json as Hugging Face writes it (the keys read, others kept).
  std::string ToJson() const;
  absl::Status Validate(const std::string& source) const;
};

// config.json's model_type ("bert" when absent, as BERT checkpoints of old
// omit it); kInvalidArgument naming `source` when the text is not a JSON
// object or model_type is not a string.
absl::StatusOr<std::string> ModelTypeOf(const std::string& json_text, const std::string& source);

// "" when a config.json size (vocab_size, hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
// max_position_embeddings, type_vocab_size) lies in [1, its bound], else
// "KEY must be in [1, BOUND], not V". The bounds, one table for every
// architecture, keep a hostile config from asking for an absurd allocation.
std::string CheckConfigSize(const std::string& key, int64_t value);

}  // namespace attune::worker::model
