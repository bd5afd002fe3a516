// The event bus: one interface, two implementations (Redis Streams, Kafka).
//
// Producer: send() queues a message with a caller-chosen tag; the bus reports each message's
// fate exactly once through the DeliveryHandler given at construction, from within poll() on
// the caller's thread. A message is "delivered" only when the bus has made it durable (Kafka:
// acks=all; Redis: the XADD reply). A producer never drops a message silently: while the bus
// is unreachable it keeps retrying (the relay then stalls and stops reading WAL, which is what
// we want); only a permanent error (message too large, unknown topic) is reported as failed.
//
// Consumer: a member of a consumer group; poll() returns a batch of deliveries, and commit()
// acknowledges them (XACK / offset commit) after their effect is durable.
//
// Threading: a Producer or Consumer is used by one thread. wake_fd() is a descriptor that
// becomes readable when poll() has work, so an event loop can wait on it with poll(2) next to
// other sockets (nothing sleeps to poll).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"

namespace hi::bus {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Message {
  std::string topic;
  std::string key;
  std::string value;
  Headers headers;
};

// Called once per sent message: ok, or the permanent error.
using DeliveryHandler = std::function<void(std::uint64_t tag, const Status& status)>;

class Producer {
 public:
  virtual ~Producer() = default;

  // Queues a message. Fails only on a local, permanent problem (e.g. oversized message).
  virtual Status send(Message message, std::uint64_t tag) = 0;
  // Transmits what is queued and dispatches delivery reports. Waits at most `timeout` for at
  // least one report when messages are in flight. Returns the number of reports dispatched.
  virtual std::size_t poll(std::chrono::milliseconds timeout) = 0;
  // Messages sent and not yet reported.
  virtual std::size_t in_flight() const = 0;
  // Readable when poll() would dispatch something (-1: none; call poll() regularly).
  virtual int wake_fd() const = 0;
  // Creates the topics when missing (partitions from the configuration).
  virtual Status ensure_topics(const std::vector<std::string>& topics) = 0;
  // True while the last attempt to reach the bus failed (for status and logs).
  virtual bool degraded() const = 0;
  // Set once the producer itself failed for good (Kafka's fatal error of an idempotent
  // producer): it can deliver nothing more, even with nothing in flight; recreate it.
  virtual std::optional<Error> fatal_error() const { return std::nullopt; }
  virtual std::string name() const = 0;  // "redis" or "kafka"
};

struct Delivery {
  std::string topic;
  std::int32_t partition = 0;  // Kafka partition; 0 on Redis
  std::string position;        // Redis entry id ("1700000000000-0") or Kafka offset
  std::int64_t offset = -1;    // Kafka offset; -1 on Redis
  std::string key;
  std::string value;
  Headers headers;
  int delivery_count = 1;  // Redis: times delivered (XPENDING / XAUTOCLAIM); Kafka: 1
  // When the bus stored it (Unix ms): the time part of a Redis entry id, a Kafka message's
  // timestamp; 0 when unknown. For the bus -> consumer commit latency.
  std::int64_t appended_unix_ms = 0;
};

class Consumer {
 public:
  virtual ~Consumer() = default;
  // Up to `max` deliveries, waiting at most `timeout` for the first.
  virtual Result<std::vector<Delivery>> poll(std::size_t max,
                                             std::chrono::milliseconds timeout) = 0;
  // Acknowledges deliveries whose effects are durable (and any deferred by commit_later()).
  virtual Status commit(const std::vector<Delivery>& deliveries) = 0;
  // Acknowledges deliveries with the next poll() where the bus can (Redis Streams: XACK goes in
  // the same pipeline as XREADGROUP, one round trip where there were two; the bus Redis fsyncs
  // both at once), else at once (Kafka). An acknowledgement the next poll could not send is
  // sent with the one after; one never sent means a redelivery, which the inbox absorbs.
  virtual Status commit_later(const std::vector<Delivery>& deliveries) {
    return commit(deliveries);
  }
  // Messages in the subscribed topics not yet consumed by the group (for status).
  virtual Result<std::int64_t> lag() = 0;
};

enum class BusKind { kRedis, kKafka };

// "redis" / "kafka" (settings, logs, status hashes).
std::string_view to_string(BusKind kind);
// Parses "redis" or "kafka"; InvalidArgument otherwise.
Result<BusKind> parse_bus_kind(std::string_view text);

// Settings of both implementations, resolved from the configuration.
struct BusOptions {
  BusKind kind = BusKind::kRedis;
  std::string redis_url;
  std::string kafka_brokers;
  int kafka_partitions = 6;
  int kafka_replication_factor = 1;
  std::string kafka_compression = "lz4";
  int kafka_linger_ms = 0;
  std::string client_id = "hashinsight";
  // Extra librdkafka properties for the producer (KAFKA_PRODUCER_PROPERTIES), applied last.
  std::vector<std::pair<std::string, std::string>> kafka_producer_properties;
  // Extra librdkafka properties for consumers (KAFKA_CONSUMER_PROPERTIES), applied last.
  std::vector<std::pair<std::string, std::string>> kafka_consumer_properties;
};

struct ConsumerOptions {
  std::string group;
  std::string consumer_name;  // unique per process (Redis consumer name / Kafka client id)
  std::vector<std::string> topics;
  std::chrono::milliseconds claim_idle{30000};  // Redis: reclaim pending entries idle this long
  // Redis: set when the caller keeps its own positions, stored with what it applied (a sink
  // keeps them in its destination): topic -> the last position applied, "" or absent for none.
  // The consumer then reads with NOACK, so the bus writes no pending entry, XCLAIM or XACK to
  // its AOF per message, and resumes after these positions. One process reads the group at a
  // time (a lease of lease_ttl, renewed by every read); see RedisStreamsConsumer. Kafka keeps
  // its committed offsets and ignores this.
  std::optional<std::map<std::string, std::string>> resume_from;
  std::chrono::milliseconds lease_ttl{10000};
};

Result<std::unique_ptr<Producer>> make_producer(const BusOptions& options,
                                                DeliveryHandler on_delivery);
Result<std::unique_ptr<Consumer>> make_consumer(const BusOptions& options,
                                                const ConsumerOptions& consumer);

// Stream retention of the Redis bus: entries every consumer group has acknowledged are removed
// once older than `keep` (XTRIM MINID below the oldest entry any group still needs, so an unread
// entry is never dropped). Kafka keeps its own retention on the brokers: a no-op there.
// Uses its own connection: call it from any one thread (the relay's maintenance thread).
class Retention {
 public:
  virtual ~Retention() = default;
  // Applies the policy to `topics`; returns the number of entries removed.
  virtual Result<std::int64_t> apply(const std::vector<std::string>& topics,
                                     std::chrono::milliseconds keep) = 0;
};
Result<std::unique_ptr<Retention>> make_retention(const BusOptions& options);

// Whether the bus answers, for health checks: Redis a PING on the probe's own connection, Kafka
// a metadata request (no topics) through one long-lived client. Thread-safe.
class Probe {
 public:
  virtual ~Probe() = default;
  virtual Status ping(std::chrono::milliseconds timeout) = 0;
};
Result<std::unique_ptr<Probe>> make_probe(const BusOptions& options);

// Whether an event the bus acknowledged survives a crash of the machine: Redis with AOF and
// appendfsync always; Kafka with acks=all (the producer's setting; replication is the
// cluster's). `detail` says what was found ("appendonly=yes appendfsync=everysec").
struct Durability {
  bool durable = false;
  std::string detail;
};
Result<Durability> check_durability(const BusOptions& options);

// The platform's topics.
inline const std::vector<std::string>& standard_topics() {
  static const std::vector<std::string> kTopics = {"events.miner", "events.treasury", "events.ops",
                                                   "events.crm", "events.dlq"};
  return kTopics;
}

}  // namespace hi::bus
