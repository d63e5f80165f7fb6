#pragma once

// NOTE [model interface]: what the tasks, the trainer, the checkpointer, the
// optimizer, the evaluator, the exporter and predict know of a model. They
// hold a `Model` and never an architecture's type: BERT (bert.h) is one
// implementation, and a decoder is added beside it without touching them.
// An architecture's Hugging Face facts (its names, its heads, what is fresh
// on load, its PEFT task type) are data (`HfFacts`), read by the one
// checkpoint I/O path in hf_checkpoint.cc. Thread-compatible.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "worker/model/config.h"
#include "worker/model/word_vectors.h"

namespace attune::worker::model {

// The head a model carries: what its forward passes produce.
enum class Head {
  kSequence,  // logits per sequence (classification, multi-label, regression)
  kToken,     // logits per token at chosen positions
  kMaskedLm,  // vocabulary logits at chosen (masked) positions
  kCausalLm,  // next-token vocabulary logits at every position (decoders)
};

// An architecture's and head's Hugging Face facts, as its checkpoints and
// exports name things.
struct HfFacts {
  // config.json's architectures[0], e.g. BertForSequenceClassification.
  std::string architecture;
  // The base model's prefix ("bert."). A checkpoint name under none of
  // `top_prefixes` is a bare base-model name and gets it (BertModel's own
  // checkpoints carry no prefix).
  std::string base_prefix;
  std::vector<std::string> top_prefixes;
  // The head's tensors: trained by every method, listed in PEFT's
  // modules_to_save, and fresh (initialised as HF does) when a checkpoint
  // lacks them.
  std::vector<std::string> head_prefixes;
  // A head of another shape under these prefixes (a classifier for another
  // number of labels) starts afresh instead of failing the load.
  std::vector<std::string> resizable_prefixes;
  // Old names read as new ones: a suffix rename (".gamma" -> ".weight").
  std::vector<std::pair<std::string, std::string>> legacy_suffixes;
  // A checkpoint tensor read under another name when that name is absent
  // from the checkpoint (cls.predictions.decoder.bias -> cls.predictions.bias).
  std::map<std::string, std::string> aliases;
  // PEFT's task_type ("SEQ_CLS", "TOKEN_CLS"; empty: none) and modules_to_save.
  std::string peft_task_type;
  std::vector<std::string> modules_to_save;
};

class Model : public torch::nn::Module {
 public:
  ~Model() override = default;

  virtual Head head() const = 0;
  virtual const HfFacts& hf() const = 0;
  // The head's outputs in id order (id2label); HF's problem_type.
  virtual const std::vector<std::string>& labels() const = 0;
  virtual const std::string& problem_type() const = 0;
  virtual const MethodConfig& method() const = 0;
  // The longest sequence the position embeddings take.
  virtual int64_t max_positions() const = 0;
  // The data.max_length it was trained with (0: unknown), saved in its
  // config.json so that predict truncates as training did.
  virtual int64_t train_max_length() const = 0;
  virtual void set_train_max_length(int64_t n) = 0;
  // config.json as Hugging Face writes it for this architecture and head.
  virtual std::string ConfigJson() const = 0;
  // PEFT's target_modules for the method's LoRA targets (module-name
  // suffixes that name exactly the Linear modules carrying lora_A/lora_B).
  virtual std::vector<std::string> PeftTargetModules() const = 0;

  // Every parameter and buffer under its Hugging Face name, in a fixed order
  // (the order of checkpoints and of the optimizer's groups).
  virtual std::vector<std::pair<std::string, torch::Tensor>> NamedParameters() = 0;
  // The input embedding table [vocab, hidden] and the std its rows were drawn with.
  virtual torch::Tensor input_embeddings() = 0;
  virtual double initializer_range() const = 0;

  // Forward passes on a padded batch (ids, token types, attention mask; an
  // architecture without token types ignores them; a decoder's mask may
  // number packed examples, NOTE [packed sequences] in decoder.h). Each head's function
  // fails (c10::Error) on a model without that head.
  virtual torch::Tensor SequenceLogits(const torch::Tensor& ids, const torch::Tensor& types,
                                       const torch::Tensor& mask) = 0;
  // The last hidden states [batch, seq, hidden].
  virtual torch::Tensor Encode(const torch::Tensor& ids, const torch::Tensor& types, const torch::Tensor& mask) = 0;
  // At `positions` (flat indices into [batch * seq]) of Encode's output.
  virtual torch::Tensor TokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) = 0;
  virtual torch::Tensor MaskedLmLogits(const torch::Tensor& hidden, const torch::Tensor& positions) = 0;
  // Decoders: ids and attention mask [batch, seq] -> logits [batch, seq,
  // vocab], position i predicting token i + 1. Padding may sit on either side.
  virtual torch::Tensor CausalLmLogits(const torch::Tensor& ids, const torch::Tensor& mask) = 0;
  // Decoders: the LM head at `positions` (flat indices into [batch * seq]) of
  // Encode's output: logits [positions, vocab] predicting each next token, so
  // that training never holds [batch, seq, vocab].
  virtual torch::Tensor NextTokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) = 0;
  // hyperparameters.gradient_checkpointing: recompute activations in backward
  // instead of keeping them. False where the architecture cannot (BERT today).
  virtual bool SetGradientCheckpointing(bool on) { return !on; }
};

using ModelPtr = std::shared_ptr<Model>;

struct ParameterCounts {
  int64_t trainable = 0, total = 0;
};
ParameterCounts CountParameters(Model& model);

// model.init_embeddings: the word-embedding rows of the tokens `match` covers
// become their words' vectors, centred (over the covered rows), projected to
// the hidden size by a fixed matrix with orthonormal rows (or columns, when
// the hidden size is below the vectors' dimensions) drawn from `seed`, and
// rescaled to the model's initializer_range as their std: the rest of the model
// sees the scale it was initialised for (raw GloVe scales hurt). With hidden
// >= dimensions the projection keeps inner products, so cosines between
// covered rows are those of the centred vectors. Other rows keep their random
// initialisation.
absl::Status InitWordEmbeddings(Model& model, const WordVectors& vectors, const VocabularyMatch& match,
                                uint64_t seed);

}  // namespace attune::worker::model
