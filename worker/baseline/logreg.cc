#include "worker/baseline/logreg.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace attune::worker::baseline {
namespace {

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// log(1 + exp(z)), without overflow.
double Softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

}  // namespace

void LogisticRegression::Scores(const SparseRows& x, size_t r, const std::vector<double>& w,
                                std::vector<double>* z) const {
  const size_t stride = features_ + 1;
  z->assign(static_cast<size_t>(vectors_), 0.0);
  for (int v = 0; v < vectors_; ++v) {
    const double* wv = w.data() + static_cast<size_t>(v) * stride;
    double s = wv[features_];
    for (int64_t k = x.offsets[r]; k < x.offsets[r + 1]; ++k) s += x.vals[static_cast<size_t>(k)] * wv[x.cols[static_cast<size_t>(k)]];
    (*z)[static_cast<size_t>(v)] = s;
  }
}

double LogisticRegression::Objective(const SparseRows& x, const std::vector<int>& y, double c,
                                     const std::vector<double>& w, std::vector<double>* grad) const {
  const size_t stride = features_ + 1, n = x.rows();
  grad->assign(w.size(), 0.0);
  double loss = 0;
  std::vector<double> z, d(static_cast<size_t>(vectors_));
  for (size_t r = 0; r < n; ++r) {
    Scores(x, r, w, &z);
    if (vectors_ == 1) {
      const double t = y[r] == 1 ? 1.0 : 0.0;
      loss += Softplus(z[0]) - t * z[0];
      d[0] = 1 / (1 + std::exp(-z[0])) - t;
    } else {
      const double m = *std::max_element(z.begin(), z.end());
      double sum = 0;
      for (double v : z) sum += std::exp(v - m);
      const double lse = m + std::log(sum);
      loss += lse - z[static_cast<size_t>(y[r])];
      for (size_t v = 0; v < z.size(); ++v) d[v] = std::exp(z[v] - lse) - (static_cast<int>(v) == y[r] ? 1.0 : 0.0);
    }
    for (int v = 0; v < vectors_; ++v) {
      double* gv = grad->data() + static_cast<size_t>(v) * stride;
      const double dv = d[static_cast<size_t>(v)];
      for (int64_t k = x.offsets[r]; k < x.offsets[r + 1]; ++k) gv[x.cols[static_cast<size_t>(k)]] += dv * x.vals[static_cast<size_t>(k)];
      gv[features_] += dv;
    }
  }
  // (C * loss + |W|^2 / 2) / (C n): the same minimiser, on a scale that does not grow with n.
  const double scale = 1.0 / static_cast<double>(std::max<size_t>(n, 1));
  const double lambda = scale / c;
  double penalty = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    (*grad)[i] *= scale;
    if ((i + 1) % stride == 0) continue;  // the intercept
    penalty += w[i] * w[i];
    (*grad)[i] += lambda * w[i];
  }
  return loss * scale + 0.5 * lambda * penalty;
}

absl::Status LogisticRegression::Fit(const SparseRows& x, const std::vector<int>& y, int classes, size_t features,
                                     const LogRegOptions& o) {
  if (classes < 2) return absl::InvalidArgumentError(absl::StrCat("logistic regression needs 2+ classes, got ", classes));
  if (y.size() != x.rows()) {
    return absl::InvalidArgumentError(absl::StrCat("logistic regression: ", x.rows(), " rows but ", y.size(), " labels"));
  }
  for (int label : y) {
    if (label < 0 || label >= classes) return absl::InvalidArgumentError(absl::StrCat("logistic regression: label ", label, " out of range"));
  }
  if (!(o.c > 0)) return absl::InvalidArgumentError("logistic regression: C must be positive");
  classes_ = classes;
  vectors_ = classes == 2 ? 1 : classes;
  features_ = features;
  w_.assign(static_cast<size_t>(vectors_) * (features_ + 1), 0.0);
  iterations_ = 0;
  converged_ = false;

  // L-BFGS (memory 10) with a backtracking Armijo line search; a pair whose
  // curvature is not positive is dropped.
  constexpr size_t kMemory = 10;
  std::deque<std::vector<double>> ss, ys;
  std::deque<double> rhos;
  std::vector<double> g, g_new, dir, w_new;
  double f = Objective(x, y, o.c, w_, &g);
  for (; iterations_ < o.max_iterations; ++iterations_) {
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::abs(v));
    if (gmax < o.tolerance) {
      converged_ = true;
      break;
    }
    // Two-loop recursion: dir = -H g.
    dir = g;
    std::vector<double> alpha(ss.size());
    for (size_t i = ss.size(); i-- > 0;) {
      alpha[i] = rhos[i] * Dot(ss[i], dir);
      for (size_t k = 0; k < dir.size(); ++k) dir[k] -= alpha[i] * ys[i][k];
    }
    double gamma = ss.empty() ? 1.0 / std::max(std::sqrt(Dot(g, g)), 1e-12) : Dot(ss.back(), ys.back()) / Dot(ys.back(), ys.back());
    for (double& v : dir) v *= gamma;
    for (size_t i = 0; i < ss.size(); ++i) {
      const double beta = rhos[i] * Dot(ys[i], dir);
      for (size_t k = 0; k < dir.size(); ++k) dir[k] += (alpha[i] - beta) * ss[i][k];
    }
    for (double& v : dir) v = -v;
    double slope = Dot(g, dir);
    if (slope >= 0) {  // not a descent direction: restart from the gradient
      ss.clear();
      ys.clear();
      rhos.clear();
      dir = g;
      for (double& v : dir) v = -v / std::max(std::sqrt(Dot(g, g)), 1e-12);
      slope = Dot(g, dir);
    }
    double step = 1.0, f_new = 0;
    bool accepted = false;
    for (int tries = 0; tries < 40; ++tries, step *= 0.5) {
      w_new = w_;
      for (size_t k = 0; k < w_new.size(); ++k) w_new[k] += step * dir[k];
      f_new = Objective(x, y, o.c, w_new, &g_new);
      if (f_new <= f + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
    }
    if (!accepted) break;  // no progress left at double precision
    std::vector<double> s(w_.size()), yv(w_.size());
    for (size_t k = 0; k < s.size(); ++k) {
      s[k] = w_new[k] - w_[k];
      yv[k] = g_new[k] - g[k];
    }
    const double sy = Dot(s, yv);
    if (sy > 1e-12) {
      ss.push_back(std::move(s));
      ys.push_back(std::move(yv));
      rhos.push_back(1 / sy);
      if (ss.size() > kMemory) {
        ss.pop_front();
        ys.pop_front();
        rhos.pop_front();
      }
    }
    w_.swap(w_new);
    g.swap(g_new);
    const double drop = f - f_new;
    f = f_new;
    if (drop <= 1e-15 * std::max(1.0, std::abs(f))) {
      converged_ = true;
      break;
    }
  }
  return absl::OkStatus();
}

std::vector<std::vector<double>> LogisticRegression::PredictProba(const SparseRows& x) const {
  std::vector<std::vector<double>> out(x.rows());
  std::vector<double> z;
  for (size_t r = 0; r < x.rows(); ++r) {
    Scores(x, r, w_, &z);
    auto& p = out[r];
    if (vectors_ == 1) {
      const double p1 = 1 / (1 + std::exp(-z[0]));
      p = {1 - p1, p1};
    } else {
      const double m = *std::max_element(z.begin(), z.end());
      double sum = 0;
      p.resize(z.size());
      for (size_t v = 0; v < z.size(); ++v) sum += (p[v] = std::exp(z[v] - m));
      for (double& v : p) v /= sum;
    }
  }
  return out;
}

}  // namespace attune::worker::baseline
