#include "worker/baseline/text_baseline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "worker/baseline/logreg.h"
#include "worker/baseline/tfidf.h"

namespace attune::worker::baseline {
namespace {

constexpr double kCandidates[] = {0.1, 1, 10, 100};

// Per-example targets: one class id (single-label) or 0/1 per label.
using Targets = std::vector<std::vector<int>>;

struct Fitted {
  std::vector<std::vector<double>> probs;
  int iterations = 0;
  bool converged = true;
};

// TF-IDF rows of a split: the vectorizer fitted on its training texts.
struct Features {
  SparseRows train, score;
  size_t features = 0;
};

Features Vectorize(const std::vector<std::string>& train, const std::vector<std::string>& score) {
  TfidfVectorizer vec;
  vec.Fit(train);
  return {vec.Transform(train), vec.Transform(score), vec.features()};
}

// Fits on (x.train, targets) with C and scores x.score. One model for a
// single-label problem, one per label for multi-label.
absl::StatusOr<Fitted> FitAndScore(const Features& x, const Targets& targets, int classes, bool multi_label,
                                   double c) {
  const SparseRows &xt = x.train, &xs = x.score;
  Fitted out;
  LogRegOptions o;
  o.c = c;
  if (!multi_label) {
    std::vector<int> y(targets.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = targets[i][0];
    LogisticRegression lr;
    if (absl::Status s = lr.Fit(xt, y, classes, x.features, o); !s.ok()) return s;
    out.probs = lr.PredictProba(xs);
    out.iterations = lr.iterations();
    out.converged = lr.converged();
    return out;
  }
  out.probs.assign(xs.rows(), std::vector<double>(static_cast<size_t>(classes), 0.0));
  for (int label = 0; label < classes; ++label) {
    std::vector<int> y(targets.size());
    bool both = false;
    for (size_t i = 0; i < y.size(); ++i) {
      y[i] = targets[i][static_cast<size_t>(label)];
      both = both || y[i] != y[0];
    }
    if (!both) {  // one value only: predict it (scikit-learn's OneVsRest does the same)
      for (auto& p : out.probs) p[static_cast<size_t>(label)] = y.empty() ? 0.0 : y[0];
      continue;
    }
    LogisticRegression lr;
    if (absl::Status s = lr.Fit(xt, y, 2, x.features, o); !s.ok()) return s;
    auto p = lr.PredictProba(xs);
    for (size_t r = 0; r < p.size(); ++r) out.probs[r][static_cast<size_t>(label)] = p[r][1];
    out.iterations = std::max(out.iterations, lr.iterations());
    out.converged = out.converged && lr.converged();
  }
  return out;
}

// (score to maximise, log-loss) of `probs` against `targets`.
std::pair<double, double> Quality(const std::vector<std::vector<double>>& probs, const Targets& targets,
                                  bool multi_label) {
  constexpr double kEps = 1e-15;
  double hits = 0, loss = 0, tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    const auto& p = probs[i];
    if (!multi_label) {
      const size_t best = static_cast<size_t>(std::max_element(p.begin(), p.end()) - p.begin());
      hits += static_cast<int>(best) == targets[i][0];
      loss -= std::log(std::max(p[static_cast<size_t>(targets[i][0])], kEps));
      continue;
    }
    for (size_t k = 0; k < p.size(); ++k) {
      const bool truth = targets[i][k] == 1, pred = p[k] > 0.5;
      tp += truth && pred;
      fp += !truth && pred;
      fn += truth && !pred;
      loss -= std::log(std::max(truth ? p[k] : 1 - p[k], kEps));
    }
  }
  const double n = std::max<double>(1, static_cast<double>(probs.size()));
  const double score = multi_label ? (tp > 0 ? 2 * tp / (2 * tp + fp + fn) : 0.0) : hits / n;
  return {score, loss / n};
}

absl::StatusOr<TextBaselineResult> Run(const std::vector<std::string>& train, const Targets& targets, int classes,
                                       bool multi_label, const std::vector<std::string>& validation) {
  const auto start = std::chrono::steady_clock::now();
  if (train.size() != targets.size()) {
    return absl::InvalidArgumentError(absl::StrCat("baseline: ", train.size(), " texts but ", targets.size(), " labels"));
  }
  TextBaselineResult out;
  out.c = 1.0;
  std::vector<std::string> fit_texts, held_texts;
  Targets fit_targets, held_targets;
  for (size_t i = 0; i < train.size(); ++i) {
    (i % 5 == 4 ? held_texts : fit_texts).push_back(train[i]);
    (i % 5 == 4 ? held_targets : fit_targets).push_back(targets[i]);
  }
  if (held_texts.size() >= 2) {
    const Features held = Vectorize(fit_texts, held_texts);  // the same for every C
    std::pair<double, double> best{-1, 0};
    for (double c : kCandidates) {
      absl::StatusOr<Fitted> f = FitAndScore(held, fit_targets, classes, multi_label, c);
      if (!f.ok()) return f.status();
      const auto q = Quality(f->probs, held_targets, multi_label);
      if (q.first > best.first || (q.first == best.first && q.second < best.second)) {
        best = q;
        out.c = c;
      }
    }
  }
  const Features all = Vectorize(train, validation);
  absl::StatusOr<Fitted> f = FitAndScore(all, targets, classes, multi_label, out.c);
  if (!f.ok()) return f.status();
  out.probs = std::move(f->probs);
  out.features = all.features;
  out.iterations = f->iterations;
  out.converged = f->converged;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace

absl::StatusOr<TextBaselineResult> FitTfidfLogReg(const std::vector<std::string>& train, const std::vector<int>& labels,
                                                  int classes, const std::vector<std::string>& validation) {
  Targets t(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) t[i] = {labels[i]};
  return Run(train, t, classes, false, validation);
}

absl::StatusOr<TextBaselineResult> FitTfidfLogRegMultiLabel(const std::vector<std::string>& train,
                                                            const std::vector<std::vector<int>>& labels,
                                                            int num_labels, const std::vector<std::string>& validation) {
  Targets t(labels.size(), std::vector<int>(static_cast<size_t>(std::max(num_labels, 0)), 0));
  for (size_t i = 0; i < labels.size(); ++i) {
    for (int c : labels[i]) {
      if (c < 0 || c >= num_labels) return absl::InvalidArgumentError(absl::StrCat("baseline: label ", c, " out of range"));
      t[i][static_cast<size_t>(c)] = 1;
    }
  }
  return Run(train, t, num_labels, true, validation);
}

}  // namespace attune::worker::baseline
