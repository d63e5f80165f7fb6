#include "coordinator/sweep/report.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attune::coordinator::sweep {
namespace {

using nlohmann::json;

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

json Literal(const std::string& text) {
  json v = json::parse(text, nullptr, false);
  return v.is_discarded() ? json(text) : v;
}

std::string TrialState(const TrialRecord& t) {
  if (t.stopped_early && t.terminal) return "STOPPED_EARLY";
  return JobStateName(t.state);
}

}  // namespace

std::string SweepReportJson(const SweepRecord& s) {
  json trials = json::array();
  for (const auto& t : s.trials) {
    json params = json::object();
    for (const auto& [k, v] : t.params) params[k] = Literal(v);
    json curve = json::array();
    for (const auto& [step, v] : t.curve) curve.push_back({{"step", step}, {"value", v}});
    double obj = 0;
    const bool has = TrialObjective(t, &obj);
    trials.push_back({{"trial", t.index},
                      {"job_id", t.job_id},
                      {"parameters", params},
                      {"state", JobStateName(t.state)},
                      {"objective", has ? json(obj) : json(nullptr)},
                      {"completed", t.has_final},
                      {"steps", t.steps},
                      {"stopped_early", t.stopped_early},
                      {"stopped_reason", t.stopped_reason},
                      {"message", t.message},
                      {"curve", curve},
                      {"output_dir", s.config.output_dir + "/trial-" + std::to_string(t.index)}});
  }
  int64_t steps = 0;
  for (const auto& t : s.trials) steps += t.steps;
  json best = nullptr;
  if (s.best_trial >= 0) {
    best = {{"trial", s.best_trial},
            {"objective", s.best_objective},
            {"job_id", s.trials[static_cast<size_t>(s.best_trial)].job_id},
            {"model_dir", s.config.output_dir + "/trial-" + std::to_string(s.best_trial) + "/model"}};
  }
  json j = {{"id", s.id},
            {"name", s.config.name},
            {"state", SweepStateName(s.state)},
            {"message", s.message},
            {"objective", {{"metric", s.config.objective}, {"goal", s.config.maximize ? "max" : "min"}}},
            {"algorithm", s.config.algorithm},
            {"seed", s.config.seed},
            {"early_stopping", s.config.early_stopping.type == EarlyStopConfig::Type::kAsha     ? "asha"
                               : s.config.early_stopping.type == EarlyStopConfig::Type::kMedian ? "median"
                                                                                                 : "none"},
            {"trial_steps", steps},
            {"trials", trials},
            {"best", best}};
  return j.dump(2) + "\n";
}

std::string SweepReportHtml(const SweepRecord& s) {
  std::string h = absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>Sweep ", Escape(s.config.name),
      "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
      "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
      "tr.best{background:#e6f4e6}</style></head><body>");
  absl::StrAppend(&h, "<h1>Sweep ", Escape(s.config.name), " (", Escape(s.id), ")</h1><p>State <b>",
                  SweepStateName(s.state), "</b>", s.message.empty() ? "" : ": " + Escape(s.message), "</p><p>Objective: ",
                  Escape(s.config.objective), " (", s.config.maximize ? "max" : "min", "), ", Escape(s.config.algorithm),
                  " search, seed ", s.config.seed, ".</p>");
  // The table: trials x parameters x objective.
  std::vector<std::string> paths;
  for (const auto& p : s.config.params) paths.push_back(p.path);
  absl::StrAppend(&h, "<table id='trials'><tr><th>trial</th><th>job</th><th>state</th>");
  for (const auto& p : paths) absl::StrAppend(&h, "<th>", Escape(p), "</th>");
  absl::StrAppend(&h, "<th>", Escape(s.config.objective), "</th><th>steps</th><th>stopped early</th></tr>");
  int64_t total_steps = 0;
  for (const auto& t : s.trials) {
    total_steps += t.steps;
    double obj = 0;
    const bool has = TrialObjective(t, &obj);
    absl::StrAppend(&h, "<tr", t.index == s.best_trial ? " class='best'" : "", "><td>", t.index, "</td><td>",
                    Escape(t.job_id), "</td><td>", TrialState(t), "</td>");
    for (const auto& p : paths) {
      auto it = t.params.find(p);
      absl::StrAppend(&h, "<td>", it == t.params.end() ? "" : Escape(it->second), "</td>");
    }
    absl::StrAppend(&h, "<td>", has ? absl::StrFormat("%.4f", obj) : "-", "</td><td>", t.steps, "</td><td>",
                    Escape(t.stopped_reason), "</td></tr>");
  }
  absl::StrAppend(&h, "</table><p>Trial-steps over all trials: ", total_steps, ".</p>");
  if (s.best_trial >= 0) {
    absl::StrAppend(&h, "<p>Best: trial ", s.best_trial, ", ", Escape(s.config.objective), " ",
                    absl::StrFormat("%.4f", s.best_objective), "; model ", Escape(s.config.output_dir), "/best/model</p>");
  }
  // The chart: each trial's objective over steps.
  double lo = INFINITY, hi = -INFINITY;
  int64_t max_step = 1;
  for (const auto& t : s.trials) {
    for (const auto& [step, v] : t.curve) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      max_step = std::max(max_step, step);
    }
  }
  if (lo <= hi) {
    if (hi - lo < 1e-9) hi = lo + 1;
    const double w = 640, ht = 320, m = 40;
    absl::StrAppend(&h, absl::StrFormat("<h2>%s over steps</h2><svg xmlns='http://www.w3.org/2000/svg' width='%g' "
                                        "height='%g' role='img'><title>%s per trial over steps</title>",
                                        Escape(s.config.objective), w + 2 * m, ht + 2 * m, Escape(s.config.objective)));
    absl::StrAppend(&h, absl::StrFormat("<rect x='%g' y='%g' width='%g' height='%g' fill='none' stroke='#999'/>"
                                        "<text x='%g' y='%g' font-size='11'>%.3f</text><text x='%g' y='%g' "
                                        "font-size='11'>%.3f</text><text x='%g' y='%g' font-size='11'>step %d</text>",
                                        m, m, w, ht, 2.0, m + 4, hi, 2.0, m + ht, lo, m + w - 50, m + ht + 16, max_step));
    static const char* kColours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    for (const auto& t : s.trials) {
      if (t.curve.empty()) continue;
      std::string pts;
      for (const auto& [step, v] : t.curve) {
        absl::StrAppend(&pts, absl::StrFormat("%.1f,%.1f ", m + w * static_cast<double>(step) / static_cast<double>(max_step),
                                              m + ht * (hi - v) / (hi - lo)));
      }
      absl::StrAppend(&h, absl::StrFormat("<polyline class='trial' data-trial='%d' fill='none' stroke='%s' "
                                          "stroke-width='%g' points='%s'><title>trial %d</title></polyline>",
                                          t.index, kColours[t.index % 10], t.index == s.best_trial ? 3.0 : 1.5, pts,
                                          t.index));
    }
    absl::StrAppend(&h, "</svg>");
  }
  absl::StrAppend(&h, "</body></html>\n");
  return h;
}

}  // namespace attune::coordinator::sweep
