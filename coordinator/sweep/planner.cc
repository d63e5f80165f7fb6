#include "coordinator/sweep/planner.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/job_config.h"
#include "common/spec_path.h"
#include "common/task_catalog.h"

namespace attune::coordinator::sweep {
namespace {

// SplitMix64: a fixed, portable generator, so that a seed means the same
// points on every platform and standard library.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A uniform draw in [0, 1) for (seed, trial, parameter).
double Uniform(int64_t seed, int64_t trial, size_t param) {
  constexpr uint64_t kStep = 0x9e3779b97f4a7c15ULL;
  const uint64_t h =
      Mix(Mix(Mix(static_cast<uint64_t>(seed)) + static_cast<uint64_t>(trial) * kStep) + static_cast<uint64_t>(param) * kStep);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

int64_t DomainSize(const ParamDomain& p) {
  switch (p.kind) {
    case ParamDomain::Kind::kChoice: return static_cast<int64_t>(p.choices.size());
    case ParamDomain::Kind::kIntRange: return static_cast<int64_t>(p.high - p.low) + 1;
    default: return -1;
  }
}

std::string Pick(const ParamDomain& p, int64_t i) {
  if (p.kind == ParamDomain::Kind::kChoice) return p.choices[static_cast<size_t>(i)];
  return std::to_string(static_cast<int64_t>(p.low) + i);
}

std::string Number(double v) { return nlohmann::json(v).dump(); }

// numpy.percentile's default (linear interpolation).
double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 50); }

bool Live(const TrialRecord& t) { return !t.terminal; }

}  // namespace

std::map<std::string, std::string> TrialParameters(const SweepConfig& c, int64_t index) {
  std::map<std::string, std::string> out;
  if (c.algorithm == "grid") {
    // Mixed radix over the parameters in path order, the last varying fastest.
    int64_t rest = index;
    for (size_t i = c.params.size(); i-- > 0;) {
      const int64_t n = std::max<int64_t>(1, DomainSize(c.params[i]));
      out[c.params[i].path] = Pick(c.params[i], rest % n);
      rest /= n;
    }
    return out;
  }
  for (size_t i = 0; i < c.params.size(); ++i) {
    const ParamDomain& p = c.params[i];
    const double u = Uniform(c.seed, index, i);
    switch (p.kind) {
      case ParamDomain::Kind::kChoice:
      case ParamDomain::Kind::kIntRange: {
        const int64_t n = DomainSize(p);
        out[p.path] = Pick(p, std::min<int64_t>(n - 1, static_cast<int64_t>(u * static_cast<double>(n))));
        break;
      }
      case ParamDomain::Kind::kUniform:
        out[p.path] = Number(p.low + u * (p.high - p.low));
        break;
      case ParamDomain::Kind::kLogUniform:
        out[p.path] = Number(std::exp(std::log(p.low) + u * (std::log(p.high) - std::log(p.low))));
        break;
    }
  }
  return out;
}

int64_t GridSize(const SweepConfig& c) {
  int64_t n = 1;
  for (const auto& p : c.params) {
    const int64_t k = DomainSize(p);
    if (k <= 0) return -1;
    if (n > (int64_t{1} << 40) / k) return int64_t{1} << 40;
    n *= k;
  }
  return n;
}

int64_t TrialCount(const SweepConfig& c) {
  if (c.algorithm == "grid") {
    const int64_t g = GridSize(c);
    return c.max_trials > 0 ? std::min(c.max_trials, g) : g;
  }
  return c.max_trials;
}

std::vector<int64_t> AshaRungs(const EarlyStopConfig& e) {
  std::vector<int64_t> rungs;
  if (e.type != EarlyStopConfig::Type::kAsha || e.grace_steps <= 0 || e.reduction_factor < 2) return rungs;
  for (int64_t r = e.grace_steps; r < e.max_steps; r *= e.reduction_factor) rungs.push_back(r);
  return rungs;
}

absl::Status ValidateSweepConfig(const SweepConfig& c) {
  std::vector<std::string> errors;
  auto check = [&](bool ok, const std::string& field, const std::string& why) {
    if (!ok) errors.push_back(absl::StrCat(field, ": ", why));
  };
  check(common::IsValidName(c.name), "name", "must match [A-Za-z0-9._-]{1,128}");
  check(!c.output_dir.empty(), "spec.output_dir", "required: trials write to <output_dir>/trial-<n>");
  check(!c.params.empty(), "parameters", "name at least one spec path to search over");
  check(c.params.size() <= 32, "parameters", "at most 32");
  for (const auto& p : c.params) {
    const std::string f = absl::StrCat("parameters.", p.path);
    if (!common::IsSpecPath(p.path)) {
      check(false, f, "not a spec path (snake_case fields joined by '.', like hyperparameters.learning_rate)");
      continue;
    }
    check(p.path != "name" && p.path != "output_dir" && p.path.rfind("labels", 0) != 0, f,
          "set by the sweep for each trial; it cannot be searched");
    check(!(c.early_stopping.type == EarlyStopConfig::Type::kAsha && p.path == "hyperparameters.max_steps"), f,
          "ASHA sets every trial's max_steps from early_stopping.max_steps");
    switch (p.kind) {
      case ParamDomain::Kind::kChoice:
        check(!p.choices.empty() && p.choices.size() <= 1000, f, "choice needs 1 to 1000 values");
        break;
      case ParamDomain::Kind::kIntRange:
        check(std::isfinite(p.low) && std::isfinite(p.high) && p.low <= p.high && p.high - p.low < 1e9, f,
              "int_range needs [low, high] with low <= high");
        break;
      case ParamDomain::Kind::kUniform:
        check(std::isfinite(p.low) && std::isfinite(p.high) && p.low < p.high, f, "uniform needs [low, high] with low < high");
        break;
      case ParamDomain::Kind::kLogUniform:
        check(std::isfinite(p.low) && std::isfinite(p.high) && p.low > 0 && p.low < p.high, f,
              "log_uniform needs [low, high] with 0 < low < high");
        break;
    }
  }
  const common::TaskInfo* task = common::FindTask(c.task);
  if (!task) {
    check(false, "spec.task.type", absl::StrCat("unknown task '", c.task, "'"));
  } else {
    check(common::FindMetric(*task, c.objective) != nullptr, "objective.metric",
          absl::StrCat("'", c.objective, "' is not a metric of ", task->name, " (", common::MetricNames(*task), ")"));
  }
  if (c.algorithm == "grid") {
    const int64_t g = GridSize(c);
    check(g > 0, "algorithm.type", "grid needs every parameter to be a choice or an int_range");
    check(g <= 10000, "parameters", absl::StrCat("the grid has ", g, " points; at most 10000"));
    check(c.max_trials >= 0, "max_trials", "must be >= 0 (0: the whole grid)");
  } else if (c.algorithm == "random") {
    check(c.max_trials >= 1 && c.max_trials <= 1000, "max_trials", "random search needs 1 to 1000 trials");
  } else {
    check(false, "algorithm.type", absl::StrCat("'", c.algorithm, "' is not random or grid"));
  }
  check(c.parallel_trials >= 1 && c.parallel_trials <= 256, "parallel_trials", "must be 1 to 256");
  const auto& e = c.early_stopping;
  if (e.type == EarlyStopConfig::Type::kAsha) {
    check(e.grace_steps >= 1, "early_stopping.grace_steps", "must be >= 1");
    check(e.reduction_factor >= 2 && e.reduction_factor <= 100, "early_stopping.reduction_factor", "must be 2 to 100");
    check(e.max_steps > e.grace_steps, "early_stopping.max_steps", "must be > grace_steps");
  } else if (e.type == EarlyStopConfig::Type::kMedian) {
    check(e.min_trials >= 1, "early_stopping.min_trials", "must be >= 1");
    check(e.start_step >= 0, "early_stopping.start_step", "must be >= 0");
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
}

Plan PlanSweep(const SweepConfig& c, const std::vector<TrialRecord>& trials, bool cancelled) {
  Plan plan;
  std::vector<bool> stopping(trials.size(), false);
  for (size_t i = 0; i < trials.size(); ++i) stopping[i] = trials[i].stopped_early;
  const double sign = c.maximize ? 1.0 : -1.0;  // compare in "higher is better"
  // 1. ASHA.
  const std::vector<int64_t> rungs = AshaRungs(c.early_stopping);
  if (!rungs.empty()) {
    std::map<int64_t, std::vector<double>> recorded;  // rung -> sign * value
    for (const auto& t : trials) {
      for (const auto& [rung, v] : t.rungs) recorded[rung].push_back(sign * v);
    }
    const double q = (1.0 - 1.0 / static_cast<double>(c.early_stopping.reduction_factor)) * 100.0;
    for (const auto& t : trials) {
      for (size_t k = 0; k < rungs.size() && !stopping[static_cast<size_t>(t.index)]; ++k) {
        const int64_t rung = rungs[k];
        if (t.rungs.count(rung)) continue;
        auto at = t.curve.lower_bound(rung);
        if (at == t.curve.end()) break;  // not there yet
        const double v = sign * at->second;
        auto& others = recorded[rung];
        if (Live(t) && !others.empty()) {
          const double cutoff = Percentile(others, q);
          if (v < cutoff) {
            stopping[static_cast<size_t>(t.index)] = true;
            plan.stop.push_back(
                {t.index, absl::StrFormat("asha: %s %.4f at step %d (rung %d) is below the top 1/%d of the %d trials "
                                          "recorded there (cutoff %.4f)",
                                          c.objective, at->second, at->first, k, c.early_stopping.reduction_factor,
                                          others.size(), sign * cutoff)});
          }
        }
        others.push_back(v);
        plan.record.push_back({t.index, rung, at->second});
      }
    }
  }
  // 2. Median stopping.
  if (c.early_stopping.type == EarlyStopConfig::Type::kMedian) {
    std::vector<const TrialRecord*> completed;
    for (const auto& t : trials) {
      if (t.has_final && !t.curve.empty()) completed.push_back(&t);
    }
    if (static_cast<int64_t>(completed.size()) >= c.early_stopping.min_trials) {
      for (const auto& t : trials) {
        if (!Live(t) || stopping[static_cast<size_t>(t.index)] || t.curve.empty()) continue;
        const int64_t step = t.curve.rbegin()->first;
        if (step < c.early_stopping.start_step) continue;
        double best = -INFINITY;
        for (const auto& [s, v] : t.curve) best = std::max(best, sign * v);
        std::vector<double> averages;
        for (const TrialRecord* o : completed) {
          double sum = 0;
          int n = 0;
          for (const auto& [s, v] : o->curve) {
            if (s > step) break;
            sum += sign * v;
            ++n;
          }
          if (n > 0) averages.push_back(sum / n);
        }
        if (static_cast<int64_t>(averages.size()) < c.early_stopping.min_trials) continue;
        const double median = Median(averages);
        if (best < median) {
          stopping[static_cast<size_t>(t.index)] = true;
          plan.stop.push_back({t.index, absl::StrFormat("median: best %s %.4f by step %d is worse than the median "
                                                        "%.4f of %d completed trials' running averages",
                                                        c.objective, sign * best, step, sign * median,
                                                        averages.size())});
        }
      }
    }
  }
  // 3. New trials.
  int64_t live = 0;
  for (const auto& t : trials) live += Live(t);
  const int64_t total = TrialCount(c);
  int64_t next = static_cast<int64_t>(trials.size());
  if (!cancelled) {
    while (live < c.parallel_trials && next < total) {
      plan.start.push_back(next++);
      ++live;
    }
  }
  // 4. Done?
  plan.finished = live == 0 && (cancelled || next >= total);
  return plan;
}

}  // namespace attune::coordinator::sweep
