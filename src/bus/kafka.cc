#include "bus/kafka.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "core/failpoint.h"

namespace hi::bus {

namespace {

using Clock = std::chrono::steady_clock;

// The tag travels as the message opaque.
static_assert(sizeof(void*) >= sizeof(std::uint64_t), "tags are carried in a pointer");

constexpr int kFlushTimeoutMs = 10000;
constexpr int kAdminTimeoutMs = 10000;
constexpr int kMetadataTimeoutMs = 5000;
constexpr int kOffsetsTimeoutMs = 5000;

struct ConfDestroyer {
  void operator()(rd_kafka_conf_t* conf) const noexcept { rd_kafka_conf_destroy(conf); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDestroyer>;

struct QueueDestroyer {
  void operator()(rd_kafka_queue_t* queue) const noexcept { rd_kafka_queue_destroy(queue); }
};
using QueuePtr = std::unique_ptr<rd_kafka_queue_t, QueueDestroyer>;

struct EventDestroyer {
  void operator()(rd_kafka_event_t* event) const noexcept { rd_kafka_event_destroy(event); }
};
using EventPtr = std::unique_ptr<rd_kafka_event_t, EventDestroyer>;

struct NewTopicDestroyer {
  void operator()(rd_kafka_NewTopic_t* topic) const noexcept { rd_kafka_NewTopic_destroy(topic); }
};
using NewTopicPtr = std::unique_ptr<rd_kafka_NewTopic_t, NewTopicDestroyer>;

struct AdminOptionsDestroyer {
  void operator()(rd_kafka_AdminOptions_t* options) const noexcept {
    rd_kafka_AdminOptions_destroy(options);
  }
};
using AdminOptionsPtr = std::unique_ptr<rd_kafka_AdminOptions_t, AdminOptionsDestroyer>;

struct PartitionListDestroyer {
  void operator()(rd_kafka_topic_partition_list_t* list) const noexcept {
    rd_kafka_topic_partition_list_destroy(list);
  }
};
using PartitionListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDestroyer>;

struct MetadataDestroyer {
  void operator()(const rd_kafka_metadata_t* metadata) const noexcept {
    rd_kafka_metadata_destroy(metadata);
  }
};
using MetadataPtr = std::unique_ptr<const rd_kafka_metadata_t, MetadataDestroyer>;

struct ErrorDestroyer {
  void operator()(rd_kafka_error_t* error) const noexcept { rd_kafka_error_destroy(error); }
};
using ErrorPtr = std::unique_ptr<rd_kafka_error_t, ErrorDestroyer>;

struct HeadersDestroyer {
  void operator()(rd_kafka_headers_t* headers) const noexcept { rd_kafka_headers_destroy(headers); }
};
using HeadersPtr = std::unique_ptr<rd_kafka_headers_t, HeadersDestroyer>;

struct MessageDestroyer {
  void operator()(rd_kafka_message_t* message) const noexcept { rd_kafka_message_destroy(message); }
};
using MessagePtr = std::unique_ptr<rd_kafka_message_t, MessageDestroyer>;

std::string err_text(rd_kafka_resp_err_t err) {
  return std::string(rd_kafka_err2str(err)) + " (" + rd_kafka_err2name(err) + ")";
}

Status set_property(rd_kafka_conf_t* conf, const std::string& name, const std::string& value) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) !=
      RD_KAFKA_CONF_OK) {
    return invalid_argument("kafka config " + name + "=" + value + ": " + errstr);
  }
  return {};
}

Status set_properties(rd_kafka_conf_t* conf, const KafkaProperties& properties) {
  for (const auto& [name, value] : properties) {
    if (Status s = set_property(conf, name, value); !s) return s;
  }
  return {};
}

// librdkafka's log lines (syslog levels) to our structured log. Called from librdkafka's
// threads; a Logger is thread-safe.
void log_callback(const rd_kafka_t* rk, int level, const char* facility, const char* line) {
  static const Logger kLog("bus");
  // librdkafka logs every failed connection attempt at LOG_ERR; our own "kafka unreachable"
  // line is the error that matters, so those are warnings here.
  const LogLevel ours = level <= 2   ? LogLevel::kError
                        : level <= 4 ? LogLevel::kWarn
                        : level <= 6 ? LogLevel::kInfo
                                     : LogLevel::kDebug;
  if (!kLog.enabled(ours)) return;
  kLog.log(ours, "librdkafka",
           {{"client", rd_kafka_name(rk)}, {"facility", facility}, {"line", line}});
}

// rd_kafka_new takes the conf only when it succeeds.
Result<KafkaHandlePtr> new_handle(rd_kafka_type_t type, ConfPtr conf) {
  char errstr[512];
  KafkaHandlePtr rk(rd_kafka_new(type, conf.get(), errstr, sizeof errstr));
  if (!rk) return invalid_argument(std::string("kafka client: ") + errstr);
  (void)conf.release();  // owned by rk now
  return rk;
}

bool is_broker_unreachable(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT ||
         err == RD_KAFKA_RESP_ERR__RESOLVE || err == RD_KAFKA_RESP_ERR__TIMED_OUT;
}

}  // namespace

void KafkaHandleDestroyer::operator()(rd_kafka_s* rk) const noexcept { rd_kafka_destroy(rk); }

// The C callbacks; librdkafka's opaque is the owning object.
struct KafkaCallbacks {
  static void delivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* message, void* opaque) {
    static_cast<KafkaProducer*>(opaque)->on_delivery_report(
        reinterpret_cast<std::uintptr_t>(message->_private), message->err,
        message->rkt ? rd_kafka_topic_name(message->rkt) : "");
  }
  static void producer_error(rd_kafka_t* /*rk*/, int err, const char* reason, void* opaque) {
    static_cast<KafkaProducer*>(opaque)->on_error(err, reason);
  }
  static void consumer_error(rd_kafka_t* /*rk*/, int err, const char* reason, void* opaque) {
    static_cast<KafkaConsumer*>(opaque)->on_error(err, reason);
  }
  static void rebalance(rd_kafka_t* /*rk*/, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    static_cast<KafkaConsumer*>(opaque)->on_rebalance(err, partitions);
  }
};

// ---------------------------------------------------------------------------------------------
// KafkaProducer

KafkaProducer::KafkaProducer(const BusOptions& options, DeliveryHandler on_delivery,
                             UniqueFd wake_read, UniqueFd wake_write)
    : options_(options),
      on_delivery_(std::move(on_delivery)),
      wake_read_(std::move(wake_read)),
      wake_write_(std::move(wake_write)) {}

Result<std::unique_ptr<KafkaProducer>> KafkaProducer::create(const BusOptions& options,
                                                             DeliveryHandler on_delivery,
                                                             const KafkaProperties& overrides) {
  if (options.kafka_brokers.empty()) return invalid_argument("kafka producer: no brokers given");
  if (!on_delivery) return invalid_argument("kafka producer: no delivery handler");

  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return internal_error(std::string("kafka producer: pipe: ") + std::strerror(errno));
  }
  UniqueFd wake_read(fds[0]);
  UniqueFd wake_write(fds[1]);

  // The object exists before its handle: librdkafka's callbacks point at it.
  std::unique_ptr<KafkaProducer> producer(new KafkaProducer(
      options, std::move(on_delivery), std::move(wake_read), std::move(wake_write)));

  ConfPtr conf(rd_kafka_conf_new());
  const KafkaProperties defaults = {
      {"bootstrap.servers", options.kafka_brokers},
      {"client.id", options.client_id},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"max.in.flight.requests.per.connection", "5"},
      // Same partition as Java's default partitioner for keyed messages.
      {"partitioner", "murmur2_random"},
      {"compression.type", options.kafka_compression},
      {"linger.ms", std::to_string(options.kafka_linger_ms)},
      // Small requests go out at once: Nagle would hold a lone event for up to 40 ms.
      {"socket.nagle.disable", "true"},
      // Never time a message out: an unreachable cluster stalls the relay instead.
      {"message.timeout.ms", "0"},
      // The caller's in-flight cap is the real limit.
      {"queue.buffering.max.messages", "1000000"},
      // Deliveries resume within a second of the cluster coming back (default: up to 10 s).
      {"reconnect.backoff.max.ms", "1000"},
  };
  if (Status s = set_properties(conf.get(), defaults); !s) return s.error();
  if (Status s = set_properties(conf.get(), overrides); !s) return s.error();
  rd_kafka_conf_set_opaque(conf.get(), producer.get());
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaCallbacks::delivery);
  rd_kafka_conf_set_error_cb(conf.get(), &KafkaCallbacks::producer_error);
  rd_kafka_conf_set_log_cb(conf.get(), &log_callback);

  auto rk = new_handle(RD_KAFKA_PRODUCER, std::move(conf));
  if (!rk) return rk.error().wrap("kafka producer");
  producer->rk_ = std::move(*rk);

  // Delivery reports and errors land on the main queue; it writes to the pipe when it becomes
  // non-empty, so an event loop can wait on wake_fd().
  QueuePtr main_queue(rd_kafka_queue_get_main(producer->rk_.get()));
  rd_kafka_queue_io_event_enable(main_queue.get(), producer->wake_write_.get(), "1", 1);

  producer->log_.info("kafka producer created", {{"brokers", options.kafka_brokers},
                                                 {"client_id", options.client_id},
                                                 {"compression", options.kafka_compression},
                                                 {"linger_ms", options.kafka_linger_ms}});
  return producer;
}

KafkaProducer::~KafkaProducer() {
  if (!rk_) return;
  const rd_kafka_resp_err_t err = rd_kafka_flush(rk_.get(), kFlushTimeoutMs);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    log_.warn("kafka producer closed with messages undelivered",
              {{"queued", rd_kafka_outq_len(rk_.get())}, {"error", err_text(err)}});
  }
  QueuePtr main_queue(rd_kafka_queue_get_main(rk_.get()));
  rd_kafka_queue_io_event_enable(main_queue.get(), -1, nullptr, 0);
  main_queue.reset();
  rk_.reset();
}

Status KafkaProducer::send(Message message, std::uint64_t tag) {
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(1);
  for (;;) {
    HeadersPtr headers(rd_kafka_headers_new(message.headers.size()));
    for (const auto& [name, value] : message.headers) {
      rd_kafka_header_add(headers.get(), name.data(), static_cast<ssize_t>(name.size()),
                          value.data(), static_cast<ssize_t>(value.size()));
    }
    const bool keyed = !message.key.empty();
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        rk_.get(), RD_KAFKA_V_TOPIC(message.topic.c_str()),
        RD_KAFKA_V_KEY(keyed ? message.key.data() : nullptr, message.key.size()),
        RD_KAFKA_V_VALUE(message.value.data(), message.value.size()),
        RD_KAFKA_V_HEADERS(headers.get()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag))),
        RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      (void)headers.release();  // owned by the message now
      ++sent_;
      // With this message in flight, raise the fatal error an idempotent producer gets when
      // the broker breaks its sequence, so tests can check that nothing retries a dead one.
      if (!failpoint("bus.kafka_producer_fatal")) inject_fatal_error_for_testing("failpoint");
      return {};
    }
    const std::string where = "kafka send topic=" + message.topic + ": ";
    switch (err) {
      case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        // Only with more than queue.buffering.max.messages in flight: let deliveries drain.
        if (Clock::now() >= give_up) return unavailable(where + err_text(err));
        rd_kafka_poll(rk_.get(), 10);
        // Reports served here wait for poll(); keep wake_fd() readable until then.
        if (!reports_.empty()) (void)!::write(wake_write_.get(), "1", 1);
        continue;
      case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return invalid_argument(where + err_text(err));
      case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
      case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return not_found(where + err_text(err));
      case RD_KAFKA_RESP_ERR__FATAL:
        return failed_precondition(where + fatal_message());
      default:
        return internal_error(where + err_text(err));
    }
  }
}

std::size_t KafkaProducer::poll(std::chrono::milliseconds timeout) {
  // Drain the pipe before serving the queue: an event enqueued after rd_kafka_poll() emptied
  // it writes a new byte, so no wake-up is lost.
  drain_wake_fd();
  rd_kafka_poll(rk_.get(), 0);
  const Clock::time_point deadline = Clock::now() + timeout;
  while (reports_.empty() && in_flight() > 0 && !fatal_) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    rd_kafka_poll(rk_.get(), static_cast<int>(left.count()));
  }
  if (fatal_ && !purged_) {
    // librdkafka stops sending; fail everything outstanding so the caller learns each
    // message's fate (unknown) and can recreate the producer.
    purged_ = true;
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk_.get(), 0);
  }

  dispatching_.swap(reports_);
  for (const auto& [tag, status] : dispatching_) {
    ++dispatched_;
    on_delivery_(tag, status);
  }
  const std::size_t n = dispatching_.size();
  dispatching_.clear();
  return n;
}

void KafkaProducer::drain_wake_fd() {
  char buf[256];
  while (::read(wake_read_.get(), buf, sizeof buf) > 0) {
  }
}

void KafkaProducer::on_delivery_report(std::uint64_t tag, int err_code, const char* topic) {
  const auto err = static_cast<rd_kafka_resp_err_t>(err_code);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (degraded_.exchange(false, std::memory_order_relaxed)) {
      log_.info("kafka reachable again", {{"in_flight", in_flight()}});
    }
    reports_.emplace_back(tag, Status{});
    return;
  }
  const std::string where = std::string("kafka delivery topic=") + topic + ": ";
  Error error;
  if (fatal_ || err == RD_KAFKA_RESP_ERR__FATAL) {
    error = unavailable(where + fatal_message() + "; delivery unknown, recreate the producer");
  } else {
    switch (err) {
      case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      case RD_KAFKA_RESP_ERR_INVALID_MSG:
      case RD_KAFKA_RESP_ERR_INVALID_RECORD:
      case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
        error = invalid_argument(where + err_text(err));
        break;
      case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
      case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
      case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        error = not_found(where + err_text(err));
        break;
      default:
        error = internal_error(where + err_text(err));
        break;
    }
  }
  reports_.emplace_back(tag, std::move(error));
}

void KafkaProducer::on_error(int err_code, const char* reason) {
  const auto err = static_cast<rd_kafka_resp_err_t>(err_code);
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    fatal_ = true;
    degraded_.store(true, std::memory_order_relaxed);
    log_.error("kafka producer fatal error", {{"error", fatal_message()}});
    return;
  }
  // A transport error with nothing in flight is usually an idle connection being closed.
  const bool unreachable =
      err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || (is_broker_unreachable(err) && in_flight() > 0);
  if (unreachable && !degraded_.exchange(true, std::memory_order_relaxed)) {
    log_.warn("kafka unreachable, deliveries wait",
              {{"error", err_text(err)}, {"reason", reason}, {"in_flight", in_flight()}});
    return;
  }
  log_.debug("kafka producer error", {{"error", err_text(err)}, {"reason", reason}});
}

std::optional<Error> KafkaProducer::fatal_error() const {
  if (!fatal_) return std::nullopt;
  return failed_precondition(fatal_message());
}

std::string KafkaProducer::fatal_message() const {
  char reason[512] = "";
  const rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk_.get(), reason, sizeof reason);
  return "kafka producer fatal error (idempotent delivery can no longer be guaranteed): " +
         err_text(err) + ": " + reason;
}

void KafkaProducer::inject_fatal_error_for_testing(const std::string& reason) {
  rd_kafka_test_fatal_error(rk_.get(), RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                            reason.c_str());
}

Status KafkaProducer::ensure_topics(const std::vector<std::string>& topics) {
  if (topics.empty()) return {};
  auto state = topic_state(topics);
  if (!state) return state.error();
  const std::vector<std::string>& missing = state->missing;
  if (missing.empty()) return {};
  std::string names;
  for (const std::string& topic : missing) names += (names.empty() ? "" : ", ") + topic;
  const std::string cannot_create =
      "kafka topics missing and the cluster cannot create them (no controller / no "
      "CreateTopics, e.g. librdkafka's mock cluster: create them where it is hosted): " +
      names;
  // The mock cluster names a controller (0) that is none of its brokers (1..n); librdkafka's
  // Admin API would wait for it until the request times out.
  if (!state->controller_known) return not_found(cannot_create);

  char errstr[512];
  std::vector<NewTopicPtr> new_topics;
  std::vector<rd_kafka_NewTopic_t*> raw;
  for (const std::string& topic : missing) {
    NewTopicPtr t(rd_kafka_NewTopic_new(topic.c_str(), options_.kafka_partitions,
                                        options_.kafka_replication_factor, errstr, sizeof errstr));
    if (!t) return invalid_argument("kafka create topic " + topic + ": " + errstr);
    raw.push_back(t.get());
    new_topics.push_back(std::move(t));
  }
  AdminOptionsPtr admin(rd_kafka_AdminOptions_new(rk_.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS));
  if (rd_kafka_AdminOptions_set_request_timeout(admin.get(), kAdminTimeoutMs, errstr,
                                                sizeof errstr) ||
      rd_kafka_AdminOptions_set_operation_timeout(admin.get(), kAdminTimeoutMs, errstr,
                                                  sizeof errstr)) {
    return internal_error(std::string("kafka create topics: ") + errstr);
  }
  QueuePtr queue(rd_kafka_queue_new(rk_.get()));
  rd_kafka_CreateTopics(rk_.get(), raw.data(), raw.size(), admin.get(), queue.get());
  EventPtr event(rd_kafka_queue_poll(queue.get(), kAdminTimeoutMs + 5000));
  if (!event) return unavailable("kafka create topics: no answer from the cluster");

  const rd_kafka_resp_err_t err = rd_kafka_event_error(event.get());
  if (err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
      err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION) {
    return not_found(cannot_create);
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return unavailable("kafka create topics: " + err_text(err) + ": " +
                       rd_kafka_event_error_string(event.get()));
  }
  const rd_kafka_CreateTopics_result_t* result = rd_kafka_event_CreateTopics_result(event.get());
  std::size_t count = 0;
  const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(result, &count);
  std::string failures;
  bool invalid = false;
  for (std::size_t i = 0; i < count; ++i) {
    const rd_kafka_resp_err_t topic_err = rd_kafka_topic_result_error(results[i]);
    const char* name = rd_kafka_topic_result_name(results[i]);
    if (topic_err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      log_.info("kafka topic created", {{"topic", name},
                                        {"partitions", options_.kafka_partitions},
                                        {"replication", options_.kafka_replication_factor}});
      continue;
    }
    if (topic_err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) continue;  // created meanwhile
    invalid = invalid || topic_err == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR ||
              topic_err == RD_KAFKA_RESP_ERR_INVALID_PARTITIONS ||
              topic_err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION ||
              topic_err == RD_KAFKA_RESP_ERR_INVALID_CONFIG;
    const char* message = rd_kafka_topic_result_error_string(results[i]);
    failures += std::string(failures.empty() ? "" : "; ") + name + ": " +
                (message ? message : err_text(topic_err).c_str());
  }
  if (failures.empty()) return {};
  return invalid ? invalid_argument("kafka create topics: " + failures)
                 : unavailable("kafka create topics: " + failures);
}

Result<KafkaProducer::TopicState> KafkaProducer::topic_state(
    const std::vector<std::string>& topics) {
  // All topics: asking for one by name could auto-create it on the broker.
  const rd_kafka_metadata_t* raw = nullptr;
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk_.get(), 1, nullptr, &raw, kMetadataTimeoutMs);
  MetadataPtr metadata(raw);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return unavailable("kafka metadata: " + err_text(err));
  TopicState state;
  const rd_kafka_metadata_topic_t* begin = metadata->topics;
  const rd_kafka_metadata_topic_t* end = begin + metadata->topic_cnt;
  for (const std::string& topic : topics) {
    const bool found = std::any_of(begin, end, [&](const rd_kafka_metadata_topic_t& t) {
      return t.err == RD_KAFKA_RESP_ERR_NO_ERROR && topic == t.topic;
    });
    if (!found) state.missing.push_back(topic);
  }
  const std::int32_t controller = rd_kafka_controllerid(rk_.get(), 0);
  for (int i = 0; i < metadata->broker_cnt; ++i) {
    state.controller_known = state.controller_known || metadata->brokers[i].id == controller;
  }
  return state;
}

// ---------------------------------------------------------------------------------------------
// KafkaConsumer

KafkaConsumer::KafkaConsumer(const ConsumerOptions& consumer) : options_(consumer) {}

Result<std::unique_ptr<KafkaConsumer>> KafkaConsumer::create(const BusOptions& options,
                                                             const ConsumerOptions& consumer,
                                                             const KafkaProperties& overrides) {
  if (options.kafka_brokers.empty()) return invalid_argument("kafka consumer: no brokers given");
  if (consumer.group.empty()) return invalid_argument("kafka consumer: no group given");
  if (consumer.topics.empty()) return invalid_argument("kafka consumer: no topics given");

  std::unique_ptr<KafkaConsumer> self(new KafkaConsumer(consumer));
  ConfPtr conf(rd_kafka_conf_new());
  const KafkaProperties defaults = {
      {"bootstrap.servers", options.kafka_brokers},
      {"group.id", consumer.group},
      {"client.id", consumer.consumer_name.empty() ? options.client_id : consumer.consumer_name},
      // The runtime commits after the effects are durable.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"},
      // Incremental rebalances: members keep consuming the partitions they keep.
      {"partition.assignment.strategy", "cooperative-sticky"},
      {"isolation.level", "read_committed"},
      {"enable.partition.eof", "false"},
      // A dead member's partitions move on after 10 s rather than librdkafka's 45 s.
      {"session.timeout.ms", "10000"},
      {"heartbeat.interval.ms", "1000"},
      {"reconnect.backoff.max.ms", "1000"},
  };
  if (Status s = set_properties(conf.get(), defaults); !s) return s.error();
  if (Status s = set_properties(conf.get(), overrides); !s) return s.error();
  rd_kafka_conf_set_opaque(conf.get(), self.get());
  rd_kafka_conf_set_error_cb(conf.get(), &KafkaCallbacks::consumer_error);
  rd_kafka_conf_set_rebalance_cb(conf.get(), &KafkaCallbacks::rebalance);
  rd_kafka_conf_set_log_cb(conf.get(), &log_callback);

  auto rk = new_handle(RD_KAFKA_CONSUMER, std::move(conf));
  if (!rk) return rk.error().wrap("kafka consumer");
  self->rk_ = std::move(*rk);
  // Errors and rebalances are then served by rd_kafka_consumer_poll().
  rd_kafka_poll_set_consumer(self->rk_.get());

  PartitionListPtr subscription(
      rd_kafka_topic_partition_list_new(static_cast<int>(consumer.topics.size())));
  for (const std::string& topic : consumer.topics) {
    rd_kafka_topic_partition_list_add(subscription.get(), topic.c_str(), RD_KAFKA_PARTITION_UA);
  }
  if (rd_kafka_resp_err_t err = rd_kafka_subscribe(self->rk_.get(), subscription.get())) {
    return invalid_argument("kafka subscribe: " + err_text(err));
  }
  self->log_.info("kafka consumer created", {{"brokers", options.kafka_brokers},
                                             {"group", consumer.group},
                                             {"consumer", consumer.consumer_name},
                                             {"topics", consumer.topics}});
  return self;
}

KafkaConsumer::~KafkaConsumer() {
  if (!rk_) return;
  if (rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_.get())) {
    log_.warn("kafka consumer close", {{"group", options_.group}, {"error", err_text(err)}});
  }
  rk_.reset();
}

Result<std::vector<Delivery>> KafkaConsumer::poll(std::size_t max,
                                                  std::chrono::milliseconds timeout) {
  std::vector<Delivery> out;
  const Clock::time_point deadline = Clock::now() + timeout;
  while (out.size() < max) {
    int wait_ms = 0;
    if (out.empty()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      wait_ms = static_cast<int>(std::max<std::int64_t>(0, left.count()));
    }
    MessagePtr message(rd_kafka_consumer_poll(rk_.get(), wait_ms));
    if (!message) {
      if (!out.empty() || wait_ms == 0) break;
      continue;  // woke up early (a rebalance, an error): wait out the rest
    }
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
      if (message->err == RD_KAFKA_RESP_ERR__FATAL) {
        char reason[512] = "";
        const rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk_.get(), reason, sizeof reason);
        return failed_precondition("kafka consumer fatal error: " + err_text(err) + ": " + reason);
      }
      log_.warn("kafka consume error",
                {{"group", options_.group},
                 {"topic", message->rkt ? rd_kafka_topic_name(message->rkt) : ""},
                 {"error", err_text(message->err)},
                 {"reason", rd_kafka_message_errstr(message.get())}});
      if (Clock::now() >= deadline && out.empty()) break;
      continue;
    }
    Delivery& d = out.emplace_back();
    d.topic = rd_kafka_topic_name(message->rkt);
    d.partition = message->partition;
    d.offset = message->offset;
    d.position = std::to_string(message->offset);
    rd_kafka_timestamp_type_t ts_type;
    if (const std::int64_t ts = rd_kafka_message_timestamp(message.get(), &ts_type); ts > 0) {
      d.appended_unix_ms = ts;
    }
    if (message->key) d.key.assign(static_cast<const char*>(message->key), message->key_len);
    if (message->payload) {
      d.value.assign(static_cast<const char*>(message->payload), message->len);
    }
    rd_kafka_headers_t* headers = nullptr;  // owned by the message
    if (rd_kafka_message_headers(message.get(), &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      std::size_t size = 0;
      for (std::size_t i = 0;
           rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
           ++i) {
        d.headers.emplace_back(
            name, value ? std::string(static_cast<const char*>(value), size) : std::string());
      }
    }
  }
  return out;
}

Status KafkaConsumer::commit(const std::vector<Delivery>& deliveries) {
  std::map<std::pair<std::string, std::int32_t>, std::int64_t> next;  // -> offset to commit
  std::size_t skipped = 0;
  for (const Delivery& d : deliveries) {
    auto key = std::make_pair(d.topic, d.partition);
    if (!assigned_.contains(key)) {
      ++skipped;
      continue;
    }
    std::int64_t& offset = next[std::move(key)];
    offset = std::max(offset, d.offset + 1);
  }
  if (skipped > 0) {
    log_.info("kafka commit skipped for revoked partitions",
              {{"group", options_.group}, {"deliveries", skipped}});
  }
  if (next.empty()) return {};

  PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(next.size())));
  for (const auto& [tp, offset] : next) {
    rd_kafka_topic_partition_list_add(list.get(), tp.first.c_str(), tp.second)->offset = offset;
  }
  // A commit refused because the group moved on (a rebalance under way, or done without this
  // member) is not retried: whoever owns the partitions next reads them from the last committed
  // offset, and the consumers' inbox drops what was already applied. Retrying it with the old
  // generation blocked the member in synchronous commits while the group waited for it to
  // rejoin, and the rebalances went on.
  auto group_moved_on = [](rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION || e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
           e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || e == RD_KAFKA_RESP_ERR__FENCED;
  };
  auto dropped = [&](rd_kafka_resp_err_t e) {
    log_.warn(
        "kafka commit dropped: the group is being rebalanced; the partitions' next owner "
        "reads again from the last committed offset",
        {{"group", options_.group}, {"error", err_text(e)}});
    return Status{};
  };
  if (rd_kafka_resp_err_t err = rd_kafka_commit(rk_.get(), list.get(), 0)) {
    if (group_moved_on(err)) return dropped(err);
    return unavailable("kafka commit group=" + options_.group + ": " + err_text(err));
  }
  for (int i = 0; i < list->cnt; ++i) {
    const rd_kafka_topic_partition_t& tp = list->elems[i];
    if (tp.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (group_moved_on(tp.err)) return dropped(tp.err);
      return unavailable("kafka commit group=" + options_.group + " " + tp.topic + "/" +
                         std::to_string(tp.partition) + ": " + err_text(tp.err));
    }
  }
  return {};
}

Result<std::int64_t> KafkaConsumer::lag() {
  const rd_kafka_metadata_t* raw = nullptr;
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk_.get(), 1, nullptr, &raw, kMetadataTimeoutMs);
  MetadataPtr metadata(raw);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return unavailable("kafka metadata: " + err_text(err));

  PartitionListPtr list(rd_kafka_topic_partition_list_new(16));
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = metadata->topics[i];
    if (std::find(options_.topics.begin(), options_.topics.end(), t.topic) ==
        options_.topics.end()) {
      continue;
    }
    for (int p = 0; p < t.partition_cnt; ++p) {
      rd_kafka_topic_partition_list_add(list.get(), t.topic, t.partitions[p].id);
    }
  }
  if (list->cnt == 0) return std::int64_t{0};
  if (rd_kafka_resp_err_t e = rd_kafka_committed(rk_.get(), list.get(), kOffsetsTimeoutMs)) {
    return unavailable("kafka committed offsets group=" + options_.group + ": " + err_text(e));
  }
  std::int64_t total = 0;
  for (int i = 0; i < list->cnt; ++i) {
    const rd_kafka_topic_partition_t& tp = list->elems[i];
    std::int64_t low = RD_KAFKA_OFFSET_INVALID;
    std::int64_t high = RD_KAFKA_OFFSET_INVALID;
    // Assigned partitions: the watermarks of the last fetch response, without a request.
    const bool cached = assigned_.contains({tp.topic, tp.partition}) &&
                        rd_kafka_get_watermark_offsets(rk_.get(), tp.topic, tp.partition, &low,
                                                       &high) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                        low >= 0 && high >= 0;
    if (!cached) {
      if (rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
              rk_.get(), tp.topic, tp.partition, &low, &high, kOffsetsTimeoutMs)) {
        return unavailable("kafka watermarks " + std::string(tp.topic) + "/" +
                           std::to_string(tp.partition) + ": " + err_text(e));
      }
    }
    const std::int64_t from = tp.offset >= 0 ? tp.offset : low;
    total += std::max<std::int64_t>(0, high - from);
  }
  return total;
}

void KafkaConsumer::on_rebalance(int err_code, rd_kafka_topic_partition_list_t* partitions) {
  const auto err = static_cast<rd_kafka_resp_err_t>(err_code);
  const bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk_.get()), "COOPERATIVE") == 0;
  nlohmann::json names = nlohmann::json::array();
  for (int i = 0; i < partitions->cnt; ++i) {
    names.push_back(std::string(partitions->elems[i].topic) + "/" +
                    std::to_string(partitions->elems[i].partition));
  }

  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    for (int i = 0; i < partitions->cnt; ++i) {
      assigned_.emplace(partitions->elems[i].topic, partitions->elems[i].partition);
    }
    log_.info("kafka partitions assigned",
              {{"group", options_.group}, {"partitions", names}, {"owned", assigned_.size()}});
    if (cooperative) {
      ErrorPtr error(rd_kafka_incremental_assign(rk_.get(), partitions));
      if (error) {
        log_.error("kafka incremental assign", {{"error", rd_kafka_error_string(error.get())}});
      }
    } else if (rd_kafka_resp_err_t e = rd_kafka_assign(rk_.get(), partitions)) {
      log_.error("kafka assign", {{"error", err_text(e)}});
    }
    return;
  }

  // Revoked (or an error): commit nothing here, the runtime commits only after effects; the
  // next owner resumes from the last commit.
  const bool lost = rd_kafka_assignment_lost(rk_.get()) != 0;
  for (int i = 0; i < partitions->cnt; ++i) {
    assigned_.erase({partitions->elems[i].topic, partitions->elems[i].partition});
  }
  log_.info(lost ? "kafka partitions lost" : "kafka partitions revoked",
            {{"group", options_.group},
             {"partitions", names},
             {"owned", assigned_.size()},
             {"reason", err_text(err)}});
  if (cooperative) {
    ErrorPtr error(rd_kafka_incremental_unassign(rk_.get(), partitions));
    if (error) {
      log_.error("kafka incremental unassign", {{"error", rd_kafka_error_string(error.get())}});
    }
  } else {
    assigned_.clear();
    if (rd_kafka_resp_err_t e = rd_kafka_assign(rk_.get(), nullptr)) {
      log_.error("kafka unassign", {{"error", err_text(e)}});
    }
  }
}

void KafkaConsumer::on_error(int err_code, const char* reason) {
  const auto err = static_cast<rd_kafka_resp_err_t>(err_code);
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    log_.error("kafka consumer fatal error", {{"group", options_.group}, {"reason", reason}});
    return;
  }
  log_.debug("kafka consumer error",
             {{"group", options_.group}, {"error", err_text(err)}, {"reason", reason}});
}

// ---------------------------------------------------------------------------------------------
// The health probe: a producer handle that never produces, asked for the cluster's metadata.

namespace {

class KafkaProbe final : public Probe {
 public:
  explicit KafkaProbe(KafkaHandlePtr rk) : rk_(std::move(rk)) {}
  Status ping(std::chrono::milliseconds timeout) override {
    const rd_kafka_metadata_t* md = nullptr;
    const rd_kafka_resp_err_t err =
        rd_kafka_metadata(rk_.get(), 0, nullptr, &md, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return unavailable(std::string("bus: kafka metadata: ") + rd_kafka_err2str(err));
    }
    const int brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    if (brokers == 0) return unavailable("bus: kafka answered with no brokers");
    return {};
  }

 private:
  KafkaHandlePtr rk_;
};

}  // namespace

Result<std::unique_ptr<Probe>> make_kafka_probe(const BusOptions& options) {
  if (options.kafka_brokers.empty()) return invalid_argument("kafka probe: no brokers given");
  ConfPtr conf(rd_kafka_conf_new());
  if (Status s = set_properties(conf.get(), {{"bootstrap.servers", options.kafka_brokers},
                                             {"client.id", options.client_id + "-probe"}});
      !s) {
    return s.error();
  }
  rd_kafka_conf_set_log_cb(conf.get(), log_callback);
  auto rk = new_handle(RD_KAFKA_PRODUCER, std::move(conf));
  if (!rk) return rk.error();
  return std::unique_ptr<Probe>(new KafkaProbe(std::move(*rk)));
}

Result<std::unique_ptr<Producer>> make_kafka_producer(const BusOptions& options,
                                                      DeliveryHandler on_delivery,
                                                      const KafkaProperties& overrides) {
  auto producer = KafkaProducer::create(options, std::move(on_delivery), overrides);
  if (!producer) return producer.error();
  return std::unique_ptr<Producer>(std::move(*producer));
}

Result<std::unique_ptr<Consumer>> make_kafka_consumer(const BusOptions& options,
                                                      const ConsumerOptions& consumer,
                                                      const KafkaProperties& overrides) {
  auto created = KafkaConsumer::create(options, consumer, overrides);
  if (!created) return created.error();
  return std::unique_ptr<Consumer>(std::move(*created));
}

}  // namespace hi::bus
