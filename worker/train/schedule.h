#pragma once

// Learning-rate schedules and early stopping. Torch-free.

#include <cstdint>
#include <string>

namespace attune::worker::train {

// Multiplier of the base learning rate for the optimizer step that follows
// `step` completed steps: linear warmup from 0 over `warmup` steps, then
// linear decay to 0, half-cosine decay to 0, or constant, at `total` steps
// (as transformers' get_{linear,cosine,constant}_schedule_with_warmup).
double LearningRateFactor(const std::string& kind, int64_t step, int64_t warmup, int64_t total);

// Patience-based early stopping on one metric.
class EarlyStopping {
 public:
  EarlyStopping(bool maximize, int64_t patience, double min_delta)
      : maximize_(maximize), patience_(patience), min_delta_(min_delta) {}
  // Records a value; returns true when it is a new best.
  bool Update(double value);
  bool ShouldStop() const { return bad_evals_ >= patience_; }
  bool has_best() const { return has_best_; }
  double best() const { return best_; }
  int64_t bad_evals() const { return bad_evals_; }
  void Restore(bool has_best, double best, int64_t bad_evals) {
    has_best_ = has_best;
    best_ = best;
    bad_evals_ = bad_evals;
  }

 private:
  bool maximize_;
  int64_t patience_;
  double min_delta_;
  bool has_best_ = false;
  double best_ = 0;
  int64_t bad_evals_ = 0;
};

}  // namespace attune::worker::train
