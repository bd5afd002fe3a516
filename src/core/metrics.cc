#include "core/metrics.h"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace hi {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {}

// prometheus-cpp returns the existing family when the name and help match, so components may
// ask for the same family twice (e.g. one child per topic).
prometheus::Counter& Metrics::counter(const std::string& name, const std::string& help,
                                      const MetricLabels& labels) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels);
}

prometheus::Gauge& Metrics::gauge(const std::string& name, const std::string& help,
                                  const MetricLabels& labels) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels);
}

prometheus::Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                                          const MetricLabels& labels,
                                          const std::vector<double>& buckets) {
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Register(*registry_)
      .Add(labels, prometheus::Histogram::BucketBoundaries(buckets));
}

std::string Metrics::render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

const std::vector<double>& Metrics::latency_buckets() {
  static const std::vector<double> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
  return kBuckets;
}

const std::vector<double>& Metrics::fine_latency_buckets() {
  static const std::vector<double> kBuckets = {
      0.0001, 0.0002, 0.0003, 0.0004, 0.0005, 0.0006, 0.0008, 0.001, 0.0012,
      0.0015, 0.002,  0.0025, 0.003,  0.004,  0.005,  0.0075, 0.01,  0.015,
      0.025,  0.05,   0.1,    0.25,   0.5,    1,      2.5,    10};
  return kBuckets;
}

}  // namespace hi
