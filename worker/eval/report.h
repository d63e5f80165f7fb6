#pragma once

// The evaluation report: JSON for machines, a plain table for terminals and
// an offline HTML page with inline SVG charts for people.

#include <string>
#include <vector>

#include "worker/eval/metrics.h"

namespace attune::worker::eval {

struct EvalPoint {
  int64_t step = 0;
  double epoch = 0;
  Metrics metrics;
};

struct ReportInput {
  std::string job_name;
  std::string method;
  std::vector<std::string> label_names;
  int64_t trainable_parameters = 0, total_parameters = 0;
  std::vector<std::pair<int64_t, double>> train_loss;  // (step, loss)
  std::vector<EvalPoint> evals;
  EvalPoint final_eval;       // of the exported (best) model
  int64_t best_step = -1;
  std::string stop_reason;    // "completed", "early_stopping", "max_steps"
  double baseline_accuracy = 0;  // majority class on the evaluation set
};

std::string MetricsToJson(const Metrics& m, const std::vector<std::string>& label_names);
std::string ReportJson(const ReportInput& in);
std::string ReportTable(const Metrics& m, const std::vector<std::string>& label_names);
std::string ReportHtml(const ReportInput& in);

}  // namespace attune::worker::eval
