#include "bus/bus.h"

#include <mutex>
#include <optional>

#include "bus/kafka.h"
#include "bus/redis_streams.h"
#include "redis/client.h"

namespace hi::bus {

std::string_view to_string(BusKind kind) { return kind == BusKind::kKafka ? "kafka" : "redis"; }

Result<BusKind> parse_bus_kind(std::string_view text) {
  if (text == "redis") return BusKind::kRedis;
  if (text == "kafka") return BusKind::kKafka;
  return invalid_argument("bus: unknown kind \"" + std::string(text) + "\" (redis or kafka)");
}

namespace {

class NoRetention final : public Retention {
 public:
  Result<std::int64_t> apply(const std::vector<std::string>&, std::chrono::milliseconds) override {
    return std::int64_t{0};
  }
};

class StreamRetention final : public Retention {
 public:
  explicit StreamRetention(std::string url) : url_(std::move(url)) {}
  Result<std::int64_t> apply(const std::vector<std::string>& topics,
                             std::chrono::milliseconds keep) override {
    if (!client_) {
      auto c = redis::Client::connect(url_, std::chrono::milliseconds(1000));
      if (!c) return c.error().wrap("stream retention");
      client_ = std::move(*c);
    }
    std::int64_t trimmed = 0;
    for (const auto& t : topics) {
      auto n = trim_stream(*client_, t, keep);
      if (!n) return n.error();
      trimmed += *n;
    }
    return trimmed;
  }

 private:
  std::string url_;
  std::optional<redis::Client> client_;
};

}  // namespace

class RedisProbe final : public Probe {
 public:
  explicit RedisProbe(std::string url) : url_(std::move(url)) {}
  Status ping(std::chrono::milliseconds timeout) override {
    std::lock_guard lock(mu_);
    if (!client_) {
      auto c = redis::Client::connect(url_, timeout);
      if (!c) return c.error().wrap("bus");
      client_ = std::move(*c);
    }
    auto r = client_->command({"PING"});
    if (!r || r->str != "PONG") {
      client_.reset();
      return r ? unavailable("bus: PING answered " + r->str) : r.error().wrap("bus");
    }
    return {};
  }

 private:
  std::string url_;
  std::mutex mu_;
  std::optional<redis::Client> client_;
};

Result<std::unique_ptr<Probe>> make_probe(const BusOptions& options) {
  if (options.kind == BusKind::kKafka) return make_kafka_probe(options);
  return std::unique_ptr<Probe>(new RedisProbe(options.redis_url));
}

Result<std::unique_ptr<Retention>> make_retention(const BusOptions& options) {
  if (options.kind == BusKind::kKafka) return std::unique_ptr<Retention>(new NoRetention());
  return std::unique_ptr<Retention>(new StreamRetention(options.redis_url));
}

Result<std::unique_ptr<Producer>> make_producer(const BusOptions& options,
                                                DeliveryHandler on_delivery) {
  if (options.kind == BusKind::kKafka) {
    return make_kafka_producer(options, std::move(on_delivery), options.kafka_producer_properties);
  }
  auto p = RedisStreamsProducer::create(options, std::move(on_delivery));
  if (!p) return p.error();
  return std::unique_ptr<Producer>(std::move(*p));
}

Result<std::unique_ptr<Consumer>> make_consumer(const BusOptions& options,
                                                const ConsumerOptions& consumer) {
  if (options.kind == BusKind::kKafka) {
    return make_kafka_consumer(options, consumer, options.kafka_consumer_properties);
  }
  auto c = RedisStreamsConsumer::create(options, consumer);
  if (!c) return c.error();
  return std::unique_ptr<Consumer>(std::move(*c));
}

Result<Durability> check_durability(const BusOptions& options) {
  if (options.kind == BusKind::kKafka) return Durability{true, "acks=all"};
  auto client = redis::Client::connect(options.redis_url, std::chrono::milliseconds(1000));
  if (!client) return client.error().wrap("bus durability");
  std::string aof, fsync;
  for (const char* name : {"appendonly", "appendfsync"}) {
    auto r = client->command({"CONFIG", "GET", name});
    if (!r) return r.error().wrap("bus durability");
    if (r->is_error() || r->elements.size() < 2) {
      return unavailable("bus durability: CONFIG GET " + std::string(name) + " refused: " + r->str);
    }
    (std::string_view(name) == "appendonly" ? aof : fsync) = r->elements[1].str;
  }
  return Durability{aof == "yes" && fsync == "always",
                    "appendonly=" + aof + " appendfsync=" + fsync};
}

}  // namespace hi::bus
