#include "core/metrics.h"

#include <gtest/gtest.h>

namespace hi {
namespace {

TEST(Metrics, RendersCounterGaugeAndHistogramInPrometheusTextFormat) {
  Metrics m;
  m.counter("hashinsight_relay_events_total", "Events published", {{"topic", "events.miner"}})
      .Increment(3);
  m.gauge("hashinsight_relay_slot_lag_bytes", "WAL retained by the slot").Set(4096);
  auto& h = m.histogram("hashinsight_relay_commit_to_ack_seconds", "Commit to bus ack", {},
                        {0.001, 0.01});
  h.Observe(0.0005);
  h.Observe(0.005);
  h.Observe(1.0);
  const std::string text = m.render();
  EXPECT_NE(text.find("# TYPE hashinsight_relay_events_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("hashinsight_relay_events_total{topic=\"events.miner\"} 3"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE hashinsight_relay_slot_lag_bytes gauge"), std::string::npos);
  EXPECT_NE(text.find("hashinsight_relay_slot_lag_bytes 4096"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE hashinsight_relay_commit_to_ack_seconds histogram"),
            std::string::npos);
  // Buckets are cumulative: 1 at or below 1 ms, 2 at or below 10 ms, 3 in +Inf.
  EXPECT_NE(text.find("hashinsight_relay_commit_to_ack_seconds_bucket{le=\"0.001\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("hashinsight_relay_commit_to_ack_seconds_bucket{le=\"0.01\"} 2"),
            std::string::npos);
  EXPECT_NE(text.find("hashinsight_relay_commit_to_ack_seconds_bucket{le=\"+Inf\"} 3"),
            std::string::npos);
  EXPECT_NE(text.find("hashinsight_relay_commit_to_ack_seconds_count 3"), std::string::npos);
}

TEST(Metrics, SameFamilyTwiceSharesTheChild) {
  Metrics m;
  m.counter("hashinsight_x_total", "x", {{"topic", "a"}}).Increment();
  m.counter("hashinsight_x_total", "x", {{"topic", "a"}}).Increment();
  m.counter("hashinsight_x_total", "x", {{"topic", "b"}}).Increment();
  const std::string text = m.render();
  EXPECT_NE(text.find("hashinsight_x_total{topic=\"a\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("hashinsight_x_total{topic=\"b\"} 1"), std::string::npos) << text;
}

}  // namespace
}  // namespace hi
