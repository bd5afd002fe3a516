// The Kafka bus (bus/kafka.h) against librdkafka's mock cluster over loopback TCP.
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bus/kafka.h"
#include "bus/kafka_mock.h"

namespace hi::bus {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 6;

// Kafka's murmur2 (org.apache.kafka.common.utils.Utils#murmur2), which the Java client's default
// partitioner uses for keyed records: partition = toPositive(murmur2(key)) % numPartitions.
std::int32_t murmur2(std::string_view data) {
  const std::uint32_t seed = 0x9747b28c;
  const std::uint32_t m = 0x5bd1e995;
  const int r = 24;
  const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
  const std::size_t length = data.size();
  std::uint32_t h = seed ^ static_cast<std::uint32_t>(length);
  for (std::size_t i = 0; i + 4 <= length; i += 4) {
    std::uint32_t k = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) |
                      (static_cast<std::uint32_t>(bytes[i + 3]) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const std::size_t tail = length & ~std::size_t{3};
  switch (length % 4) {
    case 3:
      h ^= static_cast<std::uint32_t>(bytes[tail + 2]) << 16;
      [[fallthrough]];
    case 2:
      h ^= static_cast<std::uint32_t>(bytes[tail + 1]) << 8;
      [[fallthrough]];
    case 1:
      h ^= bytes[tail];
      h *= m;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return static_cast<std::int32_t>(h);
}

std::int32_t java_partition(std::string_view key, int partitions) {
  return (murmur2(key) & 0x7fffffff) % partitions;
}

TEST(KafkaMurmur2, MatchesJavaTestVectors) {
  // From Kafka's UtilsTest#testMurmur2.
  EXPECT_EQ(murmur2("21"), -973932308);
  EXPECT_EQ(murmur2("foobar"), -790332482);
  EXPECT_EQ(murmur2("a-little-bit-long-string"), -985981536);
  EXPECT_EQ(murmur2("a-little-bit-longer-string"), -1486304829);
  EXPECT_EQ(murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
  EXPECT_EQ(murmur2("abc"), 479470107);
}

std::string key_of(std::uint64_t i) { return "user-" + std::to_string(i % 50); }

Message event(const std::string& topic, std::uint64_t i) {
  return Message{topic,
                 key_of(i),
                 R"({"seq":)" + std::to_string(i) + R"(,"payload":{"hashrate":"110e12"}})",
                 {{"id", "evt-" + std::to_string(i)},
                  {"kind", "miner.added"},
                  {"tenant_id", std::to_string(i % 7)}}};
}

// The tag a message was sent with, from its "id" header.
std::uint64_t tag_of(const Delivery& d) {
  for (const auto& [name, value] : d.headers) {
    if (name == "id") return std::stoull(value.substr(4));
  }
  ADD_FAILURE() << "delivery without id header at " << d.topic << "/" << d.partition << "@"
                << d.offset;
  return ~std::uint64_t{0};
}

// Delivery reports, by tag.
struct Reports {
  std::map<std::uint64_t, int> count;
  std::vector<std::pair<std::uint64_t, Error>> failures;

  DeliveryHandler handler() {
    return [this](std::uint64_t tag, const Status& status) {
      ++count[tag];
      if (!status) failures.emplace_back(tag, status.error());
    };
  }
};

class KafkaBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = MockCluster::start(3);
    ASSERT_TRUE(cluster) << cluster.error().to_string();
    cluster_ = std::move(*cluster);
    options_.kind = bus::BusKind::kKafka;
    options_.kafka_brokers = cluster_->bootstrap();
    options_.kafka_partitions = kPartitions;
    options_.kafka_replication_factor = 3;
  }

  std::string topic(const std::string& name) {
    Status s = cluster_->create_topic(name, kPartitions, 3);
    EXPECT_TRUE(s) << s.error().to_string();
    return name;
  }

  std::unique_ptr<KafkaProducer> producer(Reports& reports, const KafkaProperties& overrides = {}) {
    auto p = KafkaProducer::create(options_, reports.handler(), overrides);
    EXPECT_TRUE(p) << p.error().to_string();
    return p ? std::move(*p) : nullptr;
  }

  std::unique_ptr<KafkaConsumer> consumer(const std::string& group, const std::string& name,
                                          const std::vector<std::string>& topics) {
    ConsumerOptions c;
    c.group = group;
    c.consumer_name = name;
    c.topics = topics;
    // Quicker rebalances than the defaults (1 s heartbeats, 10 s sessions): shorter tests.
    auto k = KafkaConsumer::create(
        options_, c, {{"heartbeat.interval.ms", "300"}, {"session.timeout.ms", "3000"}});
    EXPECT_TRUE(k) << k.error().to_string();
    return k ? std::move(*k) : nullptr;
  }

  // Polls until nothing is in flight or the deadline passes.
  static void drain(Producer& producer, std::chrono::seconds limit = 20s) {
    const auto deadline = Clock::now() + limit;
    while (producer.in_flight() > 0 && Clock::now() < deadline) producer.poll(100ms);
  }

  // Reads until `want` deliveries arrived (then `extra` longer, to catch extras) or the limit.
  static std::vector<Delivery> consume(Consumer& consumer, std::size_t want,
                                       std::chrono::milliseconds extra = 0ms,
                                       std::chrono::seconds limit = 20s) {
    std::vector<Delivery> out;
    const auto deadline = Clock::now() + limit;
    while (out.size() < want && Clock::now() < deadline) {
      auto batch = consumer.poll(1000, 100ms);
      EXPECT_TRUE(batch) << batch.error().to_string();
      if (batch) out.insert(out.end(), batch->begin(), batch->end());
    }
    const auto quiet_until = Clock::now() + extra;
    while (Clock::now() < quiet_until) {
      auto batch = consumer.poll(1000, 50ms);
      if (batch) out.insert(out.end(), batch->begin(), batch->end());
    }
    return out;
  }

  std::unique_ptr<MockCluster> cluster_;
  BusOptions options_;
};

TEST_F(KafkaBusTest, DeliversEveryMessageOnceInKeyOrderOnJavaPartitions) {
  const std::string t = topic("events.miner");
  Reports reports;
  auto p = producer(reports);
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->ensure_topics({t}));

  constexpr std::uint64_t kCount = 10000;
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < kCount; ++i) {
    ASSERT_TRUE(p->send(event(t, i), i));
    if (i % 500 == 0) p->poll(0ms);
  }
  drain(*p);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  RecordProperty("producer_msgs_per_s", static_cast<int>(kCount / seconds));
  std::printf("[          ] produced %llu messages with acks in %.3f s (%.0f msg/s)\n",
              static_cast<unsigned long long>(kCount), seconds, kCount / seconds);

  EXPECT_EQ(p->in_flight(), 0u);
  EXPECT_FALSE(p->degraded());
  ASSERT_EQ(reports.count.size(), kCount);
  for (const auto& [tag, n] : reports.count) ASSERT_EQ(n, 1) << "tag " << tag;
  ASSERT_TRUE(reports.failures.empty()) << reports.failures.front().second.to_string();

  auto c = consumer("portfolio", "portfolio-1", {t});
  ASSERT_TRUE(c);
  const std::vector<Delivery> got = consume(*c, kCount, 300ms);
  ASSERT_EQ(got.size(), kCount);

  std::map<std::string, std::vector<std::uint64_t>> order;  // key -> tags in consumed order
  std::map<std::string, std::set<std::int32_t>> partitions;
  std::set<std::uint64_t> seen;
  for (const Delivery& d : got) {
    const std::uint64_t i = tag_of(d);
    ASSERT_TRUE(seen.insert(i).second) << "duplicate " << i;
    const Message sent = event(t, i);
    EXPECT_EQ(d.topic, t);
    EXPECT_EQ(d.key, sent.key);
    EXPECT_EQ(d.value, sent.value);
    EXPECT_EQ(d.headers, sent.headers);
    EXPECT_EQ(d.position, std::to_string(d.offset));
    EXPECT_EQ(d.delivery_count, 1);
    order[d.key].push_back(i);
    partitions[d.key].insert(d.partition);
  }
  ASSERT_EQ(order.size(), 50u);
  std::set<std::int32_t> used;
  for (const auto& [key, tags] : order) {
    EXPECT_TRUE(std::is_sorted(tags.begin(), tags.end())) << key << " out of order";
    ASSERT_EQ(partitions[key].size(), 1u) << key << " on several partitions";
    EXPECT_EQ(*partitions[key].begin(), java_partition(key, kPartitions)) << key;
    used.insert(*partitions[key].begin());
  }
  EXPECT_EQ(used.size(), static_cast<std::size_t>(kPartitions));

  ASSERT_TRUE(c->commit(got));
  auto lag = c->lag();
  ASSERT_TRUE(lag) << lag.error().to_string();
  EXPECT_EQ(*lag, 0);
}

TEST_F(KafkaBusTest, BrokerOutageStallsDeliveryWithoutFailingIt) {
  const std::string t = topic("events.treasury");
  Reports reports;
  // One request in flight per broker: librdkafka 2.0's mock cluster, when an injected produce
  // error hits one of several pipelined idempotent batches, can acknowledge a retried batch
  // without storing it (seen as 1-4 missing messages in about half the runs). Real brokers do
  // not; the relay's own tests keep the default pipelining against brokers that go down.
  auto p = producer(reports, {{"max.in.flight.requests.per.connection", "1"}});
  ASSERT_TRUE(p);

  std::uint64_t next = 0;
  for (; next < 500; ++next) ASSERT_TRUE(p->send(event(t, next), next));
  drain(*p);
  ASSERT_EQ(reports.count.size(), 500u);

  // All brokers down for ~3 s while the relay keeps sending.
  cluster_->set_broker_down(MockCluster::kAllBrokers);
  bool degraded = false;
  const auto outage_end = Clock::now() + 3s;
  while (Clock::now() < outage_end) {
    for (int i = 0; i < 50; ++i, ++next) ASSERT_TRUE(p->send(event(t, next), next));
    p->poll(50ms);
    degraded = degraded || p->degraded();
  }
  EXPECT_TRUE(degraded);
  EXPECT_TRUE(reports.failures.empty()) << reports.failures.front().second.to_string();
  EXPECT_GT(p->in_flight(), 0u);
  const std::size_t reported_during_outage = reports.count.size();
  EXPECT_LT(reported_during_outage, next);

  cluster_->set_broker_up(MockCluster::kAllBrokers);
  drain(*p, 30s);
  EXPECT_EQ(p->in_flight(), 0u);
  EXPECT_FALSE(p->degraded());

  // Retriable produce errors are retried, not reported.
  cluster_->push_produce_errors(5, kafka_error::kNotEnoughReplicas);
  for (int i = 0; i < 200; ++i, ++next) ASSERT_TRUE(p->send(event(t, next), next));
  drain(*p);

  ASSERT_EQ(reports.count.size(), next);
  for (const auto& [tag, n] : reports.count) ASSERT_EQ(n, 1) << "tag " << tag;
  ASSERT_TRUE(reports.failures.empty()) << reports.failures.front().second.to_string();

  // Each delivered message is in the topic exactly once (the idempotent producer deduplicated
  // the retries).
  auto c = consumer("treasury", "treasury-1", {t});
  ASSERT_TRUE(c);
  const std::vector<Delivery> got = consume(*c, next, 300ms);
  std::map<std::uint64_t, int> times;
  for (const Delivery& d : got) ++times[tag_of(d)];
  EXPECT_EQ(got.size(), next);
  if (times.size() != next) {
    std::string missing;
    for (std::uint64_t i = 0; i < next; ++i) {
      if (!times.contains(i))
        missing +=
            " " + std::to_string(i) + "@p" + std::to_string(java_partition(key_of(i), kPartitions));
    }
    auto lag = c->lag();
    ADD_FAILURE() << "missing" << missing.substr(0, 2000) << "; lag "
                  << (lag ? std::to_string(*lag) : lag.error().to_string());
  }
  ASSERT_EQ(times.size(), next);
  for (const auto& [tag, n] : times) ASSERT_EQ(n, 1) << "tag " << tag;
}

TEST_F(KafkaBusTest, GroupMembersSharePartitionsAndCommitsSurvive) {
  const std::string t = topic("events.crm");
  auto c1 = consumer("crm", "crm-1", {t});
  auto c2 = consumer("crm", "crm-2", {t});
  ASSERT_TRUE(c1 && c2);
  const auto deadline = Clock::now() + 20s;
  while (Clock::now() < deadline &&
         !(c1->assigned_partitions() > 0 && c2->assigned_partitions() > 0 &&
           c1->assigned_partitions() + c2->assigned_partitions() == kPartitions)) {
    ASSERT_TRUE(c1->poll(100, 50ms));
    ASSERT_TRUE(c2->poll(100, 50ms));
  }
  ASSERT_GT(c1->assigned_partitions(), 0u);
  ASSERT_GT(c2->assigned_partitions(), 0u);
  ASSERT_EQ(c1->assigned_partitions() + c2->assigned_partitions(), kPartitions);

  Reports reports;
  auto p = producer(reports);
  ASSERT_TRUE(p);
  constexpr std::uint64_t kFirst = 600;
  for (std::uint64_t i = 0; i < kFirst; ++i) ASSERT_TRUE(p->send(event(t, i), i));
  drain(*p);
  ASSERT_TRUE(reports.failures.empty());

  std::vector<Delivery> got1;
  std::vector<Delivery> got2;
  const auto read_deadline = Clock::now() + 20s;
  while (got1.size() + got2.size() < kFirst && Clock::now() < read_deadline) {
    auto b1 = c1->poll(1000, 50ms);
    auto b2 = c2->poll(1000, 50ms);
    ASSERT_TRUE(b1 && b2);
    got1.insert(got1.end(), b1->begin(), b1->end());
    got2.insert(got2.end(), b2->begin(), b2->end());
  }
  ASSERT_EQ(got1.size() + got2.size(), kFirst);
  EXPECT_GT(got1.size(), 0u);
  EXPECT_GT(got2.size(), 0u);
  std::set<std::int32_t> parts1;
  std::set<std::int32_t> parts2;
  for (const Delivery& d : got1) parts1.insert(d.partition);
  for (const Delivery& d : got2) parts2.insert(d.partition);
  for (std::int32_t part : parts1) EXPECT_FALSE(parts2.contains(part)) << "shared " << part;

  ASSERT_TRUE(c1->commit(got1));
  ASSERT_TRUE(c2->commit(got2));
  c1.reset();
  c2.reset();

  constexpr std::uint64_t kSecond = 300;
  for (std::uint64_t i = kFirst; i < kFirst + kSecond; ++i) ASSERT_TRUE(p->send(event(t, i), i));
  drain(*p);
  ASSERT_EQ(reports.count.size(), kFirst + kSecond);

  auto c3 = consumer("crm", "crm-3", {t});
  ASSERT_TRUE(c3);
  auto lag = c3->lag();
  ASSERT_TRUE(lag) << lag.error().to_string();
  EXPECT_EQ(*lag, static_cast<std::int64_t>(kSecond));

  const std::vector<Delivery> got3 = consume(*c3, kSecond, 500ms);
  ASSERT_EQ(got3.size(), kSecond);
  for (const Delivery& d : got3) EXPECT_GE(tag_of(d), kFirst);
  ASSERT_TRUE(c3->commit(got3));
  lag = c3->lag();
  ASSERT_TRUE(lag) << lag.error().to_string();
  EXPECT_EQ(*lag, 0);
}

TEST_F(KafkaBusTest, WakeFdBecomesReadableWhenDeliveriesArePending) {
  const std::string t = topic("events.ops");
  Reports reports;
  auto p = producer(reports);
  ASSERT_TRUE(p);
  ASSERT_GE(p->wake_fd(), 0);
  p->poll(0ms);

  for (std::uint64_t round = 0; round < 3; ++round) {
    ASSERT_TRUE(p->send(event(t, round), round));
    // An event loop: wait on the descriptor, then poll without blocking.
    const auto deadline = Clock::now() + 10s;
    while (p->in_flight() > 0 && Clock::now() < deadline) {
      pollfd pfd{p->wake_fd(), POLLIN, 0};
      ASSERT_GT(::poll(&pfd, 1, 5000), 0) << "wake fd not readable in round " << round;
      p->poll(0ms);
    }
    EXPECT_EQ(p->in_flight(), 0u);
  }
  EXPECT_EQ(reports.count.size(), 3u);
  EXPECT_TRUE(reports.failures.empty());
}

// KAFKA_CONSUMER_PROPERTIES reach librdkafka through make_consumer(): an unknown one is
// refused by name, a known one is taken.
TEST_F(KafkaBusTest, ConsumerPropertiesFromTheSettingsAreApplied) {
  ConsumerOptions c;
  c.group = "props-group";
  c.topics = {topic("events.ops")};
  BusOptions bad = options_;
  bad.kind = BusKind::kKafka;
  bad.kafka_consumer_properties = {{"no.such.property", "1"}};
  auto refused = make_consumer(bad, c);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("no.such.property"), std::string::npos)
      << refused.error().message;
  BusOptions good = options_;
  good.kind = BusKind::kKafka;
  good.kafka_consumer_properties = {{"fetch.wait.max.ms", "5"}};
  auto taken = make_consumer(good, c);
  EXPECT_TRUE(taken) << taken.error().to_string();
}

TEST_F(KafkaBusTest, FatalErrorFailsOutstandingMessages) {
  const std::string t = topic("events.dlq");
  Reports reports;
  auto p = producer(reports);
  ASSERT_TRUE(p);
  cluster_->set_broker_down(MockCluster::kAllBrokers);
  for (std::uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(p->send(event(t, i), i));
  p->poll(200ms);
  EXPECT_EQ(p->in_flight(), 100u);

  p->inject_fatal_error_for_testing("test: producer fenced");
  const auto deadline = Clock::now() + 10s;
  while (p->in_flight() > 0 && Clock::now() < deadline) p->poll(100ms);
  EXPECT_EQ(p->in_flight(), 0u);
  ASSERT_EQ(reports.failures.size(), 100u);
  for (const auto& [tag, error] : reports.failures) {
    EXPECT_EQ(error.code, Code::kUnavailable);
    EXPECT_NE(error.message.find("fatal"), std::string::npos) << error.message;
  }
  EXPECT_TRUE(p->degraded());
  Status s = p->send(event(t, 100), 100);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Code::kFailedPrecondition);
  cluster_->set_broker_up(MockCluster::kAllBrokers);
}

TEST_F(KafkaBusTest, EnsureTopicsChecksTopicsTheMockCannotCreate) {
  topic("events.miner");
  Reports reports;
  auto p = producer(reports);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->ensure_topics({"events.miner"}));
  Status s = p->ensure_topics({"events.miner", "events.nope"});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Code::kNotFound);
  EXPECT_NE(s.error().message.find("events.nope"), std::string::npos) << s.error().message;
}

}  // namespace
}  // namespace hi::bus
