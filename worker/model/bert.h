#pragma once

// A BERT model in libtorch with Hugging Face parameter names: embeddings and
// encoder layers (encoder.h, with peft.h's LoRA and adapters), and the head
// the architecture names, each in a file of its own (sequence_head.cc,
// token_head.cc, mlm_head.cc), behind the Model interface (model.h).
// hf_checkpoint.cc gives its parameters their HF names. Thread-compatible.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/model/encoder.h"
#include "worker/model/model.h"
#include "worker/model/peft.h"
#include "worker/model/word_vectors.h"

namespace attune::worker::model {

// The encoder with the head that config.architecture names (NOTE [model interface]).
struct BertClassifierImpl : Model {
  BertClassifierImpl(const BertConfig& c, const MethodConfig& m);
  // Sequence head: logits [batch, num_labels].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                        const torch::Tensor& attention_mask);
  // The encoder's last hidden states [batch, seq, hidden].
  torch::Tensor Encode(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                       const torch::Tensor& attention_mask) override;
  // Masked-LM head at `positions` only (flat indices into [batch * seq]):
  // logits [positions, vocab] (HF BertOnlyMLMHead: dense, gelu, LayerNorm,
  // then the tied word embeddings and cls.predictions.bias). The decoder over
  // the whole vocabulary runs on the selected rows alone.
  torch::Tensor MaskedLmLogits(const torch::Tensor& hidden, const torch::Tensor& positions) override;
  // An encoder has no causal-LM head (c10::Error).
  torch::Tensor CausalLmLogits(const torch::Tensor& ids, const torch::Tensor& mask) override;
  torch::Tensor NextTokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) override;
  // Token-classification head at `positions` (flat indices into [batch *
  // seq]): logits [positions, num_labels] (HF: dropout, then the classifier).
  torch::Tensor TokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) override;
  torch::Tensor SequenceLogits(const torch::Tensor& ids, const torch::Tensor& types,
                               const torch::Tensor& mask) override {
    return forward(ids, types, mask);
  }

  Head head() const override;
  const HfFacts& hf() const override;
  const std::vector<std::string>& labels() const override { return config.labels; }
  const std::string& problem_type() const override { return config.problem_type; }
  const MethodConfig& method() const override { return method_; }
  int64_t max_positions() const override { return config.max_position_embeddings; }
  int64_t train_max_length() const override { return config.train_max_length; }
  void set_train_max_length(int64_t n) override { config.train_max_length = n; }
  std::string ConfigJson() const override;
  std::vector<std::string> PeftTargetModules() const override;
  // bert.embeddings.word_embeddings.weight, bert.encoder.layer.0.attention.self.query.weight,
  // classifier.bias, ...; LoRA and adapter weights carry their own names
  // (....query.lora_A.weight, ....attention.output.adapter.down.weight).
  std::vector<std::pair<std::string, torch::Tensor>> NamedParameters() override;
  torch::Tensor input_embeddings() override { return word->weight; }
  double initializer_range() const override { return config.initializer_range; }

  BertConfig config;
  MethodConfig method_;
  torch::nn::Embedding word{nullptr}, position{nullptr}, token_type{nullptr};
  torch::nn::LayerNorm emb_ln{nullptr};
  torch::nn::Dropout emb_drop{nullptr}, cls_drop{nullptr};
  std::vector<BertLayer> layers;
  torch::nn::Linear pooler{nullptr}, classifier{nullptr};  // sequence head (token head: classifier only)
  torch::nn::Linear mlm_dense{nullptr};                      // masked-LM head
  torch::nn::LayerNorm mlm_ln{nullptr};
  torch::Tensor mlm_bias;
};
TORCH_MODULE(BertClassifier);

// Builds the model with HF initialisation from `seed`, and freezes what the
// method does not train. The head (pooler and classifier, or cls.predictions)
// is always trained.
absl::StatusOr<BertClassifier> CreateModel(const BertConfig& config, const MethodConfig& method, uint64_t seed);

}  // namespace attune::worker::model
