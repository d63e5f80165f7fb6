#pragma once

// causal_lm's answer evaluations (NOTE [answer evaluation], NOTE [multiple
// choice]): the validation prompts answered greedily and scored by
// exact_match and rouge_l, and a file of multiple-choice questions scored by
// each choice's log-likelihood. Exact for any world size: the work is split
// into fixed batches (batch k on rank k % world), so every answer and score
// is the same whichever rank computes it, and the per-item scores are
// gathered and added in item order.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "worker/data/dataset.h"
#include "worker/eval/metrics.h"
#include "worker/eval/report.h"
#include "worker/task/task.h"
#include "worker/train/precision.h"

namespace attune::worker::comm {
class Communicator;
}
namespace attune::worker::model {
class Model;
}
namespace attune::worker::text {
class Tokenizer;
}

namespace attune::worker::train {

inline constexpr double kAnswerScoresBudget = 256.0 * (1 << 20);  // bytes

struct AnswerEvalSet {
  std::vector<task::GenerationCase> generation;  // empty: no evaluation.generate
  int64_t skipped = 0;                           // prompts with no room for an answer
  int max_new_tokens = 0;
  std::set<int64_t> stop_ids;
  std::vector<task::ChoiceQuestion> questions;  // empty: no evaluation.multiple_choice
  std::vector<task::Encoded> choices;           // the questions' choices, in order
  // Rows per forward pass (at most evaluation.batch_size): as many as keep
  // one layer's attention scores (rows x heads x length^2 floats, length the
  // longest prompt plus max_new_tokens, or the longest choice) within
  // kAnswerScoresBudget. Decided from the data alone, so every rank batches alike.
  int64_t generation_rows = 1, choice_rows = 1;
  bool empty() const { return generation.empty() && questions.empty(); }
};

// What `c` asks for, prepared once (every rank alike): the validation
// prompts and the multiple-choice file's questions (read from
// c.eval_multiple_choice_path; a bad line is an error naming it).
// `model_dir` is where generation_config.json may name more stop tokens.
// The batches hold at most c.eval_batch_size rows.
absl::StatusOr<AnswerEvalSet> PrepareAnswerEvals(const common::JobConfig& c, const task::Task& task,
                                                 const text::Tokenizer& tok, const model::Model& m,
                                                 const std::string& model_dir,
                                                 const std::vector<data::Example>& validation);

// Fills metrics->answers (exact_match, rouge_l; mc_accuracy,
// mc_accuracy_norm) and `summary` (the counts; on rank 0, the first five
// prompts' answers: rank 0 also answers the batches of other ranks that hold
// them, which gives the same answers as those ranks' own).
absl::Status EvaluateAnswers(model::Model& m, const task::Task& task, const text::Tokenizer& tok,
                             const AnswerEvalSet& set, int64_t pad_id, comm::Communicator* comm,
                             Precision precision, const c10::Device& device, eval::Metrics* metrics,
                             eval::AnswerSummary* summary);

// The trivial baselines of the answer metrics, added to `trivial`: every
// prompt answered with the training set's most frequent answer (exact_match,
// rouge_l), and every question answered with the choice position most often
// right (mc_accuracy, mc_accuracy_norm; details: the chance figure).
void AddAnswerBaselines(const task::Task& task, const std::vector<data::Example>& train, const AnswerEvalSet& set,
                        eval::BaselineFigures* trivial);

}  // namespace attune::worker::train
