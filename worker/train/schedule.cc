#include "worker/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace attune::worker::train {

double LearningRateFactor(const std::string& kind, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  if (kind == "constant") return 1.0;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  if (kind == "cosine") return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

bool EarlyStopping::Update(double value) {
  bool better = !has_best_ || (maximize_ ? value > best_ + min_delta_ : value < best_ - min_delta_);
  if (better) {
    has_best_ = true;
    best_ = value;
    bad_evals_ = 0;
  } else {
    ++bad_evals_;
  }
  return better;
}

}  // namespace attune::worker::train
