#pragma once

// Metrics kept in a prometheus-cpp registry and served at
// http://LISTEN/metrics in the text exposition format (0.0.4).
//
// The HTTP side is our own small server on one std::thread rather than
// prometheus-cpp's civetweb Exposer: civetweb creates its threads with a
// fixed 100 KiB stack, and in a process that loads libtorch, OpenBLAS and
// glog the static TLS alone is larger than that, so pthread_create fails with
// EINVAL and the Exposer reports "null context" (see docs/architecture.md).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace attune::common {

class PrometheusMetrics : public Metrics {
 public:
  // Starts serving on `listen` (HOST:PORT; port 0 picks a free one).
  // kUnavailable if it cannot bind, kInvalidArgument for a malformed address.
  static absl::StatusOr<std::unique_ptr<PrometheusMetrics>> Serve(const std::string& listen);
  // For a --metrics-listen flag: NullMetrics when `listen` is empty, else Serve(listen).
  static absl::StatusOr<std::unique_ptr<Metrics>> ServeIfSet(const std::string& listen);
  ~PrometheusMetrics() override;  // stops the server and joins its thread

  int port() const;  // the bound port
  // The exposition text a scrape would return now.
  std::string Render() const;

  void SetGauge(const std::string& name, const std::string& help, const Labels& labels, double value) override;
  void AddCounter(const std::string& name, const std::string& help, const Labels& labels, double delta) override;
  void Observe(const std::string& name, const std::string& help, const Labels& labels,
               const std::vector<double>& buckets, double value) override;
  void Forget(const Labels& match) override;

 private:
  struct Impl;
  explicit PrometheusMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace attune::common
