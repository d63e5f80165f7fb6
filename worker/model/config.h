#pragma once

// Model and fine-tuning method configuration. Torch-free, so that spec
// parsing and validation do not pull in libtorch.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::worker::model {

// The fields of a Hugging Face BertConfig that the encoder uses.
struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double classifier_dropout = -1;  // < 0: use hidden_dropout_prob
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  std::string hidden_act = "gelu";
  std::vector<std::string> labels;  // id2label in id order; size = num_labels
  // Hugging Face's problem_type: single_label_classification (softmax over the
  // labels), multi_label_classification (a sigmoid per label) or regression
  // (one output). Absent from a config.json: regression when num_labels is 1,
  // as HF decides.
  std::string problem_type = "single_label_classification";
  // The head: BertForSequenceClassification (pooler + classifier, as
  // problem_type says), BertForTokenClassification (a classifier per token)
  // or BertForMaskedLM (cls.predictions, decoder tied to the word embeddings;
  // no pooler). From config.json's architectures[0].
  std::string architecture = "BertForSequenceClassification";
  bool masked_lm() const { return architecture == "BertForMaskedLM"; }
  // BertForTokenClassification: a classifier at every token, no pooler.
  bool token_classification() const { return architecture == "BertForTokenClassification"; }
  // The data.max_length the model was trained with (config.json
  // "attune_max_length"; 0: unknown). attune predict truncates to it by default.
  int64_t train_max_length = 0;

  // Reads an HF config.json text (unknown keys ignored; hidden_act must be gelu).
  static absl::StatusOr<BertConfig> FromJson(const std::string& json_text, const std::string& source);
  // HF config.json with architectures, id2label and label2id.
  std::string ToJson() const;
  absl::Status Validate() const;
};

enum class Method { kFull, kHead, kLora, kAdapter };

struct MethodConfig {
  Method type = Method::kFull;
  // LoRA
  int64_t lora_rank = 8;
  double lora_alpha = 16;
  double lora_dropout = 0.0;
  std::vector<std::string> lora_targets = {"query", "value"};  // query key value attention.output intermediate output
  // Bottleneck adapters (Houlsby): after the attention and feed-forward blocks.
  int64_t adapter_size = 64;
};

absl::StatusOr<Method> ParseMethod(const std::string& name);
std::string MethodName(Method m);

}  // namespace attune::worker::model
