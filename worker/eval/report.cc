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
  if (m.task == "causal_lm") {
    j["trained_tokens"] = m.count;
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

// One curve of a chart.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
  double opacity = 1;  // a raw curve under its smoothed one is faint
  int color = -1;      // index into the palette; -1: the next one
};

struct Chart {
  std::string title, x_title, y_title;
  std::vector<Series> series;
  bool unit_square = false;                // both axes [0, 1], with the diagonal
  std::optional<double> marker_x;          // a vertical line (the best step)
  std::string marker_label, note;          // the marker's text; a note in the plot (the AUC)
};

// A line chart in an SVG: axis titles under and beside the axes, the legend
// in a band below the plot (never over a curve), and an optional marker.
std::string LineChart(const Chart& c) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  const double W = 440, L = 58, R = 12, T = 26, plot_h = 200;
  const double x_axis = T + plot_h;
  const double legend_top = x_axis + 50;  // below the x axis title
  // Legend entries flow left to right, wrapping, 14 px per row.
  std::vector<std::pair<double, double>> legend_at;
  double lx = L, ly = legend_top;
  for (const auto& s : c.series) {
    const double w = 22 + 6.5 * static_cast<double>(s.name.size()) + 14;
    if (lx + w > W - R && lx > L) {
      lx = L;
      ly += 15;
    }
    legend_at.emplace_back(lx, ly);
    lx += w;
  }
  const double H = (c.series.empty() ? legend_top : ly + 12) + 4;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : c.series) {
    for (auto [x, y] : s.points) {
      x0 = std::min(x0, x); x1 = std::max(x1, x);
      y0 = std::min(y0, y); y1 = std::max(y1, y);
    }
  }
  if (c.unit_square || x0 > x1) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  auto sx = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return x_axis - (y - y0) / (y1 - y0) * plot_h; };
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' class='chart' width='%g' height='%g' role='img'><title>%s</title>"
      "<text x='%g' y='16' font-size='13' font-weight='bold'>%s</text>"
      "<rect class='plot-area' x='%g' y='%g' width='%g' height='%g' fill='none' stroke='none'/>"
      "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#333'/><line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#333'/>"
      "<text x='%g' y='%g' font-size='10'>%.3g</text><text x='%g' y='%g' font-size='10' text-anchor='end'>%.3g</text>"
      "<text x='%g' y='%g' font-size='10' text-anchor='end'>%.3g</text>"
      "<text x='%g' y='%g' font-size='10' text-anchor='end'>%.3g</text>",
      W, H, Escape(c.title), L, Escape(c.title), L, T, W - L - R, plot_h, L, x_axis, W - R, x_axis, L, T, L, x_axis,
      L, x_axis + 13, x0, W - R, x_axis + 13, x1, L - 4, x_axis, y0, L - 4, T + 8, y1);
  // Axis titles.
  svg += absl::StrFormat("<text class='axis-title' x='%g' y='%g' font-size='11' text-anchor='middle'>%s</text>",
                         (L + W - R) / 2, x_axis + 28, Escape(c.x_title));
  svg += absl::StrFormat(
      "<text class='axis-title' x='%g' y='%g' font-size='11' text-anchor='middle' transform='rotate(-90 %g %g)'>%s</text>",
      14.0, T + plot_h / 2, 14.0, T + plot_h / 2, Escape(c.y_title));
  if (c.unit_square) {
    svg += absl::StrFormat("<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='#bbb' stroke-dasharray='4'/>", sx(0), sy(0),
                           sx(1), sy(1));
  }
  if (c.marker_x && *c.marker_x >= x0 && *c.marker_x <= x1) {
    const double mx = sx(*c.marker_x);
    svg += absl::StrFormat(
        "<line class='marker' x1='%g' y1='%g' x2='%g' y2='%g' stroke='#555' stroke-dasharray='3,3'/>"
        "<text class='marker-label' x='%g' y='%g' font-size='10' fill='#555' text-anchor='%s'>%s</text>",
        mx, T, mx, x_axis, mx > W / 2 ? mx - 3 : mx + 3, T + 10, mx > W / 2 ? "end" : "start", Escape(c.marker_label));
  }
  if (!c.note.empty()) {
    svg += absl::StrFormat("<text class='note' x='%g' y='%g' font-size='12' font-weight='bold' text-anchor='end'>%s</text>",
                           W - R - 6, x_axis - 8, Escape(c.note));
  }
  int next_color = 0;
  for (size_t i = 0; i < c.series.size(); ++i) {
    const Series& s = c.series[i];
    const char* color = kColors[(s.color >= 0 ? s.color : next_color++) % 5];
    std::string path;
    for (auto [x, y] : s.points) absl::StrAppendFormat(&path, "%s%.2f,%.2f", path.empty() ? "M" : " L", sx(x), sy(y));
    if (!path.empty()) {
      svg += absl::StrFormat("<path d='%s' fill='none' stroke='%s' stroke-width='1.8' stroke-opacity='%g'/>", path,
                             color, s.opacity);
    }
    const auto [gx, gy] = legend_at[i];
    svg += absl::StrFormat(
        "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='%s' stroke-width='2' stroke-opacity='%g'/>"
        "<text class='legend' x='%g' y='%g' font-size='11'>%s</text>",
        gx, gy - 4, gx + 18, gy - 4, color, s.opacity, gx + 22, gy, Escape(s.name));
  }
  svg += "</svg>";
  return svg;
}

// An exponential moving average (as TensorBoard's smoothing), weight `w`,
// debiased at the start so that the first points are not pulled to zero.
std::vector<std::pair<double, double>> Smoothed(const std::vector<std::pair<double, double>>& pts, double w) {
  std::vector<std::pair<double, double>> out;
  double avg = 0, norm = 0;
  for (auto [x, y] : pts) {
    avg = w * avg + (1 - w) * y;
    norm = w * norm + (1 - w);
    out.emplace_back(x, avg / norm);
  }
  return out;
}

std::string ConfusionSvg(const Metrics& m, const std::vector<std::string>& names) {
  const size_t k = m.confusion.size();
  auto label = [&names](size_t i) { return i < names.size() ? names[i] : std::to_string(i); };
  auto shown = [&label](size_t i) {
    const std::string n = label(i);
    return n.size() > 16 ? n.substr(0, 15) + "\u2026" : n;
  };
  size_t longest = 4;
  for (size_t i = 0; i < k; ++i) longest = std::max(longest, std::min<size_t>(label(i).size(), 16));
  // Row labels to the left, column labels above and vertical: their room
  // grows with the longest name, so none overlaps a cell or another.
  const double cell = k <= 4 ? 64 : std::max(26.0, 300.0 / static_cast<double>(k));
  const double L = 28 + 6.5 * static_cast<double>(longest), T = 28 + 6.5 * static_cast<double>(longest);
  int64_t mx = 1;
  for (const auto& row : m.confusion) for (int64_t v : row) mx = std::max(mx, v);
  const double size = cell * static_cast<double>(k);
  std::string svg = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' class='confusion' width='%g' height='%g' role='img'>"
      "<title>Confusion matrix</title>"
      "<text class='axis-title' x='%g' y='14' font-size='12' text-anchor='middle'>predicted</text>"
      "<text class='axis-title' x='12' y='%g' font-size='12' text-anchor='middle' transform='rotate(-90 12 %g)'>true</text>",
      L + size + 10, T + size + 10, L + size / 2, T + size / 2, T + size / 2);
  for (size_t i = 0; i < k; ++i) {
    const double row_y = T + cell * (static_cast<double>(i) + 0.5) + 4;
    const double col_x = L + cell * (static_cast<double>(i) + 0.5);
    svg += absl::StrFormat("<text class='row-label' x='%g' y='%g' font-size='11' text-anchor='end'><title>%s</title>%s</text>",
                           L - 6, row_y, Escape(label(i)), Escape(shown(i)));
    svg += absl::StrFormat(
        "<text class='col-label' x='%g' y='%g' font-size='11' transform='rotate(-90 %g %g)'><title>%s</title>%s</text>",
        col_x + 4, T - 6, col_x + 4, T - 6, Escape(label(i)), Escape(shown(i)));
    for (size_t j = 0; j < k; ++j) {
      double a = static_cast<double>(m.confusion[i][j]) / static_cast<double>(mx);
      svg += absl::StrFormat(
          "<rect x='%g' y='%g' width='%g' height='%g' fill='rgb(%d,%d,255)' stroke='#fff'/>"
          "<text x='%g' y='%g' font-size='%d' text-anchor='middle' fill='%s'>%d</text>",
          L + cell * static_cast<double>(j), T + cell * static_cast<double>(i), cell, cell,
          static_cast<int>(255 - 200 * a), static_cast<int>(255 - 160 * a), L + cell * (static_cast<double>(j) + 0.5),
          T + cell * (static_cast<double>(i) + 0.5) + 4, cell < 40 ? 9 : 12, a > 0.6 ? "#fff" : "#000",
          m.confusion[i][j]);
    }
  }
  return svg + "</svg>";
}

// Precision, recall, F1 and support of each class, from the confusion matrix
// (rows: true, columns: predicted).
std::string PerClassTable(const Metrics& m, const std::vector<std::string>& names) {
  std::string html =
      "<h2>Per class</h2><table class='per-class'><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th>"
      "<th>support</th></tr>";
  const size_t k = m.confusion.size();
  for (size_t c = 0; c < k; ++c) {
    int64_t tp = m.confusion[c][c], predicted = 0, support = 0;
    for (size_t r = 0; r < k; ++r) predicted += m.confusion[r][c];
    for (int64_t v : m.confusion[c]) support += v;
    const double p = predicted ? static_cast<double>(tp) / static_cast<double>(predicted) : 0;
    const double r = support ? static_cast<double>(tp) / static_cast<double>(support) : 0;
    const double f1 = p + r > 0 ? 2 * p * r / (p + r) : 0;
    absl::StrAppendFormat(&html,
                          "<tr><td style='text-align:left'>%s</td><td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%d</td></tr>",
                          Escape(c < names.size() ? names[c] : std::to_string(c)), p, r, f1, support);
  }
  return html + "</table>";
}

// Rows read, kept and dropped (by reason) per split, from data_report.json.
std::string DataSection(const std::string& report_json) {
  const nlohmann::json j = nlohmann::json::parse(report_json, nullptr, false);
  if (!j.is_object()) return "";
  std::string html = "<h2>Data</h2><table class='data'><tr><th>split</th><th>file</th><th>rows read</th>"
                     "<th>rows kept</th><th>dropped</th></tr>";
  for (const char* split : {"train", "validation"}) {
    if (!j.contains(split) || !j[split].is_object()) continue;
    const auto& r = j[split];
    std::vector<std::string> drops;
    if (r.contains("dropped") && r["dropped"].is_object()) {
      for (const auto& [reason, n] : r["dropped"].items()) {
        if (n.is_number_integer()) drops.push_back(absl::StrCat(reason, ": ", n.get<int64_t>()));
      }
    }
    absl::StrAppendFormat(&html,
                          "<tr><td style='text-align:left'>%s</td><td style='text-align:left'>%s</td><td>%d</td>"
                          "<td>%d</td><td style='text-align:left'>%s</td></tr>",
                          split, Escape(r.value("source", "")), r.value("rows_read", int64_t{0}),
                          r.value("rows_kept", int64_t{0}), Escape(drops.empty() ? "none" : absl::StrJoin(drops, ", ")));
  }
  html += "</table>";
  absl::StrAppendFormat(&html, "<p>Split: %s; %d training and %d validation examples.</p>",
                        Escape(j.value("split", "")), j.value("train_examples", int64_t{0}),
                        j.value("validation_examples", int64_t{0}));
  // What tokenisation then kept, cut, packed or dropped (causal_lm), with the
  // first lines of each drop.
  for (const auto& [key, name] : {std::pair<const char*, const char*>{"train_encoding", "training"},
                                  {"validation_encoding", "validation"}}) {
    if (!j.contains(key) || !j[key].is_object()) continue;
    const auto& e = j[key];
    absl::StrAppendFormat(&html, "<p>Encoding (%s): %d examples kept in %d sequences, %d cut to max_length", name,
                          e.value("examples", int64_t{0}), e.value("sequences", int64_t{0}),
                          e.value("truncated", int64_t{0}));
    std::vector<std::string> drops;
    if (e.contains("dropped") && e["dropped"].is_object()) {
      for (const auto& [reason, n] : e["dropped"].items()) {
        if (!n.is_number_integer()) continue;
        std::string lines;
        if (e.contains("sample_lines") && e["sample_lines"].is_object() && e["sample_lines"].contains(reason) &&
            e["sample_lines"][reason].is_array()) {
          for (const auto& l : e["sample_lines"][reason]) {
            if (l.is_number_integer()) absl::StrAppend(&lines, lines.empty() ? " (lines " : ", ", l.get<int64_t>());
          }
          if (!lines.empty()) lines += ")";
        }
        drops.push_back(absl::StrCat(reason, ": ", n.get<int64_t>(), lines));
      }
    }
    absl::StrAppendFormat(&html, "; dropped %s.</p>", Escape(drops.empty() ? "none" : absl::StrJoin(drops, ", ")));
  }
  return html;
}

// What ran: ranks, precision, the files' SHA-256 and the spec as given.
std::string RunSection(const ReportInput& in) {
  std::string html = absl::StrFormat(
      "<h2>Run</h2><table class='run'><tr><td style='text-align:left'>ranks (world size)</td><td>%d</td></tr>"
      "<tr><td style='text-align:left'>precision</td><td>%s</td></tr>",
      in.world_size, Escape(in.precision));
  if (in.init_embeddings) {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>token embeddings from</td><td>%s</td></tr>",
                          Escape(model::CoverageLine(*in.init_embeddings)));
  }
  for (const auto& [name, hex] : in.sha256) {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>SHA-256 of %s</td><td><code>%s</code></td></tr>",
                          Escape(name), Escape(hex));
  }
  html += "</table>";
  if (!in.spec_text.empty()) {
    absl::StrAppendFormat(&html, "<details><summary>The spec</summary><pre class='spec'>%s</pre></details>",
                          Escape(in.spec_text));
  }
  return html;
}

// The exported model's first greedy answers beside the references.
std::string AnswersSection(const AnswerSummary& a) {
  std::string html = "<h2>Answers</h2><p>";
  if (a.answered > 0 || a.skipped > 0) {
    absl::StrAppendFormat(&html, "%d validation prompts answered greedily (up to %d new tokens)", a.answered,
                          a.max_new_tokens);
    if (a.skipped > 0) absl::StrAppendFormat(&html, "; %d too long for the model's positions, not answered", a.skipped);
    html += ". ";
  }
  if (a.questions > 0) {
    absl::StrAppendFormat(&html, "%d multiple-choice questions scored", a.questions);
    if (a.truncated_questions > 0) {
      absl::StrAppendFormat(&html, " (%d cut from the left to fit data.max_length)", a.truncated_questions);
    }
    html += ".";
  }
  html += "</p>";
  if (a.samples.empty()) return html;
  html += "<table class='answers'><tr><th>line</th><th>prompt</th><th>reference</th><th>generated</th>"
          "<th>exact match</th><th>ROUGE-L</th></tr>";
  for (const auto& x : a.samples) {
    absl::StrAppendFormat(&html,
                          "<tr><td>%d</td><td style='text-align:left'>%s</td><td style='text-align:left'>%s</td>"
                          "<td style='text-align:left'>%s</td><td>%.0f</td><td>%.4f</td></tr>",
                          x.line, Escape(x.prompt), Escape(x.reference), Escape(x.generated), x.exact_match,
                          x.rouge_l);
  }
  html += "</table>";
  return html;
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
  if (const auto& c = in.init_embeddings) {
    j["init_embeddings"] = {{"name", c->name},
                            {"vocab_size", c->vocab_size},
                            {"covered", c->covered()},
                            {"whole_words", {{"covered", c->whole_words_covered}, {"total", c->whole_words}}},
                            {"pieces", {{"covered", c->pieces_covered}, {"total", c->pieces}}},
                            {"special", c->special}};
  }
  if (const auto& a = in.answers) {
    nlohmann::json samples = nlohmann::json::array();
    for (const auto& x : a->samples) {
      samples.push_back({{"line", x.line},
                         {"prompt", x.prompt},
                         {"reference", x.reference},
                         {"generated", x.generated},
                         {"exact_match", x.exact_match},
                         {"rouge_l", x.rouge_l}});
    }
    j["answers"] = {{"max_new_tokens", a->max_new_tokens},
                    {"answered", a->answered},
                    {"skipped", a->skipped},
                    {"questions", a->questions},
                    {"truncated_questions", a->truncated_questions},
                    {"samples", samples}};
  }
  j["train_loss"] = nlohmann::json::array();
  for (auto [s, l] : in.train_loss) j["train_loss"].push_back({{"step", s}, {"loss", l}});
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
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
  if (m.task == "masked_lm" || m.task == "causal_lm") {
    absl::StrAppendFormat(&out, "%-16s %8d\n", "sequences", m.examples);
    absl::StrAppendFormat(&out, "%-16s %8d\n", m.task == "masked_lm" ? "masked tokens" : "trained tokens", m.count);
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
  } else if (m.task == "masked_lm" || m.task == "causal_lm") {
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>sequences</td><td>%d</td>%s</tr>", m.examples, empty_cells);
    absl::StrAppendFormat(&html, "<tr><td style='text-align:left'>%s</td><td>%d</td>%s</tr>",
                          m.task == "masked_lm" ? "masked tokens" : "trained tokens", m.count, empty_cells);
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
  if (m.task == "sequence_classification" && !m.confusion.empty()) html += PerClassTable(m, in.label_names);
  if (in.answers) html += AnswersSection(*in.answers);
  html += "<h2>Curves</h2><div class='charts'>";
  const std::optional<double> best =
      in.best_step >= 0 ? std::optional<double>(static_cast<double>(in.best_step)) : std::nullopt;
  const std::string best_label = absl::StrCat("best step ", in.best_step);
  Chart loss_chart{"Loss", "optimizer step", "loss", {}, false, best, best_label, ""};
  // The raw per-step loss is noisy: faint, under its moving average.
  loss_chart.series.push_back({"train loss", loss, 0.25, 0});
  loss_chart.series.push_back({"train loss (smoothed)", Smoothed(loss, 0.9), 1, 0});
  loss_chart.series.push_back({"eval loss", eval_loss, 1, 1});
  html += LineChart(loss_chart);
  Chart metric_chart{"Evaluation metrics", "optimizer step", "value", {}, false, best, best_label, ""};
  for (const auto& [name, pts] : curves) metric_chart.series.push_back({name, pts, 1, -1});
  html += LineChart(metric_chart);
  if (!roc.empty()) {
    const auto auc = named.find(m.task == "multi_label_classification" ? "micro_roc_auc" : "roc_auc");
    Chart roc_chart{m.task == "multi_label_classification" ? "ROC curve (micro)" : "ROC curve",
                    "false positive rate",
                    "true positive rate",
                    {{"ROC", roc, 1, 0}},
                    true,
                    std::nullopt,
                    "",
                    auc == named.end() ? "" : absl::StrFormat("AUC = %.4f", auc->second)};
    html += LineChart(roc_chart);
  }
  if (m.task == "sequence_classification") html += ConfusionSvg(m, in.label_names);
  html += "</div>";
  html += DataSection(in.data_report_json);
  html += RunSection(in);
  html += "</body></html>\n";
  return html;
}

}  // namespace attune::worker::eval
