#pragma once

// The baseline every classification report is held against: TF-IDF of word
// 1-2-grams (tfidf.h) and L2 logistic regression (logreg.h), fitted on the
// job's training texts and scored on its validation texts.
//
// C is chosen from {0.1, 1, 10, 100} on the training data alone: fitted on
// four fifths of it and scored on every fifth example (index % 5 == 4), by
// accuracy (single-label) or micro-F1 (multi-label), ties going to the lower
// log-loss. The vectorizer and the model are then refitted on all of it. The
// validation data is never looked at before the final scoring.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::worker::baseline {

struct TextBaselineResult {
  // Per validation example: per class (single-label, summing to 1) or per
  // label (multi-label, each a probability of its own).
  std::vector<std::vector<double>> probs;
  double c = 0;           // the chosen C
  size_t features = 0;    // of the final vectorizer
  int iterations = 0;     // L-BFGS iterations of the final fit (largest over labels)
  bool converged = true;
  double seconds = 0;     // wall time of the whole procedure
};

// Single-label: labels[i] in [0, classes).
absl::StatusOr<TextBaselineResult> FitTfidfLogReg(const std::vector<std::string>& train, const std::vector<int>& labels,
                                                  int classes, const std::vector<std::string>& validation);

// Multi-label, one-vs-rest: labels[i] holds example i's label ids in [0, num_labels).
absl::StatusOr<TextBaselineResult> FitTfidfLogRegMultiLabel(const std::vector<std::string>& train,
                                                            const std::vector<std::vector<int>>& labels,
                                                            int num_labels, const std::vector<std::string>& validation);

}  // namespace attune::worker::baseline
