#include "worker/train/loop_state.h"

#include "absl/strings/str_cat.h"

namespace attune::worker::train {

nlohmann::json MetricsSummary(const eval::Metrics& m) {
  return {{"task", m.task}, {"count", m.count}, {"metrics", m.Named()}};
}

eval::Metrics MetricsFromSummary(const nlohmann::json& j) {
  std::map<std::string, double> named;
  const nlohmann::json& values = j.contains("metrics") ? j["metrics"] : j;  // flat: an earlier release's state
  for (const auto& [k, v] : values.items()) {
    if (v.is_number() && k != "step" && k != "epoch" && k != "count") named[k] = v.get<double>();
  }
  return eval::Metrics::FromNamed(j.value("task", std::string("sequence_classification")),
                                  j.value("count", int64_t{0}), named);
}


nlohmann::json LoopStateToJson(const LoopState& s) {
  nlohmann::json j;
  j["step"] = s.step;
  j["sampler"] = {{"seed", s.sampler.seed}, {"epoch", s.sampler.epoch}, {"cursor", s.sampler.cursor}};
  j["mid_epoch"] = s.mid_epoch;
  j["train_loss"] = s.train_loss;
  j["evals"] = nlohmann::json::array();
  for (const auto& e : s.evals) {
    auto m = MetricsSummary(e.metrics);
    m["step"] = e.step;
    m["epoch"] = e.epoch;
    j["evals"].push_back(m);
  }
  j["best_step"] = s.best_step;
  j["early_stopping"] = {{"has_best", s.es_has_best}, {"best", s.es_best}, {"bad_evals", s.es_bad}};
  j["last_eval_step"] = s.last_eval_step;
  j["labels"] = s.labels;
  j["vocab_fingerprint"] = s.vocab_fingerprint;
  return j;
}

absl::StatusOr<LoopState> LoopStateFromJson(const std::string& text, const std::string& source) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError(absl::StrCat(source, ": not JSON"));
  LoopState s;
  try {
    s.step = j.at("step");
    s.sampler.seed = j.at("sampler").at("seed");
    s.sampler.epoch = j.at("sampler").at("epoch");
    s.sampler.cursor = j.at("sampler").at("cursor");
    s.mid_epoch = j.at("mid_epoch");
    s.train_loss = j.at("train_loss").get<std::vector<std::pair<int64_t, double>>>();
    for (const auto& e : j.at("evals")) {
      eval::EvalPoint p;
      p.step = e.at("step");
      p.epoch = e.at("epoch");
      p.metrics = MetricsFromSummary(e);
      s.evals.push_back(p);
    }
    s.best_step = j.at("best_step");
    s.es_has_best = j.at("early_stopping").at("has_best");
    s.es_best = j.at("early_stopping").at("best");
    s.es_bad = j.at("early_stopping").at("bad_evals");
    s.last_eval_step = j.at("last_eval_step");
    if (j.contains("labels")) s.labels = j["labels"].get<std::vector<std::string>>();
    s.vocab_fingerprint = j.value("vocab_fingerprint", std::string());
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(source, ": ", e.what()));
  }
  return s;
}

}  // namespace attune::worker::train
