#pragma once

// The evaluation report: JSON for machines, a plain table for terminals and
// an offline HTML page with inline SVG charts for people.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "worker/eval/metrics.h"
#include "worker/model/word_vectors.h"

namespace attune::worker::eval {

struct EvalPoint {
  int64_t step = 0;
  double epoch = 0;
  Metrics metrics;
};

// A baseline's figures on the same evaluation set.
struct BaselineFigures {
  std::string method;  // tfidf_logreg, majority_class, label_frequency, training_mean, unigram, most_frequent_tag
  std::string description;
  std::map<std::string, double> metrics;
  std::map<std::string, double> details;
};

// causal_lm's answer evaluations (evaluation.generate, .multiple_choice) of
// the exported model: how many were scored, and the first few answers.
struct AnswerSample {
  int64_t line = 0;  // the validation example's line
  std::string prompt, reference, generated;
  double exact_match = 0, rouge_l = 0;
};
struct AnswerSummary {
  int64_t max_new_tokens = 0;
  int64_t answered = 0;  // validation prompts answered
  int64_t skipped = 0;   // prompts with no room for an answer within the model's positions
  int64_t questions = 0;  // multiple-choice questions scored
  int64_t truncated_questions = 0;  // of which the start was cut to fit max_length
  std::vector<AnswerSample> samples;
};

struct ReportInput {
  std::string job_name;
  std::string task = "sequence_classification";
  std::string method;
  std::string precision = "fp32";  // hyperparameters.precision
  std::vector<std::string> label_names;
  int64_t trainable_parameters = 0, total_parameters = 0;
  std::vector<std::pair<int64_t, double>> train_loss;  // (step, loss)
  std::vector<EvalPoint> evals;
  EvalPoint final_eval;       // of the exported (best) model
  int64_t best_step = -1;
  std::string stop_reason;    // "completed", "early_stopping", "max_steps"
  // What the model must beat on the evaluation set: a trivial predictor, and
  // for classification TF-IDF + logistic regression (`reference`, when fitted).
  BaselineFigures trivial;
  std::optional<BaselineFigures> reference;
  std::optional<AnswerSummary> answers;
  // The run, for the record: ranks, the spec as given, SHA-256 of the data
  // files and of the exported weights (name -> hex), and the data report
  // (data_report.json: rows read and kept, drops by reason, per split).
  int64_t world_size = 1;
  std::string spec_text;
  std::map<std::string, std::string> sha256;
  std::string data_report_json;
  // model.init_embeddings: the word vectors' coverage of the vocabulary.
  std::optional<model::WordVectorCoverage> init_embeddings;
};

std::string MetricsToJson(const Metrics& m, const std::vector<std::string>& label_names);
std::string ReportJson(const ReportInput& in);
// The metrics of `m` (its task's, in the catalog's order), then its task's
// table: the confusion matrix, or per-label scores for multi-label.
std::string ReportTable(const Metrics& m, const std::vector<std::string>& label_names);
std::string ReportHtml(const ReportInput& in);

}  // namespace attune::worker::eval
