#pragma once

// A Task owns what differs between learning problems that share a model
// (model::Model, NOTE [model interface]): how labels are read, the head's
// outputs, the label tensor, the loss, the evaluation rows and metrics, the
// trivial baseline and the prediction line. The engine (worker/train), the encoder and PEFT
// (worker/model) and the communicator stay task-agnostic.
//
// Implemented: sequence_classification, multi_label_classification and
// sequence_regression (one head: pooler + linear, with HF's problem_type), and
// masked_lm (BertForMaskedLM's head at the masked positions),
// token_classification (BertForTokenClassification's, at words' first pieces),
// and causal_lm (a decoder's next-token head at the trained tokens). Tasks are
// immutable after Configure, so thread-safe.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/task_catalog.h"
#include "worker/data/dataset.h"
#include "worker/eval/metrics.h"
#include "worker/eval/report.h"

namespace attune::common {
struct JobConfig;
}
namespace attune::worker::model {
class Model;
}
namespace attune::worker::text {
class Tokenizer;
}

namespace attune::worker::task {

// One tokenised example with its label in every form a task may use.
struct Encoded {
  std::vector<int64_t> ids, types;
  int label = -1;           // sequence_classification
  std::vector<int> labels;  // multi_label_classification: class ids
  double value = 0;         // sequence_regression
  // masked_lm with whole_word_mask: 1 where a piece starts a word.
  std::vector<uint8_t> word_start;
  // token_classification: the words kept after truncation, their tags, the
  // position of each one's first piece, and per piece the tag it is trained
  // on (-100: none).
  std::vector<std::string> words;
  std::vector<int> word_tags;
  std::vector<int64_t> first_piece, piece_labels;
  // causal_lm: piece_labels[k] is ids[k] where token k is trained (predicted
  // from the tokens before it), else -100. A packed sequence numbers its
  // examples here (1, 2, ...; NOTE [packed sequences]); empty: one example.
  std::vector<int64_t> segments;
};

// What encoding dropped or cut, per reason, for data_report.json.
struct EncodeReport {
  int64_t sequences = 0;  // encoded sequences (packed ones when packing)
  int64_t examples = 0;   // examples kept
  int64_t truncated = 0;  // examples cut to max_length
  std::map<std::string, int64_t> dropped;
  std::map<std::string, std::vector<int64_t>> sample_lines;  // the first 10 lines per reason
  std::map<std::string, std::string> first_error;            // the first message per reason
  void Drop(const std::string& reason, int64_t line, const std::string& message = "");
  nlohmann::json ToJson() const;
};

// causal_lm's evaluation.generate: a prompt to continue greedily and the
// answer it should give.
struct GenerationCase {
  int64_t line = 0;
  std::vector<int64_t> prompt;
  std::string reference;
  std::string shown;  // the question as a report shows it (the last user turn, the prompt)
};

// causal_lm's evaluation.multiple_choice: one question, each choice encoded as
// the example that answers the question with it (its trained tokens are the
// choice's, scored by their summed log-likelihood).
struct ChoiceQuestion {
  int64_t line = 0;
  std::vector<Encoded> choices;
  std::vector<int64_t> choice_chars;  // each choice's length in characters (code points)
  int answer = 0;
  bool truncated = false;  // the question's start was cut to fit max_length
};

// A padded batch as the model takes it.
struct Batch {
  at::Tensor ids, types, mask;
  at::Tensor targets;    // the task's label tensor
  at::Tensor positions;  // token-level tasks: flat indices into [batch * seq] where the loss is taken
  at::Tensor rows;       // token-level tasks: the batch row of each position
  int64_t examples = 0, tokens = 0;
  double loss_units = 0;  // this batch's share of the loss normaliser
};

// What collation takes from the run besides the examples.
struct CollateContext {
  int64_t pad_id = 0;
  bool train = true;     // false: evaluation (a fixed mask for masked_lm)
  int64_t epoch = 0;     // masked_lm: a new mask every epoch
  // Augmentation of sequence tasks (data.augment): per non-special token,
  // delete or replace by [MASK], drawn from (aug_seed, example).
  double delete_rate = 0, mask_rate = 0;
  int64_t mask_id = -1;
  uint64_t aug_seed = 0;
};

// A baseline's figures on the evaluation set, so that every report says what
// the model must beat: a trivial predictor (every task), or TF-IDF + logistic
// regression fitted on the training texts (classification tasks).
// Its metrics use the task's names; tfidf_logreg's details are c, features,
// iterations and seconds.
using Baseline = eval::BaselineFigures;

class Task {
 public:
  virtual ~Task() = default;

  virtual const common::TaskInfo& info() const = 0;
  const std::string& name() const { return info().name; }

  // Takes what the task needs from the tokenizer and the spec (masked_lm:
  // special ids, the vocabulary, the masking options and the seed).
  virtual absl::Status Configure(const text::Tokenizer& tok, const common::JobConfig& c) { return absl::OkStatus(); }
  // The head's output names (id2label), once known.
  virtual void SetOutputs(const std::vector<std::string>& names) {}

  // Data. What a label is, and whether a label map fits the task (kInvalidArgument naming `source` if not).
  virtual data::LabelKind label_kind() const = 0;
  virtual absl::Status CheckLabels(const data::LabelMap& labels, const std::string& source) const = 0;

  // Head. Outputs (HF num_labels) and their id2label names; HF problem_type.
  virtual std::vector<std::string> OutputNames(const data::LabelMap& labels) const = 0;
  virtual std::string problem_type() const = 0;
  virtual std::string architecture() const { return "BertForSequenceClassification"; }

  // Encoding: one Encoded per example ([CLS] a [SEP] (b [SEP]), truncated);
  // masked_lm may group texts into blocks instead.
  std::vector<Encoded> Encode(const text::Tokenizer& tok, const std::vector<data::Example>& examples,
                              int max_length) const {
    return Encode(tok, examples, max_length, nullptr);
  }
  // The same, saying in `report` (may be null) what was dropped or cut.
  virtual std::vector<Encoded> Encode(const text::Tokenizer& tok, const std::vector<data::Example>& examples,
                                      int max_length, EncodeReport* report) const;
  // How the task's data files are read (causal_lm's conversations: whole JSONL records).
  virtual void AdjustReader(const common::JobConfig& c, data::ReaderOptions* options) const {}
  // Pads data[idx] to the batch's longest example (dynamic padding) and
  // builds the targets; sequence tasks apply the context's augmentation.
  virtual Batch Collate(const std::vector<Encoded>& data, const std::vector<int64_t>& idx, const CollateContext& ctx,
                        int outputs) const;

  // Training. The label tensor of `batch` for a head of `outputs` outputs,
  // the head's output for a batch, and the loss summed over the batch. The
  // engine divides the summed loss by the step's loss units: the examples
  // times LossUnitsPerExample(), which every rank knows without a collective;
  // or, where LossUnitsVary() (masked_lm: the masked tokens), the sum of every
  // rank's Batch::loss_units, reduced before backward. Either way
  // accumulation and any world size equal one large batch exactly.
  virtual at::Tensor Targets(const std::vector<const Encoded*>& batch, int outputs) const = 0;
  virtual at::Tensor Forward(model::Model& model, const Batch& b) const;
  virtual at::Tensor SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const = 0;
  virtual int64_t LossUnitsPerExample(int outputs) const { return 1; }
  virtual bool LossUnitsVary() const { return false; }

  // Evaluation. Each example becomes RowWidth() doubles (its target and the
  // model's scores, or masked_lm's sums), so that rows gathered from every
  // rank in dataset order give the same metrics for any world size.
  virtual int RowWidth(int outputs) const = 0;
  virtual void AppendRows(const at::Tensor& logits, const Batch& batch, std::vector<double>* rows) const = 0;
  virtual eval::Metrics Compute(const std::vector<double>& rows, int outputs, double loss_sum) const = 0;
  virtual Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                                   int outputs) const = 0;
  // TF-IDF + logistic regression (worker/baseline/text_baseline.h) on the
  // cleaned texts (a pair joined by a space); nullopt where the task has none.
  // It costs a few seconds per 10,000 training texts, on one thread.
  virtual absl::StatusOr<std::optional<Baseline>> TextBaseline(const std::vector<data::Example>& train,
                                                               const std::vector<data::Example>& validation,
                                                               int outputs) const {
    return std::optional<Baseline>();
  }

  // Language models' answer evaluations. `examples` are validation examples
  // (with their lines); those that cannot be answered (malformed, a text
  // without a reference) are skipped. Unimplemented for other tasks.
  virtual absl::StatusOr<std::vector<GenerationCase>> GenerationCases(
      const std::vector<data::Example>& examples) const {
    return absl::UnimplementedError("evaluation.generate applies to task causal_lm only");
  }
  // Tokens besides the tokenizer's EOS that end an answer (a chat
  // template's end of turn).
  virtual std::set<int64_t> AnswerStopIds() const { return {}; }
  // The questions of a multiple-choice file (`source` names it in errors); a
  // malformed line, or a choice that does not fit `max_length` tokens with a
  // token of the question before it, is an error naming its line.
  virtual absl::StatusOr<std::vector<ChoiceQuestion>> ChoiceQuestions(const std::string& jsonl,
                                                                      const std::string& source,
                                                                      int max_length) const {
    return absl::UnimplementedError("evaluation.multiple_choice applies to task causal_lm only");
  }

  // Prediction. One output line for one example's logits.
  virtual nlohmann::json PredictLine(const std::vector<double>& logits, const std::vector<std::string>& names) const = 0;
};

// A task whose loss is taken at chosen token positions (masked_lm,
// token_classification). Its Collate picks them and hands them to
// SetPositions; the loss is cross-entropy at those positions, divided by
// their number over the whole step (on every rank).
class TokenLevelTask : public Task {
 public:
  at::Tensor Targets(const std::vector<const Encoded*>&, int) const override;  // empty: Collate sets them
  at::Tensor SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const override;
  bool LossUnitsVary() const override { return true; }

 protected:
  // `positions` are flat indices into the batch's [batch * seq]; `rows` the
  // batch row of each.
  static void SetPositions(Batch* b, const std::vector<int64_t>& positions, const std::vector<int64_t>& targets,
                           const std::vector<int64_t>& rows);
};

// A language-modelling task (masked_lm, causal_lm): one evaluation row per
// sequence holding its summed cross-entropy, predicted tokens and right
// predictions, and the catalog's loss, perplexity and accuracy from their sums.
class LanguageModelTask : public TokenLevelTask {
 public:
  int RowWidth(int) const override { return 3; }
  void AppendRows(const at::Tensor& logits, const Batch& batch, std::vector<double>* rows) const override;
  eval::Metrics Compute(const std::vector<double>& rows, int outputs, double loss_sum) const override;
};

// The task named `name` (empty: sequence_classification), or null.
std::unique_ptr<Task> MakeTask(const std::string& name);
std::unique_ptr<Task> NewMaskedLm();             // worker/task/masked_lm.cc
std::unique_ptr<Task> NewTokenClassification();  // worker/task/token_classification.cc
std::unique_ptr<Task> NewCausalLm();             // worker/task/causal_lm.cc

// One entity: its type and its words [start, end).
struct Entity {
  std::string type;
  int64_t start = 0, end = 0;
  bool operator==(const Entity& o) const { return type == o.type && start == o.start && end == o.end; }
  bool operator<(const Entity& o) const {
    return std::tie(start, end, type) < std::tie(o.start, o.end, o.type);
  }
};
// The entities of a tag sequence with seqeval's default semantics (IOB2 and
// IOBES prefixes; an I- without a B- starts an entity; a change of type ends
// one).
std::vector<Entity> ExtractEntities(const std::vector<std::string>& tags);

// splitmix64's finaliser: the hash behind every seeded draw of collation.
uint64_t MixBits(uint64_t x);

// Pads token rows into ids, types and mask tensors (shared by collators).
Batch PadRows(const std::vector<std::vector<int64_t>>& ids, const std::vector<std::vector<int64_t>>& types,
              int64_t pad_id);

// The task of an exported model, from its HF problem_type.
std::unique_ptr<Task> TaskForProblemType(const std::string& problem_type);

}  // namespace attune::worker::task
