// Replays a trainer's event stream (the JSON lines `attune-worker train
// --events_fd` wrote during a real run) through the agent's metrics path and
// reports what it costs per training step, against the step time recorded in
// the same events.
//
// usage: attune-metrics-bench EVENTS.jsonl [--repeat N] [--scrape_interval_s S]

#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "common/prometheus/prometheus_metrics.h"
#include "worker/agent/trainer_metrics.h"

ABSL_FLAG(int, repeat, 200, "replays of the event stream");
ABSL_FLAG(double, scrape_interval_s, 15, "Prometheus scrape interval: one render per this much training time");

int main(int argc, char** argv) {
  auto args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << "usage: attune-metrics-bench EVENTS.jsonl [--repeat N]\n";
    return 2;
  }
  std::ifstream in(args[1]);
  std::vector<std::string> events;
  int64_t steps = 0;
  double step_seconds = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.value("type", "") == "progress") {
      steps += j.value("steps", 0);
      for (double s : j.value("step_seconds", std::vector<double>{})) step_seconds += s;
    }
    events.push_back(line);
  }
  if (steps == 0) {
    std::cerr << "no progress events with steps in " << args[1] << "\n";
    return 1;
  }
  auto m = attune::common::PrometheusMetrics::Serve("127.0.0.1:0");
  if (!m.ok()) {
    std::cerr << m.status() << "\n";
    return 1;
  }
  const attune::worker::agent::TrainerLabels who{"bench-job", 0, "gloo"};
  const int repeat = absl::GetFlag(FLAGS_repeat);
  using Clock = std::chrono::steady_clock;
  // Trainer side: serializing the events it writes.
  std::vector<nlohmann::json> parsed;
  for (const auto& e : events) parsed.push_back(nlohmann::json::parse(e));
  auto t0 = Clock::now();
  size_t bytes = 0;
  for (int r = 0; r < repeat; ++r) {
    for (const auto& j : parsed) bytes += j.dump().size();
  }
  const double write_s = std::chrono::duration<double>(Clock::now() - t0).count() / repeat;
  // Agent side: parsing and updating the series.
  t0 = Clock::now();
  for (int r = 0; r < repeat; ++r) {
    for (const auto& e : events) attune::worker::agent::ExportTrainerEvent(**m, who, e);
  }
  const double export_s = std::chrono::duration<double>(Clock::now() - t0).count() / repeat;
  // Scrapes: the run's training time / scrape interval renders of the exposition.
  const int renders = std::max(1, static_cast<int>(step_seconds / absl::GetFlag(FLAGS_scrape_interval_s)));
  t0 = Clock::now();
  size_t exposition = 0;
  for (int r = 0; r < repeat; ++r) {
    for (int k = 0; k < renders; ++k) exposition = (*m)->Render().size();
  }
  const double render_s = std::chrono::duration<double>(Clock::now() - t0).count() / repeat;

  const double per_step = (write_s + export_s + render_s) / static_cast<double>(steps);
  const double step = step_seconds / static_cast<double>(steps);
  std::cout << absl::StrFormat(
      "events: %d (%d steps, %.1f s of training, %zu bytes/replay); exposition %zu bytes, %d scrapes/replay\n",
      events.size(), steps, step_seconds, bytes / repeat, exposition, renders);
  std::cout << absl::StrFormat("%-34s%12s\n", "", "us/step");
  std::cout << absl::StrFormat("%-34s%12.2f\n", "trainer: write events", 1e6 * write_s / steps);
  std::cout << absl::StrFormat("%-34s%12.2f\n", "agent: parse + update series", 1e6 * export_s / steps);
  std::cout << absl::StrFormat("%-34s%12.2f\n", "agent: render scrapes", 1e6 * render_s / steps);
  std::cout << absl::StrFormat("%-34s%12.2f\n", "metrics, total", 1e6 * per_step);
  std::cout << absl::StrFormat("%-34s%12.0f\n", "training step (same run)", 1e6 * step);
  std::cout << absl::StrFormat("%-34s%11.4f%%   (goal < 1%%)\n", "overhead: metrics / step time", 100 * per_step / step);
  return 0;
}
