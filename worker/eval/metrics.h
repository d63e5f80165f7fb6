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

struct Metrics {
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

  // Named lookup for early stopping: accuracy, f1, precision, recall,
  // roc_auc, loss, macro_f1, micro_f1.
  bool Get(const std::string& name, double* value) const;
};

Metrics ComputeMetrics(const EvalInput& in);

// ROC-AUC of `scores` for the positive class, ties counted one half (the
// value scikit-learn's roc_auc_score gives).
double BinaryRocAuc(const std::vector<int>& positive, const std::vector<double>& scores);
std::vector<RocPoint> RocCurve(const std::vector<int>& positive, const std::vector<double>& scores);

}  // namespace attune::worker::eval
