#include "bus/kafka_mock.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace hi::bus {

static_assert(kafka_error::kNotLeaderOrFollower == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
static_assert(kafka_error::kRequestTimedOut == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
static_assert(kafka_error::kNotEnoughReplicas == RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
static_assert(kafka_error::kNotEnoughReplicasAfterAppend ==
              RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);

namespace {

// The hosting handle never talks to a cluster; its lines (e.g. "no bootstrap.servers") are noise.
void host_log_callback(const rd_kafka_t* rk, int /*level*/, const char* facility,
                       const char* line) {
  static const Logger kLog("bus");
  kLog.debug("librdkafka mock host",
             {{"client", rd_kafka_name(rk)}, {"facility", facility}, {"line", line}});
}

}  // namespace

void MockCluster::ClusterDestroyer::operator()(rd_kafka_mock_cluster_s* cluster) const noexcept {
  rd_kafka_mock_cluster_destroy(cluster);
}

MockCluster::MockCluster(int brokers, KafkaHandlePtr host)
    : brokers_(brokers), host_(std::move(host)) {}

Result<std::unique_ptr<MockCluster>> MockCluster::start(int brokers) {
  if (brokers < 1) return invalid_argument("kafka mock cluster: brokers must be >= 1");

  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  rd_kafka_conf_set(conf, "client.id", "hashinsight-mock-host", errstr, sizeof errstr);
  rd_kafka_conf_set_log_cb(conf, &host_log_callback);
  KafkaHandlePtr host(rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr));
  if (!host) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new owns the conf only when it succeeds
    return internal_error(std::string("kafka mock cluster host: ") + errstr);
  }

  std::unique_ptr<MockCluster> self(new MockCluster(brokers, std::move(host)));
  self->cluster_.reset(rd_kafka_mock_cluster_new(self->host_.get(), brokers));
  if (!self->cluster_) return internal_error("kafka mock cluster: could not start");
  self->bootstrap_ = rd_kafka_mock_cluster_bootstraps(self->cluster_.get());
  self->log_.warn("kafka mock cluster started (in memory, not durable)",
                  {{"brokers", brokers}, {"bootstrap", self->bootstrap_}});
  return self;
}

Result<std::unique_ptr<MockCluster>> MockCluster::start_with_topics(
    int brokers, const std::vector<std::string>& topics, int partitions, int replication) {
  auto cluster = start(brokers);
  if (!cluster) return cluster.error();
  for (const auto& t : topics) {
    auto s = (*cluster)->create_topic(t, partitions, std::min(brokers, replication));
    if (!s && s.error().code != Code::kAlreadyExists) return s.error();
  }
  return cluster;
}

MockCluster::~MockCluster() {
  cluster_.reset();
  host_.reset();
}

Status MockCluster::create_topic(const std::string& topic, int partitions, int replication) {
  if (partitions < 1 || replication < 1 || replication > brokers_) {
    return invalid_argument("kafka mock create topic " + topic +
                            ": partitions=" + std::to_string(partitions) +
                            " replication=" + std::to_string(replication) +
                            " (brokers=" + std::to_string(brokers_) + ")");
  }
  const rd_kafka_resp_err_t err =
      rd_kafka_mock_topic_create(cluster_.get(), topic.c_str(), partitions, replication);
  if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    return Error{Code::kAlreadyExists, "kafka mock create topic " + topic + ": already exists"};
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return invalid_argument("kafka mock create topic " + topic + ": " + rd_kafka_err2str(err));
  }
  log_.info("kafka mock topic created",
            {{"topic", topic}, {"partitions", partitions}, {"replication", replication}});
  return {};
}

template <typename Fn>
void MockCluster::for_brokers(int broker_id, const char* what, Fn fn) {
  // Broker by broker: not every librdkafka version accepts -1 for "all".
  const int first = broker_id == kAllBrokers ? 1 : broker_id;
  const int last = broker_id == kAllBrokers ? brokers_ : broker_id;
  for (int id = first; id <= last; ++id) {
    const rd_kafka_resp_err_t err = fn(id);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      log_.error("kafka mock fault injection failed",
                 {{"what", what}, {"broker", id}, {"error", rd_kafka_err2str(err)}});
    }
  }
}

void MockCluster::set_broker_down(int broker_id) {
  for_brokers(broker_id, "broker down",
              [&](int id) { return rd_kafka_mock_broker_set_down(cluster_.get(), id); });
  log_.info("kafka mock broker down", {{"broker", broker_id}});
}

void MockCluster::set_broker_up(int broker_id) {
  for_brokers(broker_id, "broker up",
              [&](int id) { return rd_kafka_mock_broker_set_up(cluster_.get(), id); });
  log_.info("kafka mock broker up", {{"broker", broker_id}});
}

void MockCluster::set_broker_rtt(int broker_id, std::chrono::milliseconds rtt) {
  for_brokers(broker_id, "broker rtt", [&](int id) {
    return rd_kafka_mock_broker_set_rtt(cluster_.get(), id, static_cast<int>(rtt.count()));
  });
}

void MockCluster::push_produce_errors(int count, int kafka_error_code) {
  push_request_errors(kafka_api::kProduce, count, kafka_error_code);
}

void MockCluster::push_request_errors(int api_key, int count, int kafka_error_code) {
  if (count <= 0) return;
  const std::vector<rd_kafka_resp_err_t> errors(static_cast<std::size_t>(count),
                                                static_cast<rd_kafka_resp_err_t>(kafka_error_code));
  rd_kafka_mock_push_request_errors_array(cluster_.get(), static_cast<std::int16_t>(api_key),
                                          errors.size(), errors.data());
}

void MockCluster::clear_request_errors(int api_key) {
  rd_kafka_mock_clear_request_errors(cluster_.get(), static_cast<std::int16_t>(api_key));
}

}  // namespace hi::bus
