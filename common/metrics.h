#pragma once

// The metrics interface. Components take a Metrics& (injected by the
// composition root); only common/prometheus/ touches prometheus-cpp.
// Names follow attune_<component>_<what>_<unit>. Thread-safe.

#include <map>
#include <string>
#include <vector>

namespace attune::common {

using Labels = std::map<std::string, std::string>;

class Metrics {
 public:
  virtual ~Metrics() = default;
  virtual void SetGauge(const std::string& name, const std::string& help, const Labels& labels, double value) = 0;
  virtual void AddCounter(const std::string& name, const std::string& help, const Labels& labels, double delta) = 0;
  virtual void Observe(const std::string& name, const std::string& help, const Labels& labels,
                       const std::vector<double>& buckets, double value) = 0;
  // Removes every series whose labels include all of `match` (for example
  // one job's ranks after it ended), so that cardinality stays bounded.
  virtual void Forget(const Labels& match) = 0;
};

// Discards everything: for components run without a metrics endpoint.
class NullMetrics : public Metrics {
 public:
  void SetGauge(const std::string&, const std::string&, const Labels&, double) override {}
  void AddCounter(const std::string&, const std::string&, const Labels&, double) override {}
  void Observe(const std::string&, const std::string&, const Labels&, const std::vector<double>&, double) override {}
  void Forget(const Labels&) override {}
};

}  // namespace attune::common
