// MockCluster: librdkafka's mock Kafka cluster, hosted in this process.
//
// The mock speaks the real Kafka protocol on loopback TCP ports, so producers and consumers in
// this or other processes use it through bootstrap() like a real cluster: produce (idempotent
// included), consumer groups, offset commits. It is in memory and not durable: for tests and
// `hashinsight up --bus kafka` demos only.
//
// It has no CreateTopics: topics are made with create_topic() here, in the hosting process,
// which is also where faults are injected (brokers down, produce errors, latency).
//
//   auto cluster = bus::MockCluster::start(3);
//   (*cluster)->create_topic("events.miner", 6, 3);
//   options.kafka_brokers = (*cluster)->bootstrap();
//   (*cluster)->set_broker_down(bus::MockCluster::kAllBrokers);
//
// Lifecycle: destroying the MockCluster closes its listeners; clients still connected see the
// brokers go down. Thread-safety: the methods may be called from any thread (each is a request
// to the mock's own thread).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "bus/kafka.h"
#include "core/log.h"
#include "core/result.h"

struct rd_kafka_mock_cluster_s;

namespace hi::bus {

// Kafka protocol error codes for fault injection (a few that producers retry).
namespace kafka_error {
inline constexpr int kNotLeaderOrFollower = 6;
inline constexpr int kRequestTimedOut = 7;
inline constexpr int kNotEnoughReplicas = 19;
inline constexpr int kNotEnoughReplicasAfterAppend = 20;
}  // namespace kafka_error

// Kafka protocol API keys for push_request_errors().
namespace kafka_api {
inline constexpr int kProduce = 0;
inline constexpr int kFetch = 1;
inline constexpr int kMetadata = 3;
inline constexpr int kOffsetCommit = 8;
inline constexpr int kJoinGroup = 11;
inline constexpr int kHeartbeat = 12;
inline constexpr int kSyncGroup = 14;
}  // namespace kafka_api

class MockCluster {
 public:
  static constexpr int kAllBrokers = -1;

  // Starts `brokers` brokers (ids 1..brokers) listening on free loopback ports.
  static Result<std::unique_ptr<MockCluster>> start(int brokers = 3);
  // Starts the cluster and creates `topics` (the mock has no CreateTopics: whoever hosts it
  // creates them), each with `partitions` partitions replicated on min(brokers, replication).
  static Result<std::unique_ptr<MockCluster>> start_with_topics(
      int brokers, const std::vector<std::string>& topics, int partitions, int replication);

  ~MockCluster();
  MockCluster(const MockCluster&) = delete;
  MockCluster& operator=(const MockCluster&) = delete;

  // "127.0.0.1:port,..." for bootstrap.servers / KAFKA_BROKERS.
  std::string bootstrap() const { return bootstrap_; }
  int brokers() const { return brokers_; }

  // Creates a topic; kAlreadyExists when it exists, kInvalidArgument on bad counts.
  Status create_topic(const std::string& topic, int partitions, int replication);

  // Disconnects the broker (or kAllBrokers) and refuses new connections / accepts them again.
  // Leadership does not move. Unknown ids are logged and ignored.
  void set_broker_down(int broker_id);
  void set_broker_up(int broker_id);
  // Delays every response of the broker (or kAllBrokers) by `rtt`.
  void set_broker_rtt(int broker_id, std::chrono::milliseconds rtt);

  // The next `count` Produce requests (to any broker) fail with Kafka error `kafka_error_code`
  // (see kafka_error above).
  void push_produce_errors(int count, int kafka_error_code);
  // The same for any API (see kafka_api above); clear_request_errors() drops what is pending.
  void push_request_errors(int api_key, int count, int kafka_error_code);
  void clear_request_errors(int api_key);

 private:
  struct ClusterDestroyer {
    void operator()(rd_kafka_mock_cluster_s* cluster) const noexcept;
  };

  MockCluster(int brokers, KafkaHandlePtr host);
  // Applies `fn(broker)` to one broker or to all of them, logging failures.
  template <typename Fn>
  void for_brokers(int broker_id, const char* what, Fn fn);

  Logger log_{"bus"};
  int brokers_;
  std::string bootstrap_;
  KafkaHandlePtr host_;  // the producer handle the mock needs; outlives the cluster
  std::unique_ptr<rd_kafka_mock_cluster_s, ClusterDestroyer> cluster_;
};

}  // namespace hi::bus
