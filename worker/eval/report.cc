#include "worker/eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attune::worker::eval {
namespace {

nlohmann::json MetricsJson(const Metrics& m, const std::vector<std::string>& names) {
  nlohmann::json j;
  j["count"] = m.count;
  j["loss"] = m.loss;
  j["accuracy"] = m.accuracy;
  j["precision"] = m.precision;
  j["recall"] = m.recall;
  j["f1"] = m.f1;
  j["macro_precision"] = m.macro_precision;
  j["macro_recall"] = m.macro_recall;
  j["macro_f1"] = m.macro_f1;
  j["micro_precision"] = m.micro_precision;
  j["micro_recall"] = m.micro_recall;
  j["micro_f1"] = m.micro_f1;
  if (m.roc_auc_defined) {
    j["roc_auc"] = m.roc_auc;
  } else {
    j["roc_auc"] = nullptr;
  }
  j["confusion_matrix"] = m.confusion;
  j["labels"] = names;
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
  j["method"] = in.method;
  j["trainable_parameters"] = in.trainable_parameters;
  j["total_parameters"] = in.total_parameters;
  j["best_step"] = in.best_step;
  j["stop_reason"] = in.stop_reason;
  j["majority_baseline_accuracy"] = in.baseline_accuracy;
  j["final"] = MetricsJson(in.final_eval.metrics, in.label_names);
  j["final"]["step"] = in.final_eval.step;
  j["history"] = nlohmann::json::array();
  for (const auto& e : in.evals) {
    auto h = MetricsJson(e.metrics, in.label_names);
    h.erase("confusion_matrix");
    h.erase("labels");
    h["step"] = e.step;
    h["epoch"] = e.epoch;
    j["history"].push_back(h);
  }
  j["train_loss"] = nlohmann::json::array();
  for (auto [s, l] : in.train_loss) j["train_loss"].push_back({{"step", s}, {"loss", l}});
  return j.dump(2);
}

std::string ReportTable(const Metrics& m, const std::vector<std::string>& names) {
  std::string out = absl::StrFormat("%-12s %8s\n", "metric", "value");
  auto row = [&](const char* name, double v) { absl::StrAppendFormat(&out, "%-12s %8.4f\n", name, v); };
  absl::StrAppendFormat(&out, "%-12s %8d\n", "examples", m.count);
  row("loss", m.loss);
  row("accuracy", m.accuracy);
  row("precision", m.precision);
  row("recall", m.recall);
  row("f1", m.f1);
  if (names.size() > 2) {
    row("macro_f1", m.macro_f1);
    row("micro_f1", m.micro_f1);
  }
  if (m.roc_auc_defined) row("roc_auc", m.roc_auc);
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
  std::vector<std::pair<double, double>> loss, eval_loss, acc, f1, auc, roc;
  for (auto [s, l] : in.train_loss) loss.emplace_back(static_cast<double>(s), l);
  for (const auto& e : in.evals) {
    eval_loss.emplace_back(static_cast<double>(e.step), e.metrics.loss);
    acc.emplace_back(static_cast<double>(e.step), e.metrics.accuracy);
    f1.emplace_back(static_cast<double>(e.step), e.metrics.f1);
    if (e.metrics.roc_auc_defined) auc.emplace_back(static_cast<double>(e.step), e.metrics.roc_auc);
  }
  for (const auto& p : m.roc_curve) roc.emplace_back(p.fpr, p.tpr);
  std::string html = absl::StrCat(
      "<!doctype html><html><head><meta charset='utf-8'><title>Attune eval report: ", Escape(in.job_name),
      "</title><style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}"
      "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}.charts{display:flex;flex-wrap:wrap;gap:16px}"
      "</style></head><body><h1>Evaluation report: ", Escape(in.job_name), "</h1>");
  absl::StrAppendFormat(&html,
                        "<p>Method <b>%s</b>; %d of %d parameters trained; exported step %d; stop reason: %s; "
                        "majority-class baseline accuracy %.4f.</p>",
                        Escape(in.method), in.trainable_parameters, in.total_parameters, in.final_eval.step,
                        Escape(in.stop_reason), in.baseline_accuracy);
  html += "<table><tr><th>metric</th><th>value</th></tr>";
  for (auto [name, v] : std::vector<std::pair<const char*, double>>{
           {"examples", static_cast<double>(m.count)}, {"loss", m.loss}, {"accuracy", m.accuracy},
           {"precision", m.precision}, {"recall", m.recall}, {"f1", m.f1}, {"macro f1", m.macro_f1},
           {"roc auc", m.roc_auc_defined ? m.roc_auc : std::nan("")}}) {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>%s</td><td>%.4f</td></tr>", name, v);
  }
  html += "</table><div class='charts'>";
  html += LineChart("Loss", {{"train loss", loss}, {"eval loss", eval_loss}}, false);
  html += LineChart("Evaluation metrics", {{"accuracy", acc}, {"f1", f1}, {"roc auc", auc}}, false);
  html += LineChart("ROC curve", {{"ROC", roc}}, true);
  html += ConfusionSvg(m, in.label_names);
  html += "</div></body></html>\n";
  return html;
}

}  // namespace attune::worker::eval
