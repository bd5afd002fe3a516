// The Kafka side of the bus (bus/bus.h), on librdkafka's C API.
//
// KafkaProducer: an idempotent producer (enable.idempotence=true, acks=all) that never gives up
// on a message: message.timeout.ms=0, so while the brokers are unreachable messages wait in
// librdkafka's queue and in_flight() grows; the caller's in-flight cap turns that into
// back-pressure (the relay stops reading WAL). Keys are partitioned with murmur2_random, the
// partitioner of the Java client, so an aggregate lands on the partition a Java producer would
// choose. Delivery reports are collected by librdkafka's callback and handed to the
// DeliveryHandler from poll(), on the caller's thread, exactly once per sent message.
//
// KafkaConsumer: a member of a consumer group (cooperative-sticky assignment) with manual
// offset commits: commit() stores "highest offset + 1" per partition synchronously, and only
// for partitions this member still owns (after a rebalance the new owner continues from the
// last commit; consumers deduplicate by event id, so a re-delivery is harmless, a skipped
// message would not be).
//
// Both own their rd_kafka_t; neither is copyable or movable (librdkafka's callbacks hold a
// pointer to the object). librdkafka's own log lines go to the "bus" logger.
//
//   auto producer = bus::make_kafka_producer(options, [&](std::uint64_t tag, const Status& s) {
//     ...  // called from producer->poll()
//   });
//   (*producer)->send({"events.miner", "42", envelope_json, {{"id", id}}}, tag);
//   (*producer)->poll(std::chrono::milliseconds(100));
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bus/bus.h"
#include "core/log.h"
#include "core/result.h"
#include "core/unique_fd.h"

// librdkafka's handle types, so that rdkafka.h stays in the .cc files.
struct rd_kafka_s;
struct rd_kafka_topic_partition_list_s;

namespace hi::bus {

// librdkafka properties ("name", "value") applied after the defaults chosen here, e.g.
// {"session.timeout.ms", "6000"} for a test, or {"debug", "broker,msg"} when investigating.
using KafkaProperties = std::vector<std::pair<std::string, std::string>>;

// Creates a KafkaProducer connected to options.kafka_brokers. Fails (kInvalidArgument) only on
// a bad configuration; an unreachable cluster is not an error here (the producer retries).
Result<std::unique_ptr<Probe>> make_kafka_probe(const BusOptions& options);

Result<std::unique_ptr<Producer>> make_kafka_producer(const BusOptions& options,
                                                      DeliveryHandler on_delivery,
                                                      const KafkaProperties& overrides = {});

// Creates a KafkaConsumer that joins consumer.group and subscribes to consumer.topics.
Result<std::unique_ptr<Consumer>> make_kafka_consumer(const BusOptions& options,
                                                      const ConsumerOptions& consumer,
                                                      const KafkaProperties& overrides = {});

// Destroys an rd_kafka_t (nothing else: a producer flushes, a consumer closes, before this).
struct KafkaHandleDestroyer {
  void operator()(rd_kafka_s* rk) const noexcept;
};
using KafkaHandlePtr = std::unique_ptr<rd_kafka_s, KafkaHandleDestroyer>;

// Lets the .cc's C callbacks reach the private handlers below.
struct KafkaCallbacks;

class KafkaProducer final : public Producer {
 public:
  static Result<std::unique_ptr<KafkaProducer>> create(const BusOptions& options,
                                                       DeliveryHandler on_delivery,
                                                       const KafkaProperties& overrides = {});

  // Flushes for at most 10 s, then destroys the handle. Reports that arrive during the flush
  // are NOT passed to the handler (its owner is being torn down too): those messages count as
  // undelivered, and the relay re-sends them after a restart (consumers deduplicate by id).
  ~KafkaProducer() override;
  KafkaProducer(const KafkaProducer&) = delete;
  KafkaProducer& operator=(const KafkaProducer&) = delete;

  // Queues the message (key "" is sent as a null key; headers in order). Errors:
  // kInvalidArgument (too large, bad topic name), kUnavailable (librdkafka's queue stayed full
  // for 1 s), kFailedPrecondition (the producer hit a fatal error and must be recreated).
  Status send(Message message, std::uint64_t tag) override;

  // Dispatches delivery reports. A report's status is ok, or: kInvalidArgument (message too
  // large / invalid), kNotFound (unknown topic or partition), kUnavailable (the idempotent
  // producer hit a fatal error: the message's fate is unknown and the producer must be
  // recreated; the message says "fatal"), kInternal (anything else librdkafka gave up on).
  std::size_t poll(std::chrono::milliseconds timeout) override;

  std::size_t in_flight() const override { return static_cast<std::size_t>(sent_ - dispatched_); }

  // The read end of a non-blocking pipe that librdkafka writes to when its main queue (delivery
  // reports, errors) becomes non-empty (and send() when it served reports while waiting for
  // queue space). poll() drains it; a spurious wake-up makes poll() return 0.
  std::optional<Error> fatal_error() const override;
  int wake_fd() const override { return wake_read_.get(); }

  // Creates the topics missing from the cluster metadata with the Admin API (CreateTopics,
  // options.kafka_partitions / kafka_replication_factor; TOPIC_ALREADY_EXISTS is success).
  // When the cluster cannot create topics (no controller or no CreateTopics: librdkafka's mock
  // cluster) it fails with kNotFound naming the missing ones. kInvalidArgument when the broker
  // rejects the settings (e.g. replication factor > brokers); kUnavailable when the cluster
  // does not answer (metadata 5 s, CreateTopics 10 s).
  Status ensure_topics(const std::vector<std::string>& topics) override;

  // True after a transport failure while messages were in flight, or when all brokers are
  // down; cleared by the next successful delivery. Stays true after a fatal error. Safe to
  // call from any thread.
  bool degraded() const override { return degraded_.load(std::memory_order_relaxed); }
  std::string name() const override { return "kafka"; }

  // Raises a fatal error in librdkafka as the idempotent producer would (tests only).
  void inject_fatal_error_for_testing(const std::string& reason);

 private:
  friend struct KafkaCallbacks;

  KafkaProducer(const BusOptions& options, DeliveryHandler on_delivery, UniqueFd wake_read,
                UniqueFd wake_write);

  // Called by librdkafka from within rd_kafka_poll(), i.e. on the caller's thread.
  void on_delivery_report(std::uint64_t tag, int err, const char* topic);
  void on_error(int err, const char* reason);

  void drain_wake_fd();
  struct TopicState {
    std::vector<std::string> missing;  // of the topics asked about
    bool controller_known = false;     // the metadata names a controller among its brokers
  };
  Result<TopicState> topic_state(const std::vector<std::string>& topics);
  std::string fatal_message() const;

  BusOptions options_;
  DeliveryHandler on_delivery_;
  Logger log_{"bus"};
  UniqueFd wake_read_;
  UniqueFd wake_write_;
  // Reports recorded by the callback and not yet handed to on_delivery_.
  std::vector<std::pair<std::uint64_t, Status>> reports_;
  std::vector<std::pair<std::uint64_t, Status>> dispatching_;
  std::uint64_t sent_ = 0;
  std::uint64_t dispatched_ = 0;
  std::atomic<bool> degraded_{false};
  bool fatal_ = false;   // librdkafka raised a fatal error
  bool purged_ = false;  // ... and the outstanding messages were purged (reported as failed)
  KafkaHandlePtr rk_;    // last: destroyed first, while the members above still exist
};

class KafkaConsumer final : public Consumer {
 public:
  static Result<std::unique_ptr<KafkaConsumer>> create(const BusOptions& options,
                                                       const ConsumerOptions& consumer,
                                                       const KafkaProperties& overrides = {});

  // Leaves the group (rd_kafka_consumer_close: revokes the assignment, commits nothing), then
  // destroys the handle.
  ~KafkaConsumer() override;
  KafkaConsumer(const KafkaConsumer&) = delete;
  KafkaConsumer& operator=(const KafkaConsumer&) = delete;

  // Up to `max` messages; waits at most `timeout` for the first, then takes only what is
  // already fetched. Serves rebalances. Transient errors (broker down, ...) are logged and
  // waited out; a fatal consumer error is returned (kFailedPrecondition).
  Result<std::vector<Delivery>> poll(std::size_t max, std::chrono::milliseconds timeout) override;

  // Commits max(offset) + 1 per partition, synchronously. Deliveries of partitions this member
  // no longer owns are skipped (not an error; the new owner re-delivers from the last commit).
  // kUnavailable when the commit fails (retry with a later commit, which supersedes it).
  Status commit(const std::vector<Delivery>& deliveries) override;

  // Sum over every partition of the subscribed topics of (high watermark - committed offset),
  // committed defaulting to the low watermark. Blocking: a metadata, an offset and (for
  // partitions not assigned here) watermark requests; meant for status, not hot paths.
  Result<std::int64_t> lag() override;

  // Partitions currently assigned to this member.
  std::size_t assigned_partitions() const { return assigned_.size(); }

 private:
  friend struct KafkaCallbacks;

  explicit KafkaConsumer(const ConsumerOptions& consumer);

  // Called by librdkafka from within rd_kafka_consumer_poll() / close().
  void on_rebalance(int err, rd_kafka_topic_partition_list_s* partitions);
  void on_error(int err, const char* reason);

  ConsumerOptions options_;
  Logger log_{"bus"};
  std::set<std::pair<std::string, std::int32_t>> assigned_;  // (topic, partition)
  KafkaHandlePtr rk_;                                        // last: destroyed first
};

}  // namespace hi::bus
