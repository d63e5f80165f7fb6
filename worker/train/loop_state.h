#pragma once

// The loop state: everything besides the weights, the optimizer and the RNG
// that a resumed run needs (step, sampler position, evaluation history, early
// stopping, what the weights mean), and its JSON form in a checkpoint's
// trainer_state.json. Torch-free.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"
#include "worker/eval/metrics.h"
#include "worker/eval/report.h"

namespace attune::worker::train {

// Everything besides the weights that a resumed run needs.
struct LoopState {
  int64_t step = 0;
  data::SamplerState sampler;
  bool mid_epoch = false;
  std::vector<std::pair<int64_t, double>> train_loss;
  std::vector<eval::EvalPoint> evals;
  int64_t best_step = -1;
  bool es_has_best = false;
  double es_best = 0;
  int64_t es_bad = 0;
  int64_t last_eval_step = -1;
  // What the weights mean (NOTE [resume]); empty in states of earlier releases.
  std::vector<std::string> labels;
  std::string vocab_fingerprint;
};

nlohmann::json LoopStateToJson(const LoopState& s);
// kDataLoss naming `source` when the text is not a loop state. Reads the
// states of earlier releases (flat metrics, no labels or fingerprint).
absl::StatusOr<LoopState> LoopStateFromJson(const std::string& text, const std::string& source);

// An evaluation in the loop state: every scalar metric, losslessly.
nlohmann::json MetricsSummary(const eval::Metrics& m);
eval::Metrics MetricsFromSummary(const nlohmann::json& j);

}  // namespace attune::worker::train
