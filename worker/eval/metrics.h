#pragma once

// Classification metrics, computed exactly from gathered labels and scores
// (never from padded or per-rank averages), so that every world size gives
// the same numbers. Torch-free.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace attune::worker::eval {

struct EvalInput {
  int num_classes = 2;
  std::vector<int> labels;                 // true class ids
  std::vector<std::vector<double>> probs;  // per example, per class (softmax)
  double loss_sum = 0;                     // summed cross-entropy, for eval_loss
};

struct RocPoint {
  double fpr, tpr;
};

// multi_label_classification: per example, 0/1 per label and the sigmoid
// scores; a label is predicted when its score is above 0.5.
struct MultiLabelInput {
  int num_labels = 0;
  std::vector<std::vector<int>> targets;
  std::vector<std::vector<double>> probs;
  double loss_sum = 0;  // summed binary cross-entropy over examples and labels
};

// sequence_regression: per example, the target and the prediction.
struct RegressionInput {
  std::vector<double> targets, predictions;
};

// One label of a multi-label evaluation.
struct LabelScores {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;  // examples carrying the label
};

struct Metrics {
  std::string task = "sequence_classification";  // which of the fields below mean something
  int64_t count = 0;
  double loss = 0;
  double accuracy = 0;
  // Binary (positive = class 1) for two classes; macro over classes otherwise.
  double precision = 0, recall = 0, f1 = 0;
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0;
  double micro_precision = 0, micro_recall = 0, micro_f1 = 0;
  double roc_auc = 0;  // binary AUC, or macro one-vs-rest
  bool roc_auc_defined = true;  // false when a class is absent
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
  std::vector<RocPoint> roc_curve;  // binary, or class 1 vs rest
  // multi_label_classification (micro_* and macro_* above are over labels;
  // roc_auc_defined says whether micro_roc_auc is).
  double subset_accuracy = 0, hamming_loss = 0, micro_roc_auc = 0;
  std::vector<LabelScores> per_label;
  // sequence_regression (loss is the MSE).
  double mse = 0, mae = 0, pearson = 0, spearman = 0;
  // masked_lm and causal_lm: count is the predicted tokens (masked, or
  // trained next tokens), loss their mean cross-entropy, accuracy the
  // fraction predicted right (causal_lm names it token_accuracy).
  double perplexity = 0;
  int64_t examples = 0;
  // token_classification: precision, recall, f1 are entity-level (micro over
  // types), accuracy is per word, count is the words; per_label holds each
  // entity type's scores (support: its true entities), named here.
  std::vector<std::string> entity_types;
  // causal_lm's answer evaluations (NOTE [answer evaluation]): exact_match and
  // rouge_l with evaluation.generate, mc_accuracy and mc_accuracy_norm with
  // evaluation.multiple_choice; part of Named() when present.
  std::map<std::string, double> answers;

  // The scalar metrics of `task` by name, as the task catalog lists them
  // (ROC-AUC only where it is defined).
  std::map<std::string, double> Named() const;
  // Sets the scalar metrics of `task` from Named()'s map (a lossless round trip
  // for them; tables such as the confusion matrix are not carried).
  static Metrics FromNamed(const std::string& task, int64_t count, const std::map<std::string, double>& named);
  // Named lookup for early stopping; "eval_loss" is "loss".
  bool Get(const std::string& name, double* value) const;
};

Metrics ComputeMetrics(const EvalInput& in);
Metrics ComputeMultiLabelMetrics(const MultiLabelInput& in);
Metrics ComputeRegressionMetrics(const RegressionInput& in);
// masked_lm, from sums over every evaluated sequence: the summed cross-entropy,
// the masked tokens and those predicted right.
Metrics ComputeMaskedLmMetrics(int64_t examples, double loss_sum, int64_t masked, int64_t correct);
// A language model's metrics (masked_lm, causal_lm) from the same sums: count
// is the predicted tokens, loss their mean cross-entropy, perplexity its exp,
// accuracy (causal_lm's token_accuracy) the fraction predicted right.
Metrics ComputeLmMetrics(const std::string& task, int64_t examples, double loss_sum, int64_t tokens, int64_t correct);
// token_classification, from sums: per entity type its right, true and
// predicted entities; the words and those tagged right.
struct EntityCounts {
  int64_t right = 0, truth = 0, predicted = 0;
};
Metrics ComputeTokenMetrics(int64_t sentences, const std::vector<std::string>& types,
                            const std::vector<EntityCounts>& counts, int64_t words, int64_t words_right,
                            double loss_sum);

// Pearson correlation (0 when either side is constant) and Spearman's rank
// correlation with ties given their mean rank (as scipy.stats computes them).
double Pearson(const std::vector<double>& x, const std::vector<double>& y);
double Spearman(const std::vector<double>& x, const std::vector<double>& y);

// ROC-AUC of `scores` for the positive class, ties counted one half (the
// value scikit-learn's roc_auc_score gives).
double BinaryRocAuc(const std::vector<int>& positive, const std::vector<double>& scores);
std::vector<RocPoint> RocCurve(const std::vector<int>& positive, const std::vector<double>& scores);

}  // namespace attune::worker::eval
