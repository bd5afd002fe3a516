// The Prometheus metrics registry, rendered in the text exposition format at /metrics.
//
// A thin layer over prometheus-cpp: one Metrics object per process, handed to components, which
// create their families once at construction and keep references to the children (lookups are
// not free; the increments are lock-free). Thread-safe.
//
//   auto& events = metrics.counter("hashinsight_relay_events_total", "Events published",
//                                  {{"topic", "events.miner"}});
//   events.Increment();
//
// Names follow hashinsight_<component>_<what>_<unit>.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hi {

using MetricLabels = std::map<std::string, std::string>;

class Metrics {
 public:
  Metrics();

  prometheus::Counter& counter(const std::string& name, const std::string& help,
                               const MetricLabels& labels = {});
  prometheus::Gauge& gauge(const std::string& name, const std::string& help,
                           const MetricLabels& labels = {});
  // Default buckets suit latencies from 100 µs to 10 s.
  prometheus::Histogram& histogram(const std::string& name, const std::string& help,
                                   const MetricLabels& labels = {},
                                   const std::vector<double>& buckets = latency_buckets());

  // The whole registry in the Prometheus text format (version 0.0.4).
  std::string render() const;

  static const std::vector<double>& latency_buckets();
  // Finer below 5 ms, for the hops of the pipeline whose targets are there.
  static const std::vector<double>& fine_latency_buckets();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
};

}  // namespace hi
