#include "common/task_catalog.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace attune::common {

const std::vector<TaskInfo>& Tasks() {
  static const auto* tasks = new std::vector<TaskInfo>{
      {"sequence_classification",
       {
           {"loss", false, "mean cross-entropy"},
           {"accuracy", true, "fraction of examples whose top class is right"},
           {"precision", true, "precision (binary: of class 1; otherwise the macro average)"},
           {"recall", true, "recall (binary: of class 1; otherwise the macro average)"},
           {"f1", true, "F1 (binary: of class 1; otherwise the macro average)"},
           {"roc_auc", true, "ROC-AUC (binary, or macro one-vs-rest); absent when a class has no examples"},
           {"macro_precision", true, "precision averaged over classes"},
           {"macro_recall", true, "recall averaged over classes"},
           {"macro_f1", true, "F1 averaged over classes"},
           {"micro_precision", true, "precision over all decisions"},
           {"micro_recall", true, "recall over all decisions"},
           {"micro_f1", true, "F1 over all decisions"},
       },
       "f1",
       {"accuracy", "f1", "roc_auc"}},
      {"multi_label_classification",
       {
           {"loss", false, "mean binary cross-entropy over examples and labels"},
           {"subset_accuracy", true, "fraction of examples whose whole label set is right (threshold 0.5)"},
           {"hamming_loss", false, "fraction of (example, label) decisions that are wrong"},
           {"micro_precision", true, "precision over all (example, label) decisions"},
           {"micro_recall", true, "recall over all (example, label) decisions"},
           {"micro_f1", true, "F1 over all (example, label) decisions"},
           {"macro_precision", true, "precision averaged over labels"},
           {"macro_recall", true, "recall averaged over labels"},
           {"macro_f1", true, "F1 averaged over labels"},
           {"micro_roc_auc", true, "ROC-AUC over all (example, label) scores; absent with only one class present"},
       },
       "micro_f1",
       {"micro_f1", "macro_f1", "micro_roc_auc"}},
      {"sequence_regression",
       {
           {"loss", false, "mean squared error (the training loss)"},
           {"mse", false, "mean squared error"},
           {"mae", false, "mean absolute error"},
           {"pearson", true, "Pearson correlation of predictions and targets"},
           {"spearman", true, "Spearman rank correlation (ties share their mean rank)"},
       },
       "mse",
       {"mse", "mae", "pearson"}},
      {"token_classification",
       {
           {"loss", false, "mean cross-entropy over the labelled tokens"},
           {"precision", true, "entity-level precision over all types (seqeval)"},
           {"recall", true, "entity-level recall over all types (seqeval)"},
           {"f1", true, "entity-level F1 over all types (seqeval)"},
           {"accuracy", true, "fraction of words whose tag is right"},
       },
       "f1",
       {"f1", "precision", "recall"}},
      {"masked_lm",
       {
           {"loss", false, "mean cross-entropy over the masked tokens"},
           {"perplexity", false, "exp(loss)"},
           {"accuracy", true, "fraction of masked tokens whose top prediction is the original token"},
       },
       "loss",
       {"perplexity", "accuracy"}},
      {"causal_lm",
       {
           {"loss", false, "mean cross-entropy over the trained next tokens"},
           {"perplexity", false, "exp(loss)"},
           {"token_accuracy", true, "fraction of trained next tokens that are the model's top prediction"},
           {"exact_match", true,
            "evaluation.generate: fraction of greedy answers equal to the reference after SQuAD's normalisation"},
           {"rouge_l", true, "evaluation.generate: mean ROUGE-L F1 of the greedy answers against the references"},
           {"mc_accuracy", true,
            "evaluation.multiple_choice: fraction of questions whose most likely choice is the answer"},
           {"mc_accuracy_norm", true,
            "evaluation.multiple_choice: the same with each choice's log-likelihood divided by its length in "
            "characters"},
       },
       "loss",
       {"perplexity", "token_accuracy", "exact_match", "rouge_l", "mc_accuracy"}},
  };
  return *tasks;
}

const TaskInfo* FindTask(std::string_view name) {
  if (name.empty()) name = "sequence_classification";
  for (const auto& t : Tasks()) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const MetricInfo* FindMetric(const TaskInfo& task, std::string_view name) {
  if (name == "eval_loss") name = "loss";
  for (const auto& m : task.metrics) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

std::vector<std::pair<std::string, double>> InCatalogOrder(std::string_view task,
                                                           const std::map<std::string, double>& values) {
  std::map<std::string, double> rest = values;
  std::vector<std::pair<std::string, double>> out;
  if (const TaskInfo* t = FindTask(task)) {
    for (const auto& info : t->metrics) {
      auto it = rest.find(info.name);
      if (it == rest.end()) continue;
      out.emplace_back(*it);
      rest.erase(it);
    }
  }
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

std::vector<std::string> BaselineWinsOn(std::string_view task, const std::map<std::string, double>& model,
                                        const std::map<std::string, double>& baseline) {
  std::vector<std::string> out;
  const TaskInfo* t = FindTask(task);
  if (!t) return out;
  for (const auto& info : t->metrics) {
    const bool shown = info.name == t->default_objective ||
                       std::find(t->headline.begin(), t->headline.end(), info.name) != t->headline.end();
    auto m = model.find(info.name);
    auto b = baseline.find(info.name);
    if (!shown || m == model.end() || b == baseline.end()) continue;
    if (info.higher_is_better ? b->second > m->second : b->second < m->second) out.push_back(info.name);
  }
  return out;
}

std::string BaselineLine(std::string_view task, std::string_view method, const std::map<std::string, double>& model,
                         const std::map<std::string, double>& baseline) {
  std::string out = "baseline " + std::string(method) + ":";
  const TaskInfo* t = FindTask(task);
  bool first = true;
  for (const auto& [name, v] : InCatalogOrder(task, baseline)) {
    if (t && std::find(t->headline.begin(), t->headline.end(), name) == t->headline.end() && name != "macro_f1") continue;
    absl::StrAppend(&out, first ? " " : ", ", name, " ", absl::StrFormat("%.4f", v));
    first = false;
  }
  const auto wins = BaselineWinsOn(task, model, baseline);
  if (!wins.empty()) absl::StrAppend(&out, "; it beats the model on ", absl::StrJoin(wins, ", "));
  return out;
}

bool IsValidMetricName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char ch : name) {
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) return false;
  }
  return true;
}

std::string MetricNames(const TaskInfo& task) {
  return absl::StrJoin(task.metrics, ", ", [](std::string* out, const MetricInfo& m) { out->append(m.name); });
}

}  // namespace attune::common
