#include "common/prometheus/prometheus_metrics.h"

#include <map>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/strings/str_cat.h"

namespace attune::common {

struct PrometheusMetrics::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::mutex mu;
  std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges;
  std::map<std::string, prometheus::Family<prometheus::Counter>*> counters;
  std::map<std::string, prometheus::Family<prometheus::Histogram>*> histograms;
};

PrometheusMetrics::PrometheusMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrometheusMetrics::~PrometheusMetrics() = default;

absl::StatusOr<std::unique_ptr<PrometheusMetrics>> PrometheusMetrics::Serve(const std::string& listen) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  impl->exposer->RegisterCollectable(impl->registry);
  return std::unique_ptr<PrometheusMetrics>(new PrometheusMetrics(std::move(impl)));
}

void PrometheusMetrics::SetGauge(const std::string& name, const std::string& help, const Labels& labels,
                                 double value) {
  std::lock_guard<std::mutex> l(impl_->mu);
  auto& f = impl_->gauges[name];
  if (!f) f = &prometheus::BuildGauge().Name(name).Help(help).Register(*impl_->registry);
  f->Add(labels).Set(value);
}

void PrometheusMetrics::AddCounter(const std::string& name, const std::string& help, const Labels& labels,
                                   double delta) {
  std::lock_guard<std::mutex> l(impl_->mu);
  auto& f = impl_->counters[name];
  if (!f) f = &prometheus::BuildCounter().Name(name).Help(help).Register(*impl_->registry);
  f->Add(labels).Increment(delta);
}

void PrometheusMetrics::Observe(const std::string& name, const std::string& help, const Labels& labels,
                                const std::vector<double>& buckets, double value) {
  std::lock_guard<std::mutex> l(impl_->mu);
  auto& f = impl_->histograms[name];
  if (!f) f = &prometheus::BuildHistogram().Name(name).Help(help).Register(*impl_->registry);
  f->Add(labels, prometheus::Histogram::BucketBoundaries(buckets.begin(), buckets.end())).Observe(value);
}

}  // namespace attune::common
