#include "worker/eval/metrics.h"

#include <algorithm>
#include <cmath>
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

std::map<std::string, double> Metrics::Named() const {
  if (task == "multi_label_classification") {
    std::map<std::string, double> m = {{"loss", loss},
                                       {"subset_accuracy", subset_accuracy},
                                       {"hamming_loss", hamming_loss},
                                       {"micro_precision", micro_precision},
                                       {"micro_recall", micro_recall},
                                       {"micro_f1", micro_f1},
                                       {"macro_precision", macro_precision},
                                       {"macro_recall", macro_recall},
                                       {"macro_f1", macro_f1}};
    if (roc_auc_defined) m["micro_roc_auc"] = micro_roc_auc;
    return m;
  }
  if (task == "sequence_regression") {
    return {{"loss", loss}, {"mse", mse}, {"mae", mae}, {"pearson", pearson}, {"spearman", spearman}};
  }
  if (task == "masked_lm") return {{"loss", loss}, {"perplexity", perplexity}, {"accuracy", accuracy}};
  if (task == "causal_lm") {
    std::map<std::string, double> m = {{"loss", loss}, {"perplexity", perplexity}, {"token_accuracy", accuracy}};
    m.insert(answers.begin(), answers.end());
    return m;
  }
  if (task == "token_classification") {
    return {{"loss", loss}, {"precision", precision}, {"recall", recall}, {"f1", f1}, {"accuracy", accuracy}};
  }
  std::map<std::string, double> m = {{"loss", loss},
                                     {"accuracy", accuracy},
                                     {"precision", precision},
                                     {"recall", recall},
                                     {"f1", f1},
                                     {"macro_precision", macro_precision},
                                     {"macro_recall", macro_recall},
                                     {"macro_f1", macro_f1},
                                     {"micro_precision", micro_precision},
                                     {"micro_recall", micro_recall},
                                     {"micro_f1", micro_f1}};
  if (roc_auc_defined) m["roc_auc"] = roc_auc;
  return m;
}

Metrics Metrics::FromNamed(const std::string& task, int64_t count, const std::map<std::string, double>& named) {
  Metrics m;
  m.task = task;
  m.count = count;
  auto get = [&](const char* name, double* field) {
    auto it = named.find(name);
    if (it != named.end()) *field = it->second;
  };
  for (auto [name, field] : std::vector<std::pair<const char*, double*>>{
           {"loss", &m.loss}, {"accuracy", &m.accuracy}, {"precision", &m.precision}, {"recall", &m.recall},
           {"f1", &m.f1}, {"macro_precision", &m.macro_precision}, {"macro_recall", &m.macro_recall},
           {"macro_f1", &m.macro_f1}, {"micro_precision", &m.micro_precision}, {"micro_recall", &m.micro_recall},
           {"micro_f1", &m.micro_f1}, {"roc_auc", &m.roc_auc}, {"subset_accuracy", &m.subset_accuracy},
           {"hamming_loss", &m.hamming_loss}, {"micro_roc_auc", &m.micro_roc_auc}, {"mse", &m.mse}, {"mae", &m.mae},
           {"pearson", &m.pearson}, {"spearman", &m.spearman}, {"perplexity", &m.perplexity}}) {
    get(name, field);
  }
  if (task == "causal_lm") {
    get("token_accuracy", &m.accuracy);
    for (const char* name : {"exact_match", "rouge_l", "mc_accuracy", "mc_accuracy_norm"}) {
      if (auto it = named.find(name); it != named.end()) m.answers[name] = it->second;
    }
  }
  m.roc_auc_defined = task == "sequence_regression" || task == "masked_lm" || task == "causal_lm" ||
                      task == "token_classification" ||
                      named.count(task == "multi_label_classification" ? "micro_roc_auc" : "roc_auc") > 0;
  return m;
}

bool Metrics::Get(const std::string& name, double* value) const {
  const std::map<std::string, double> m = Named();
  auto it = m.find(name == "eval_loss" ? std::string("loss") : name);
  if (it == m.end()) return false;
  *value = it->second;
  return true;
}

Metrics ComputeMaskedLmMetrics(int64_t examples, double loss_sum, int64_t masked, int64_t correct) {
  return ComputeLmMetrics("masked_lm", examples, loss_sum, masked, correct);
}

Metrics ComputeLmMetrics(const std::string& task, int64_t examples, double loss_sum, int64_t masked, int64_t correct) {
  Metrics m;
  m.task = task;
  m.examples = examples;
  m.count = masked;
  m.loss = SafeDiv(loss_sum, static_cast<double>(masked));
  m.perplexity = std::exp(m.loss);
  m.accuracy = SafeDiv(static_cast<double>(correct), static_cast<double>(masked));
  return m;
}

Metrics ComputeTokenMetrics(int64_t sentences, const std::vector<std::string>& types,
                            const std::vector<EntityCounts>& counts, int64_t words, int64_t words_right,
                            double loss_sum) {
  Metrics m;
  m.task = "token_classification";
  m.examples = sentences;
  m.count = words;
  m.loss = SafeDiv(loss_sum, static_cast<double>(words));
  m.accuracy = SafeDiv(static_cast<double>(words_right), static_cast<double>(words));
  m.entity_types = types;
  EntityCounts all;
  auto f1 = [](double p, double r) { return p + r == 0 ? 0.0 : 2 * p * r / (p + r); };
  for (const auto& c : counts) {
    all.right += c.right;
    all.truth += c.truth;
    all.predicted += c.predicted;
    LabelScores l;
    l.precision = SafeDiv(static_cast<double>(c.right), static_cast<double>(c.predicted));
    l.recall = SafeDiv(static_cast<double>(c.right), static_cast<double>(c.truth));
    l.f1 = f1(l.precision, l.recall);
    l.support = c.truth;
    m.per_label.push_back(l);
  }
  m.precision = SafeDiv(static_cast<double>(all.right), static_cast<double>(all.predicted));
  m.recall = SafeDiv(static_cast<double>(all.right), static_cast<double>(all.truth));
  m.f1 = f1(m.precision, m.recall);
  return m;
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

Metrics ComputeMultiLabelMetrics(const MultiLabelInput& in) {
  Metrics m;
  m.task = "multi_label_classification";
  const size_t n = in.targets.size(), k = static_cast<size_t>(in.num_labels);
  m.count = static_cast<int64_t>(n);
  m.loss = SafeDiv(in.loss_sum, static_cast<double>(n * k));
  std::vector<double> tp(k, 0), fp(k, 0), fn(k, 0);
  int64_t exact = 0, wrong = 0;
  m.per_label.assign(k, LabelScores{});
  std::vector<int> flat_pos;
  std::vector<double> flat_score;
  flat_pos.reserve(n * k);
  flat_score.reserve(n * k);
  for (size_t i = 0; i < n; ++i) {
    bool all = true;
    for (size_t c = 0; c < k; ++c) {
      const bool truth = in.targets[i][c] != 0, pred = in.probs[i][c] > 0.5;
      tp[c] += truth && pred;
      fp[c] += !truth && pred;
      fn[c] += truth && !pred;
      m.per_label[c].support += truth;
      all &= truth == pred;
      wrong += truth != pred;
      flat_pos.push_back(truth);
      flat_score.push_back(in.probs[i][c]);
    }
    exact += all;
  }
  m.subset_accuracy = SafeDiv(static_cast<double>(exact), static_cast<double>(n));
  m.hamming_loss = SafeDiv(static_cast<double>(wrong), static_cast<double>(n * k));
  double tps = 0, fps = 0, fns = 0, sp = 0, sr = 0, sf = 0;
  for (size_t c = 0; c < k; ++c) {
    auto& l = m.per_label[c];
    l.precision = SafeDiv(tp[c], tp[c] + fp[c]);
    l.recall = SafeDiv(tp[c], tp[c] + fn[c]);
    l.f1 = SafeDiv(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]);
    sp += l.precision;
    sr += l.recall;
    sf += l.f1;
    tps += tp[c];
    fps += fp[c];
    fns += fn[c];
  }
  m.macro_precision = SafeDiv(sp, static_cast<double>(k));
  m.macro_recall = SafeDiv(sr, static_cast<double>(k));
  m.macro_f1 = SafeDiv(sf, static_cast<double>(k));
  m.micro_precision = SafeDiv(tps, tps + fps);
  m.micro_recall = SafeDiv(tps, tps + fns);
  m.micro_f1 = SafeDiv(2 * tps, 2 * tps + fps + fns);
  // Micro ROC-AUC: every (example, label) pair is one binary decision.
  const bool has_pos = std::count(flat_pos.begin(), flat_pos.end(), 1) > 0;
  const bool has_neg = std::count(flat_pos.begin(), flat_pos.end(), 0) > 0;
  m.roc_auc_defined = has_pos && has_neg;
  if (m.roc_auc_defined) {
    m.micro_roc_auc = BinaryRocAuc(flat_pos, flat_score);
    m.roc_curve = RocCurve(flat_pos, flat_score);
  }
  return m;
}

namespace {

// 1-based ranks, ties sharing their mean rank.
std::vector<double> MeanRanks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> rank(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    const double mean = (static_cast<double>(i) + static_cast<double>(j)) / 2 + 1;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = mean;
    i = j + 1;
  }
  return rank;
}

}  // namespace

double Pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 2) return 0;
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(n);
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / static_cast<double>(n);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

double Spearman(const std::vector<double>& x, const std::vector<double>& y) { return Pearson(MeanRanks(x), MeanRanks(y)); }

Metrics ComputeRegressionMetrics(const RegressionInput& in) {
  Metrics m;
  m.task = "sequence_regression";
  const size_t n = in.targets.size();
  m.count = static_cast<int64_t>(n);
  double se = 0, ae = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = in.predictions[i] - in.targets[i];
    se += d * d;
    ae += std::fabs(d);
  }
  m.mse = SafeDiv(se, static_cast<double>(n));
  m.mae = SafeDiv(ae, static_cast<double>(n));
  m.loss = m.mse;
  m.pearson = Pearson(in.predictions, in.targets);
  m.spearman = Spearman(in.predictions, in.targets);
  return m;
}

}  // namespace attune::worker::eval
