#pragma once

// L2-regularised logistic regression on sparse rows, fitted by L-BFGS to the
// objective scikit-learn's LogisticRegression(solver="lbfgs") minimises:
// C * (summed log-loss) + ||W||^2 / 2, the intercepts not penalised. Two
// classes use one weight vector (a sigmoid), more use a softmax over one
// vector per class (multinomial), as scikit-learn does. Torch-free.

#include <vector>

#include "absl/status/status.h"
#include "worker/baseline/tfidf.h"

namespace attune::worker::baseline {

struct LogRegOptions {
  double c = 1.0;
  int max_iterations = 1000;
  double tolerance = 1e-6;  // on the largest gradient entry of the mean objective
};

class LogisticRegression {
 public:
  // y[i] in [0, classes); classes >= 2. kInvalidArgument on a mismatch.
  absl::Status Fit(const SparseRows& x, const std::vector<int>& y, int classes, size_t features,
                   const LogRegOptions& o);
  // Per row, per class probabilities.
  std::vector<std::vector<double>> PredictProba(const SparseRows& x) const;
  int iterations() const { return iterations_; }
  bool converged() const { return converged_; }

 private:
  // Scores of row r (one per weight vector) into z.
  void Scores(const SparseRows& x, size_t r, const std::vector<double>& w, std::vector<double>* z) const;
  // The mean objective at w and its gradient.
  double Objective(const SparseRows& x, const std::vector<int>& y, double c, const std::vector<double>& w,
                   std::vector<double>* grad) const;
  int classes_ = 2, vectors_ = 1;
  size_t features_ = 0;
  std::vector<double> w_;  // vectors_ x (features_ + 1): weights, then the intercept
  int iterations_ = 0;
  bool converged_ = false;
};

}  // namespace attune::worker::baseline
