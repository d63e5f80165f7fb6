#include "worker/eval/metrics.h"

#include <algorithm>
#include <numeric>

namespace attune::worker::eval {
namespace {

double SafeDiv(double a, double b) { return b == 0 ? 0.0 : a / b; }

// Indices sorted by descending score.
std::vector<size_t> ByScoreDesc(const std::vector<double>& scores) {
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  return idx;
}

}  // namespace

std::vector<RocPoint> RocCurve(const std::vector<int>& positive, const std::vector<double>& scores) {
  double p = 0, n = 0;
  for (int y : positive) (y ? p : n) += 1;
  std::vector<RocPoint> out{{0, 0}};
  if (p == 0 || n == 0) return out;
  auto idx = ByScoreDesc(scores);
  double tp = 0, fp = 0;
  for (size_t k = 0; k < idx.size(); ++k) {
    (positive[idx[k]] ? tp : fp) += 1;
    // One point per distinct threshold: tied scores move together.
    if (k + 1 == idx.size() || scores[idx[k + 1]] != scores[idx[k]]) out.push_back({fp / n, tp / p});
  }
  return out;
}

double BinaryRocAuc(const std::vector<int>& positive, const std::vector<double>& scores) {
  // Trapezoids over the tie-grouped ROC curve: a tie between a positive and a
  // negative counts one half.
  auto curve = RocCurve(positive, scores);
  double auc = 0;
  for (size_t k = 1; k < curve.size(); ++k) {
    auc += (curve[k].fpr - curve[k - 1].fpr) * (curve[k].tpr + curve[k - 1].tpr) / 2;
  }
  return auc;
}

bool Metrics::Get(const std::string& name, double* value) const {
  const std::map<std::string, double> m = {
      {"accuracy", accuracy}, {"f1", f1},           {"precision", precision},   {"recall", recall},
      {"roc_auc", roc_auc},   {"loss", loss},       {"eval_loss", loss},        {"macro_f1", macro_f1},
      {"micro_f1", micro_f1}, {"macro_precision", macro_precision}, {"macro_recall", macro_recall}};
  auto it = m.find(name);
  if (it == m.end()) return false;
  *value = it->second;
  return true;
}

Metrics ComputeMetrics(const EvalInput& in) {
  Metrics m;
  const int k = in.num_classes;
  const size_t n = in.labels.size();
  m.count = static_cast<int64_t>(n);
  m.loss = SafeDiv(in.loss_sum, static_cast<double>(n));
  m.confusion.assign(static_cast<size_t>(k), std::vector<int64_t>(static_cast<size_t>(k), 0));
  int64_t correct = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& p = in.probs[i];
    // argmax, first index on ties (as numpy and torch do).
    int pred = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
    ++m.confusion[static_cast<size_t>(in.labels[i])][static_cast<size_t>(pred)];
    correct += pred == in.labels[i];
  }
  m.accuracy = SafeDiv(static_cast<double>(correct), static_cast<double>(n));

  std::vector<double> prec(static_cast<size_t>(k)), rec(static_cast<size_t>(k)), f1(static_cast<size_t>(k));
  double tp_sum = 0, fp_sum = 0, fn_sum = 0;
  for (int c = 0; c < k; ++c) {
    double tp = static_cast<double>(m.confusion[static_cast<size_t>(c)][static_cast<size_t>(c)]), fp = 0, fn = 0;
    for (int o = 0; o < k; ++o) {
      if (o == c) continue;
      fp += static_cast<double>(m.confusion[static_cast<size_t>(o)][static_cast<size_t>(c)]);
      fn += static_cast<double>(m.confusion[static_cast<size_t>(c)][static_cast<size_t>(o)]);
    }
    auto ci = static_cast<size_t>(c);
    prec[ci] = SafeDiv(tp, tp + fp);
    rec[ci] = SafeDiv(tp, tp + fn);
    f1[ci] = SafeDiv(2 * tp, 2 * tp + fp + fn);
    tp_sum += tp;
    fp_sum += fp;
    fn_sum += fn;
  }
  auto mean = [](const std::vector<double>& v) { return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); };
  m.macro_precision = mean(prec);
  m.macro_recall = mean(rec);
  m.macro_f1 = mean(f1);
  m.micro_precision = SafeDiv(tp_sum, tp_sum + fp_sum);
  m.micro_recall = SafeDiv(tp_sum, tp_sum + fn_sum);
  m.micro_f1 = SafeDiv(2 * tp_sum, 2 * tp_sum + fp_sum + fn_sum);
  if (k == 2) {
    m.precision = prec[1];
    m.recall = rec[1];
    m.f1 = f1[1];
  } else {
    m.precision = m.macro_precision;
    m.recall = m.macro_recall;
    m.f1 = m.macro_f1;
  }

  // ROC-AUC: binary on P(class 1), or the macro mean of one-vs-rest AUCs.
  double auc_sum = 0;
  int classes_scored = 0;
  for (int c = (k == 2 ? 1 : 0); c < k; ++c) {
    std::vector<int> pos(n);
    std::vector<double> score(n);
    bool has_pos = false, has_neg = false;
    for (size_t i = 0; i < n; ++i) {
      pos[i] = in.labels[i] == c;
      (pos[i] ? has_pos : has_neg) = true;
      score[i] = in.probs[i][static_cast<size_t>(c)];
    }
    if (!has_pos || !has_neg) {
      m.roc_auc_defined = false;
      continue;
    }
    auc_sum += BinaryRocAuc(pos, score);
    ++classes_scored;
    if (c == 1) m.roc_curve = RocCurve(pos, score);
  }
  m.roc_auc = classes_scored ? auc_sum / classes_scored : 0.0;
  return m;
}

}  // namespace attune::worker::eval
