#include "worker/eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/task_catalog.h"

namespace attune::worker::eval {
namespace {

std::vector<std::pair<std::string, double>> Ordered(const Metrics& m) {
  return common::InCatalogOrder(m.task, m.Named());
}

nlohmann::json MetricsJson(const Metrics& m, const std::vector<std::string>& names) {
  nlohmann::json j;
  j["count"] = m.count;
  for (const auto& [k, v] : m.Named()) j[k] = v;
  if (m.task == "masked_lm") {
    j["masked_tokens"] = m.count;
    j["sequences"] = m.examples;
  }
  if (m.task == "token_classification") {
    j["words"] = m.count;
    j["sentences"] = m.examples;
    j["labels"] = names;
    j["per_type"] = nlohmann::json::array();
    for (size_t i = 0; i < m.per_label.size() && i < m.entity_types.size(); ++i) {
      const auto& l = m.per_label[i];
      j["per_type"].push_back({{"type", m.entity_types[i]},
                               {"precision", l.precision},
                               {"recall", l.recall},
                               {"f1", l.f1},
                               {"support", l.support}});
    }
  }
  if (m.task == "sequence_classification") {
    if (!m.roc_auc_defined) j["roc_auc"] = nullptr;
    j["confusion_matrix"] = m.confusion;
    j["labels"] = names;
  } else if (m.task == "multi_label_classification") {
    if (!m.roc_auc_defined) j["micro_roc_auc"] = nullptr;
    j["labels"] = names;
    j["per_label"] = nlohmann::json::array();
    for (size_t i = 0; i < m.per_label.size(); ++i) {
      const auto& l = m.per_label[i];
      j["per_label"].push_back({{"label", i < names.size() ? names[i] : std::to_string(i)},
                                {"precision", l.precision},
                                {"recall", l.recall},
                                {"f1", l.f1},
                                {"support", l.support}});
    }
  }
  return j;
}

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o.push_back(c);
    }
  }
  return o;
}

// A line chart of one or more series in a W x H SVG.
std::string LineChart(const std::string& title,
                      const std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>>& series,
                      bool unit_square) {
  const double W = 420, H = 260, L = 50, R = 10, T = 25, B = 35;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& [_, pts] : series) {
    for (auto [x, y] : pts) {
      x0 = std::min(x0, x); x1 = std::max(x1, x);
      y0 = std::min(y0, y); y1 = std::max(y1, y);
    }
  }
  if (unit_square) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x0 > x1) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  auto sx = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' role='img'><title>%s</title>"
      "<text x='%g' y='16' font-size='13' font-weight='bold'>%s</text>"
      "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#333'/><line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#333'/>"
      "<text x='%g' y='%g' font-size='10'>%.3g</text><text x='%g' y='%g' font-size='10'>%.3g</text>"
      "<text x='2' y='%g' font-size='10'>%.3g</text><text x='2' y='%g' font-size='10'>%.3g</text>",
      W, H, Escape(title), L, Escape(title), L, H - B, W - R, H - B, L, T, L, H - B, L, H - B + 14, x0,
      W - R - 30, H - B + 14, x1, H - B, y0, T + 8, y1);
  if (unit_square) {
    svg += absl::StrFormat("<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#bbb' stroke-dasharray='4'/>", sx(0), sy(0),
                           sx(1), sy(1));
  }
  int ci = 0;
  double legend_y = T + 4;
  for (const auto& [name, pts] : series) {
    const char* color = kColors[ci++ % 5];
    std::string path;
    for (auto [x, y] : pts) absl::StrAppendFormat(&path, "%s%.2f,%.2f", path.empty() ? "M" : " L", sx(x), sy(y));
    if (!path.empty()) {
      svg += absl::StrFormat("<path d='%s' fill='none' stroke='%s' stroke-width='1.8'/>", path, color);
    }
    svg += absl::StrFormat("<text x='%g' y='%g' font-size='11' fill='%s'>%s</text>", W - 140, legend_y + 10, color,
                           Escape(name));
    legend_y += 14;
  }
  svg += "</svg>";
  return svg;
}

std::string ConfusionSvg(const Metrics& m, const std::vector<std::string>& names) {
  const size_t k = m.confusion.size();
  const double cell = k <= 4 ? 70 : std::max(24.0, 280.0 / static_cast<double>(k)), L = 110, T = 40;
  int64_t mx = 1;
  for (const auto& row : m.confusion) for (int64_t v : row) mx = std::max(mx, v);
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' role='img'><title>Confusion matrix</title>"
      "<text x='%g' y='14' font-size='12'>predicted &#8594;</text><text x='2' y='%g' font-size='12'>true &#8595;</text>",
      L + cell * static_cast<double>(k) + 10, T + cell * static_cast<double>(k) + 10, L, T - 6);
  for (size_t i = 0; i < k; ++i) {
    std::string name = i < names.size() ? names[i] : std::to_string(i);
    svg += absl::StrFormat("<text x='4' y='%g' font-size='11'>%s</text>", T + cell * (static_cast<double>(i) + 0.55),
                           Escape(name.substr(0, 14)));
    svg += absl::StrFormat("<text x='%g' y='%g' font-size='11'>%s</text>", L + cell * static_cast<double>(i) + 4,
                           T - 20, Escape(name.substr(0, 10)));
    for (size_t j = 0; j < k; ++j) {
      double a = static_cast<double>(m.confusion[i][j]) / static_cast<double>(mx);
      svg += absl::StrFormat(
          "<rect x='%g' y='%g' width='%g' height='%g' fill='rgb(%d,%d,255)' stroke='#fff'/>"
          "<text x='%g' y='%g' font-size='12' text-anchor='middle' fill='%s'>%d</text>",
          L + cell * static_cast<double>(j), T + cell * static_cast<double>(i), cell, cell,
          static_cast<int>(255 - 200 * a), static_cast<int>(255 - 160 * a), L + cell * (static_cast<double>(j) + 0.5),
          T + cell * (static_cast<double>(i) + 0.55), a > 0.6 ? "#fff" : "#000", m.confusion[i][j]);
    }
  }
  return svg + "</svg>";
}

}  // namespace

std::string MetricsToJson(const Metrics& m, const std::vector<std::string>& names) {
  return MetricsJson(m, names).dump(2);
}

std::string ReportJson(const ReportInput& in) {
  nlohmann::json j;
  j["job"] = in.job_name;
  j["task"] = in.task;
  j["method"] = in.method;
  j["precision"] = in.precision;
  j["trainable_parameters"] = in.trainable_parameters;
  j["total_parameters"] = in.total_parameters;
  j["best_step"] = in.best_step;
  j["stop_reason"] = in.stop_reason;
  // "baseline": the strongest baseline computed (TF-IDF + logistic regression
  // where fitted), its metrics at the top level beside "method";
  // "trivial_baseline": the trivial predictor, always.
  const auto final_named = in.final_eval.metrics.Named();
  const auto figures = [&](const BaselineFigures& b) {
    nlohmann::json f = {{"method", b.method}, {"description", b.description}};
    for (const auto& [name, v] : b.metrics) f[name] = v;
    if (!b.details.empty()) f["details"] = b.details;
    f["beats_model_on"] = common::BaselineWinsOn(in.task, final_named, b.metrics);
    return f;
  };
  j["baseline"] = figures(in.reference ? *in.reference : in.trivial);
  j["trivial_baseline"] = figures(in.trivial);
  if (in.task == "sequence_classification" && in.trivial.metrics.count("accuracy")) {
    j["majority_baseline_accuracy"] = in.trivial.metrics.at("accuracy");
  }
  j["final"] = MetricsJson(in.final_eval.metrics, in.label_names);
  j["final"]["step"] = in.final_eval.step;
  j["history"] = nlohmann::json::array();
  for (const auto& e : in.evals) {
    nlohmann::json h = e.metrics.Named();
    h["count"] = e.metrics.count;
    h["step"] = e.step;
    h["epoch"] = e.epoch;
    j["history"].push_back(h);
  }
  j["train_loss"] = nlohmann::json::array();
  for (auto [s, l] : in.train_loss) j["train_loss"].push_back({{"step", s}, {"loss", l}});
  return j.dump(2);
}

std::string ReportTable(const Metrics& m, const std::vector<std::string>& names) {
  std::string out = absl::StrFormat("%-16s %8s\n", "metric", "value");
  if (m.task == "token_classification") {
    absl::StrAppendFormat(&out, "%-16s %8d\n", "sentences", m.examples);
    absl::StrAppendFormat(&out, "%-16s %8d\n", "words", m.count);
    for (const auto& [name, v] : Ordered(m)) absl::StrAppendFormat(&out, "%-16s %8.4f\n", name, v);
    out += absl::StrFormat("\n%-16s %9s %9s %9s %9s\n", "entity type", "precision", "recall", "f1", "support");
    for (size_t i = 0; i < m.per_label.size() && i < m.entity_types.size(); ++i) {
      const auto& l = m.per_label[i];
      absl::StrAppendFormat(&out, "%-16s %9.4f %9.4f %9.4f %9d\n", m.entity_types[i].substr(0, 16), l.precision,
                            l.recall, l.f1, l.support);
    }
    return out;
  }
  if (m.task == "masked_lm") {
    absl::StrAppendFormat(&out, "%-16s %8d\n", "sequences", m.examples);
    absl::StrAppendFormat(&out, "%-16s %8d\n", "masked tokens", m.count);
  } else {
    absl::StrAppendFormat(&out, "%-16s %8d\n", "examples", m.count);
  }
  for (const auto& [name, v] : Ordered(m)) absl::StrAppendFormat(&out, "%-16s %8.4f\n", name, v);
  if (m.task == "multi_label_classification") {
    out += absl::StrFormat("\n%-16s %9s %9s %9s %9s\n", "label", "precision", "recall", "f1", "support");
    for (size_t i = 0; i < m.per_label.size(); ++i) {
      const auto& l = m.per_label[i];
      absl::StrAppendFormat(&out, "%-16s %9.4f %9.4f %9.4f %9d\n", i < names.size() ? names[i].substr(0, 16) : "?",
                            l.precision, l.recall, l.f1, l.support);
    }
    return out;
  }
  if (m.task != "sequence_classification") return out;
  out += "\nconfusion matrix (rows: true, columns: predicted)\n";
  size_t w = 8;
  for (const auto& n : names) w = std::max(w, std::min<size_t>(n.size(), 16) + 1);
  out += std::string(w, ' ');
  for (const auto& n : names) absl::StrAppendFormat(&out, "%*s", static_cast<int>(w), n.substr(0, 16));
  out += "\n";
  for (size_t i = 0; i < m.confusion.size(); ++i) {
    absl::StrAppendFormat(&out, "%-*s", static_cast<int>(w), i < names.size() ? names[i].substr(0, 16) : "?");
    for (int64_t v : m.confusion[i]) absl::StrAppendFormat(&out, "%*d", static_cast<int>(w), v);
    out += "\n";
  }
  return out;
}

std::string ReportHtml(const ReportInput& in) {
  const Metrics& m = in.final_eval.metrics;
  const common::TaskInfo* task = common::FindTask(in.task);
  std::vector<std::pair<double, double>> loss, eval_loss, roc;
  for (auto [s, l] : in.train_loss) loss.emplace_back(static_cast<double>(s), l);
  // The task's headline metrics over the evaluations.
  std::vector<std::pair<std::string, std::vector<std::pair<double, double>>>> curves;
  if (task) {
    for (const auto& name : task->headline) curves.push_back({name, {}});
  }
  for (const auto& e : in.evals) {
    eval_loss.emplace_back(static_cast<double>(e.step), e.metrics.loss);
    const auto named = e.metrics.Named();
    for (auto& [name, pts] : curves) {
      auto it = named.find(name);
      if (it != named.end()) pts.emplace_back(static_cast<double>(e.step), it->second);
    }
  }
  for (const auto& p : m.roc_curve) roc.emplace_back(p.fpr, p.tpr);
  std::string html = absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>Attune eval report: ", Escape(in.job_name),
      "</title><style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}"
      "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}.charts{display:flex;flex-wrap:wrap;gap:16px}"
      "</style></head><body><h1>Evaluation report: ", Escape(in.job_name), "</h1>");
  absl::StrAppendFormat(&html,
                        "<p>Task <b>%s</b>; method <b>%s</b>; precision <b>%s</b>; %d of %d parameters trained; "
                        "exported step %d; stop reason: %s.</p>",
                        Escape(in.task), Escape(in.method), Escape(in.precision), in.trainable_parameters, in.total_parameters,
                        in.final_eval.step, Escape(in.stop_reason));
  std::vector<const BaselineFigures*> baselines;
  if (in.reference) baselines.push_back(&*in.reference);
  baselines.push_back(&in.trivial);
  const auto named = m.Named();
  bool reference_wins = false;
  for (const BaselineFigures* b : baselines) {
    absl::StrAppendFormat(&html, "<p>Baseline <b>%s</b>: %s.", Escape(b->method), Escape(b->description));
    const auto wins = common::BaselineWinsOn(in.task, named, b->metrics);
    if (!wins.empty()) {
      absl::StrAppendFormat(&html, " <b class='verdict'>This baseline beats the model on %s.</b>",
                            Escape(absl::StrJoin(wins, ", ")));
      if (b != &in.trivial) reference_wins = true;
    }
    html += "</p>";
  }
  if (in.reference) {
    html += reference_wins
                ? "<p class='verdict'>A bag-of-words model does better here: train longer, start from a pretrained "
                  "checkpoint (model.path), or use the baseline.</p>"
                : "<p class='verdict'>The model beats the TF-IDF + logistic regression baseline on every headline "
                  "metric.</p>";
  }
  // The final evaluation beside the baselines' figures, metric by metric.
  html += "<table><tr><th>metric</th><th>model</th>";
  for (const BaselineFigures* b : baselines) absl::StrAppendFormat(&html, "<th>%s</th>", Escape(b->method));
  html += "</tr>";
  std::string empty_cells;
  for (size_t i = 0; i < baselines.size(); ++i) empty_cells += "<td></td>";
  if (m.task == "token_classification") {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>sentences</td><td>%d</td>%s</tr>", m.examples, empty_cells);
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>words</td><td>%d</td>%s</tr>", m.count, empty_cells);
  } else if (m.task == "masked_lm") {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>sequences</td><td>%d</td>%s</tr>", m.examples, empty_cells);
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>masked tokens</td><td>%d</td>%s</tr>", m.count, empty_cells);
  } else {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>examples</td><td>%d</td>%s</tr>", m.count, empty_cells);
  }
  for (const auto& [name, v] : Ordered(m)) {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>%s</td><td>%.4f</td>", Escape(name), v);
    for (const BaselineFigures* b : baselines) {
      auto f = b->metrics.find(name);
      absl::StrAppendFormat(&html, "<td>%s</td>", f == b->metrics.end() ? "" : absl::StrFormat("%.4f", f->second));
    }
    html += "</tr>";
  }
  html += "</table>";
  if (m.task == "token_classification") {
    html += "<h2>Per entity type</h2><table><tr><th>type</th><th>precision</th><th>recall</th><th>f1</th>"
            "<th>support (entities)</th></tr>";
    for (size_t i = 0; i < m.per_label.size() && i < m.entity_types.size(); ++i) {
      const auto& l = m.per_label[i];
      absl::StrAppendFormat(&html,
                            "<tr><td style='text-align:left'>%s</td><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%d</td></tr>",
                            Escape(m.entity_types[i]), l.precision, l.recall, l.f1, l.support);
    }
    html += "</table>";
  }
  if (m.task == "multi_label_classification") {
    html += "<h2>Per label</h2><table><tr><th>label</th><th>precision</th><th>recall</th><th>f1</th><th>support</th></tr>";
    for (size_t i = 0; i < m.per_label.size(); ++i) {
      const auto& l = m.per_label[i];
      absl::StrAppendFormat(&html,
                            "<tr><td style='text-align:left'>%s</td><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%d</td></tr>",
                            Escape(i < in.label_names.size() ? in.label_names[i] : std::to_string(i)), l.precision,
                            l.recall, l.f1, l.support);
    }
    html += "</table>";
  }
  html += "<div class='charts'>";
  html += LineChart("Loss", {{"train loss", loss}, {"eval loss", eval_loss}}, false);
  html += LineChart("Evaluation metrics", curves, false);
  if (!roc.empty()) {
    html += LineChart(m.task == "multi_label_classification" ? "ROC curve (micro)" : "ROC curve", {{"ROC", roc}}, true);
  }
  if (m.task == "sequence_classification") html += ConfusionSvg(m, in.label_names);
  html += "</div></body></html>\n";
  return html;
}

}  // namespace attune::worker::eval
