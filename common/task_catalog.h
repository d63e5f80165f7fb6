#pragma once

// The task catalog: for each task the trainer can run, the metrics its
// evaluation reports (with their direction) and its default objective. Spec
// validation, early stopping, the CLI and (later) sweeps ask it instead of
// keeping lists of their own. Torch-free and proto-free; immutable, so
// thread-safe.

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace attune::common {

// A value the trainer reports in an evaluation's metric map.
struct MetricInfo {
  std::string name;
  bool higher_is_better = true;
  std::string help;  // one line, for Prometheus HELP texts and docs
};

struct TaskInfo {
  std::string name;                   // the spec's task.type
  std::vector<MetricInfo> metrics;    // in display order
  std::string default_objective;      // early stopping's metric when the spec names none
  std::vector<std::string> headline;  // the few metrics shown in one line (attune list, --watch)
};

// Every task the engine runs, in catalog order.
const std::vector<TaskInfo>& Tasks();

// The task named `name`, or null. An empty name is sequence_classification,
// the task of a spec without `task`.
const TaskInfo* FindTask(std::string_view name);

// The metric `name` of `task`, or null. "eval_loss" is accepted for "loss"
// (Hugging Face Trainer's name).
const MetricInfo* FindMetric(const TaskInfo& task, std::string_view name);

// The headline metrics of `task` (and its default objective) on which
// `baseline` is strictly better than `model`, in catalog order; a metric
// missing from either map is skipped. Reports and the CLI say these plainly.
std::vector<std::string> BaselineWinsOn(std::string_view task, const std::map<std::string, double>& model,
                                        const std::map<std::string, double>& baseline);

// One line for terminals: "baseline <method>: <headline metrics>", then
// "; it beats the model on <metrics>" when it does.
std::string BaselineLine(std::string_view task, std::string_view method, const std::map<std::string, double>& model,
                         const std::map<std::string, double>& baseline);

// Whether `name` may name a metric in transit: [a-z0-9_]{1,64}. Reports from
// other processes are checked with it before they become series or rows.
bool IsValidMetricName(std::string_view name);

// The metrics of `task` as one comma-separated list, for error messages.
std::string MetricNames(const TaskInfo& task);

// `values` in the catalog's order for `task` (unknown: none first), then any
// others by name: the order of metric tables.
std::vector<std::pair<std::string, double>> InCatalogOrder(std::string_view task,
                                                           const std::map<std::string, double>& values);

}  // namespace attune::common
