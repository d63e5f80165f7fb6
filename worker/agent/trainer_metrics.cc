#include "worker/agent/trainer_metrics.h"

#include <nlohmann/json.hpp>

#include "common/task_catalog.h"

namespace attune::worker::agent {

const std::vector<double> kStepBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
const std::vector<double> kAllreduceBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,   0.25,   0.5,   1,    5};
const std::vector<double> kCheckpointBuckets = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800};

namespace {

double Num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

void ObserveAll(common::Metrics& m, const char* name, const char* help, const common::Labels& l,
                const std::vector<double>& buckets, const nlohmann::json& values) {
  if (!values.is_array()) return;
  for (const auto& v : values) {
    if (v.is_number()) m.Observe(name, help, l, buckets, v.get<double>());
  }
}

constexpr size_t kMaxEvalMetrics = 64;

}  // namespace

void ExportTrainerEvent(common::Metrics& m, const TrainerLabels& who, const std::string& event_json) {
  auto j = nlohmann::json::parse(event_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  const common::Labels l = {{"job_id", who.job_id}, {"rank", std::to_string(who.rank)}};
  common::Labels lb = l;
  lb["backend"] = who.backend.empty() ? "gloo" : who.backend;
  const std::string type = j.value("type", "");
  if (type == "progress") {
    // The run's numerics (NOTE [mixed precision]), one series per rank.
    auto prec = j.find("precision");
    if (prec != j.end() && prec->is_string() && (*prec == "fp32" || *prec == "bf16")) {
      common::Labels li = l;
      li["precision"] = prec->get<std::string>();
      m.SetGauge("attune_train_info", "always 1; the precision label gives the run's numerics (fp32 or bf16)", li, 1);
    }
    m.SetGauge("attune_train_loss", "training loss of the last optimizer step (mean over the global batch)", l,
               Num(j, "loss"));
    m.SetGauge("attune_train_learning_rate", "learning rate of the last optimizer step", l, Num(j, "lr"));
    m.SetGauge("attune_train_epoch", "epochs done, fractional", l, Num(j, "epoch"));
    m.SetGauge("attune_train_global_step", "optimizer steps done by the job", l, Num(j, "step"));
    m.SetGauge("attune_train_total_steps", "optimizer steps the job will run at most", l, Num(j, "total"));
    m.SetGauge("attune_train_samples_per_second", "global training throughput over the last log window", l,
               Num(j, "sps"));
    m.SetGauge("attune_train_tokens_per_second", "global non-padding tokens per second over the last log window", l,
               Num(j, "tps"));
    const double steps = Num(j, "steps");
    if (steps <= 0) return;
    m.AddCounter("attune_train_steps_total", "optimizer steps this rank completed", l, steps);
    m.AddCounter("attune_train_samples_total", "training examples this rank processed", l, Num(j, "samples"));
    m.AddCounter("attune_train_tokens_total", "non-padding tokens this rank processed", l, Num(j, "tokens"));
    ObserveAll(m, "attune_train_step_duration_seconds", "wall time of one optimizer step on this rank", l,
               kStepBuckets, j.value("step_seconds", nlohmann::json()));
    if (auto ph = j.find("phases"); ph != j.end() && ph->is_object()) {
      for (auto it = ph->begin(); it != ph->end(); ++it) {
        if (!it->is_number()) continue;
        common::Labels lp = l;
        lp["phase"] = it.key();
        m.AddCounter("attune_train_phase_seconds_total",
                     "step time by phase (data, forward, backward, allreduce, optimizer); the phases sum to the "
                     "step time",
                     lp, it->get<double>());
      }
    }
    if (j.contains("reduce_seconds")) {
      ObserveAll(m, "attune_allreduce_duration_seconds",
                 "gradient reduction per step, first bucket launched to last bucket done", lb, kAllreduceBuckets,
                 j["reduce_seconds"]);
      m.AddCounter("attune_allreduce_exposed_seconds_total",
                   "gradient reduction time not hidden behind backward (waited for after backward)", lb,
                   Num(j, "reduce_exposed"));
      m.AddCounter("attune_allreduce_bytes_total", "gradient bytes this rank put into allreduce", lb,
                   Num(j, "reduce_bytes"));
      const double total = Num(j, "reduce_total_seconds");
      if (total > 0) {
        m.SetGauge("attune_allreduce_hidden_ratio",
                   "fraction of gradient reduction time hidden behind backward since the trainer started", lb,
                   1.0 - Num(j, "reduce_total_exposed_seconds") / total);
      }
    }
    if (Num(j, "collective_ts") > 0) {
      m.SetGauge("attune_collective_last_success_timestamp_seconds",
                 "unix time the last collective of this rank completed", l, Num(j, "collective_ts"));
    }
  } else if (type == "eval") {
    // One family for every task's metrics; a label per metric name (the task
    // catalog lists them). The names are checked, and capped, so that a
    // trainer cannot grow the agent's series without bound.
    auto it = j.find("metrics");
    if (it != j.end() && it->is_object()) {
      size_t exported = 0;
      for (const auto& [name, v] : it->items()) {
        if (!v.is_number() || !common::IsValidMetricName(name) || ++exported > kMaxEvalMetrics) continue;
        common::Labels lm = l;
        lm["metric"] = name;
        m.SetGauge("attune_eval_metric", "the last evaluation's metrics, by name (see the task catalog)", lm,
                   v.get<double>());
      }
    }
    m.SetGauge("attune_eval_step", "optimizer step of the last evaluation", l, Num(j, "step"));
  } else if (type == "baseline") {
    // The TF-IDF + logistic regression baseline's figures, beside attune_eval_metric.
    auto it = j.find("metrics");
    auto method = j.find("method");
    if (it != j.end() && it->is_object() && method != j.end() && method->is_string() &&
        common::IsValidMetricName(method->get<std::string>())) {
      size_t exported = 0;
      for (const auto& [name, v] : it->items()) {
        if (!v.is_number() || !common::IsValidMetricName(name) || ++exported > kMaxEvalMetrics) continue;
        common::Labels lm = l;
        lm["metric"] = name;
        lm["method"] = method->get<std::string>();
        m.SetGauge("attune_eval_baseline_metric",
                   "the classification baseline's metrics on the validation set, by name (method tfidf_logreg)", lm,
                   v.get<double>());
      }
    }
  } else if (type == "nonfinite") {
    m.AddCounter("attune_train_nonfinite_total", "steps whose loss or gradient norm was NaN or infinite (training stops)",
                 l, 1);
  } else if (type == "checkpoint") {
    m.Observe("attune_checkpoint_duration_seconds", "time to write and commit one checkpoint", l, kCheckpointBuckets,
              Num(j, "seconds"));
    m.SetGauge("attune_checkpoint_last_step", "optimizer step of the last committed checkpoint", l, Num(j, "step"));
    m.SetGauge("attune_checkpoint_last_success_timestamp_seconds", "unix time the last checkpoint was committed", l,
               Num(j, "unix_seconds"));
  }
}

void SetTaskRunning(common::Metrics& m, const TrainerLabels& who, bool running) {
  m.SetGauge("attune_worker_task_running", "1 while this rank's trainer process runs, 0 after it exited",
             {{"job_id", who.job_id}, {"rank", std::to_string(who.rank)}}, running ? 1 : 0);
}

void SetTaskAttempt(common::Metrics& m, const TrainerLabels& who, int64_t generation) {
  m.SetGauge("attune_train_attempt", "attempt (generation) of the job this rank runs; it grows by one per restart",
             {{"job_id", who.job_id}, {"rank", std::to_string(who.rank)}}, static_cast<double>(generation));
}

void ForgetTrainer(common::Metrics& m, const TrainerLabels& who) {
  m.Forget({{"job_id", who.job_id}, {"rank", std::to_string(who.rank)}});
}

}  // namespace attune::worker::agent
