#pragma once

// A BERT model in libtorch with Hugging Face parameter names: embeddings and
// encoder layers (encoder.h, with peft.h's LoRA and adapters), and the head
// the architecture names, each in a file of its own (sequence_head.cc,
// token_head.cc, mlm_head.cc). hf_checkpoint.cc maps parameters to HF names
// and reads and writes HF model directories. Thread-compatible.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "worker/model/config.h"
#include "worker/model/encoder.h"
#include "worker/model/peft.h"
#include "worker/model/word_vectors.h"

namespace attune::worker::model {

// The encoder with the head that config.architecture names.
struct BertClassifierImpl : torch::nn::Module {
  BertClassifierImpl(const BertConfig& c, const MethodConfig& m);
  // Sequence head: logits [batch, num_labels].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                        const torch::Tensor& attention_mask);
  // The encoder's last hidden states [batch, seq, hidden].
  torch::Tensor Encode(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                       const torch::Tensor& attention_mask);
  // Masked-LM head at `positions` only (flat indices into [batch * seq]):
  // logits [positions, vocab] (HF BertOnlyMLMHead: dense, gelu, LayerNorm,
  // then the tied word embeddings and cls.predictions.bias). The decoder over
  // the whole vocabulary runs on the selected rows alone.
  torch::Tensor MaskedLmLogits(const torch::Tensor& hidden, const torch::Tensor& positions);
  // Token-classification head at `positions` (flat indices into [batch *
  // seq]): logits [positions, num_labels] (HF: dropout, then the classifier).
  torch::Tensor TokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions);
  BertConfig config;
  MethodConfig method;
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

// model.init_embeddings: the word-embedding rows of the tokens `match` covers
// become their words' vectors, centred (over the covered rows), projected to
// the hidden size by a fixed matrix with orthonormal rows (or columns, when
// the hidden size is below the vectors' dimensions) drawn from `seed`, and
// rescaled to config.initializer_range as their std: the rest of the model
// sees the scale it was initialised for (raw GloVe scales hurt). With hidden
// >= dimensions the projection keeps inner products, so cosines between
// covered rows are those of the centred vectors. Other rows keep their random
// initialisation.
absl::Status InitWordEmbeddings(BertClassifier& model, const WordVectors& vectors, const VocabularyMatch& match,
                                uint64_t seed);

struct ParameterCounts {
  int64_t trainable = 0, total = 0;
};
ParameterCounts CountParameters(BertClassifier& model);

// Every parameter and buffer under its Hugging Face name
// (bert.encoder.layer.0.attention.self.query.weight, classifier.bias, ...).
// LoRA and adapter weights carry their own names (....query.lora_A.weight,
// ....attention.output.adapter.down.weight).
std::vector<std::pair<std::string, torch::Tensor>> NamedParameters(BertClassifier& model);

// Loads a Hugging Face checkpoint's tensors into `model`. Accepts bare
// BertModel names (no "bert." prefix) and the old gamma/beta LayerNorm names,
// ignores cls.* and position_ids, reports missing keys and shape mismatches by
// name. A missing head (classifier, pooler or cls.predictions.*), or a
// classifier for another number of labels, keeps its fresh initialisation and
// is listed in `*fresh`. A masked-LM head is read from cls.predictions.*
// (cls.predictions.decoder.bias is the same tensor as cls.predictions.bias);
// the decoder is always tied to the word embeddings, so
// cls.predictions.decoder.weight is not read.
absl::Status LoadStateDict(BertClassifier& model, const std::string& safetensors_path,
                           std::vector<std::string>* fresh, bool require_all = false);
// The same from tensors already read (hf_io.h), `source` naming them in errors.
absl::Status LoadStateDict(BertClassifier& model, const common::SafeTensorsFile& weights, const std::string& source,
                           std::vector<std::string>* fresh, bool require_all = false);

// Writes config.json and model.safetensors (F32). With `merge_lora` the LoRA
// deltas are folded into a copy of the weights; otherwise they go to
// adapter_model.safetensors with adapter_config.json beside the base model.
// `shown_dir`: the directory as users name it, recorded in adapter_config.json
// (default: `dir`; the trainer writes through a pinned path).
absl::Status SaveHfModel(BertClassifier& model, const std::string& dir, bool merge_lora,
                         const std::string& shown_dir = "");

// Loads an exported model directory (config.json + model.safetensors, and
// adapter_model.safetensors if present) for inference.
absl::StatusOr<BertClassifier> LoadHfModel(const std::string& dir);

}  // namespace attune::worker::model
