#pragma once

// Metrics served by prometheus-cpp's exposer at http://LISTEN/metrics.

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace attune::common {

class PrometheusMetrics : public Metrics {
 public:
  // Starts serving on `listen` (HOST:PORT); kUnavailable if it cannot bind.
  static absl::StatusOr<std::unique_ptr<PrometheusMetrics>> Serve(const std::string& listen);
  ~PrometheusMetrics() override;
  void SetGauge(const std::string& name, const std::string& help, const Labels& labels, double value) override;
  void AddCounter(const std::string& name, const std::string& help, const Labels& labels, double delta) override;
  void Observe(const std::string& name, const std::string& help, const Labels& labels,
               const std::vector<double>& buckets, double value) override;

 private:
  struct Impl;
  explicit PrometheusMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace attune::common
