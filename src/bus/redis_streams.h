// The bus on Redis Streams: one stream per topic.
//
// Entry fields: `key`, `value` (the envelope JSON) and one field per header (`id`, `kind`,
// `tenant_id`), as CONTRACTS.md fixes them. The producer pipelines XADDs: everything queued by
// send() goes out in one round trip at the next poll(), and the XADD replies are the delivery
// acknowledgements (with appendfsync everysec the entry is in the AOF within a second). When
// Redis is unreachable the queued messages stay queued and are retried with backoff, so a
// delivery report is never a failure caused by an outage.
//
// The consumer uses consumer groups (XREADGROUP ... >), acknowledges with XACK, and reclaims
// entries left pending by a dead consumer with XAUTOCLAIM after an idle timeout.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "core/backoff.h"
#include "core/log.h"
#include "redis/client.h"

namespace hi::bus {

class RedisStreamsProducer final : public Producer {
 public:
  static Result<std::unique_ptr<RedisStreamsProducer>> create(const BusOptions& options,
                                                              DeliveryHandler on_delivery);

  Status send(Message message, std::uint64_t tag) override;
  std::size_t poll(std::chrono::milliseconds timeout) override;
  std::size_t in_flight() const override { return queue_.size(); }
  int wake_fd() const override { return -1; }
  Status ensure_topics(const std::vector<std::string>& topics) override;
  bool degraded() const override { return degraded_; }
  std::string name() const override { return "redis"; }

  // Largest number of XADDs in one pipeline.
  static constexpr std::size_t kMaxBatch = 2000;

 private:
  RedisStreamsProducer(redis::Client client, DeliveryHandler on_delivery)
      : client_(std::move(client)), on_delivery_(std::move(on_delivery)), log_("bus") {}

  struct Pending {
    Message message;
    std::uint64_t tag;
  };
  void hold(std::string_view what, const std::string& detail);

  redis::Client client_;
  DeliveryHandler on_delivery_;
  Logger log_;
  std::deque<Pending> queue_;
  bool degraded_ = false;
  std::string problem_;  // first word of the last trouble logged while degraded
  Backoff backoff_{std::chrono::milliseconds(50), std::chrono::seconds(2)};
  std::chrono::steady_clock::time_point retry_at_{};
};

class RedisStreamsConsumer final : public Consumer {
 public:
  static Result<std::unique_ptr<RedisStreamsConsumer>> create(const BusOptions& options,
                                                              const ConsumerOptions& consumer);

  Result<std::vector<Delivery>> poll(std::size_t max, std::chrono::milliseconds timeout) override;
  Status commit(const std::vector<Delivery>& deliveries) override;
  Status commit_later(const std::vector<Delivery>& deliveries) override;
  Result<std::int64_t> lag() override;

 private:
  RedisStreamsConsumer(redis::Client client, ConsumerOptions options)
      : client_(std::move(client)), options_(std::move(options)) {}
  Status ensure_groups();
  Result<std::vector<Delivery>> reclaim(std::size_t max, std::chrono::milliseconds idle,
                                        bool at_start);
  // Appends an XACK per topic of `ids` (topic -> entry ids) to the client's pipeline.
  void append_acks(const std::map<std::string, std::vector<std::string>>& ids);
  // Sets the delivery counts of out[first..] (entries of `topic`) from the pending list.
  void read_delivery_counts(const std::string& topic, std::vector<Delivery>& out, std::size_t first,
                            std::size_t max);

  redis::Client client_;
  ConsumerOptions options_;
  bool groups_ready_ = false;
  // Read this consumer's own pending entries ("0") before new ones (">"): at start, since a
  // restarted member under the same name (`up` gives its workers stable names) finds what its
  // previous process was given and never acknowledged, and after a lost connection, since a
  // reply lost with it leaves entries delivered to us that we never saw. Otherwise they would
  // wait for CONSUMER_CLAIM_IDLE_MS and another member's XAUTOCLAIM.
  bool read_own_pending_ = true;
  std::map<std::string, std::vector<std::string>> deferred_acks_;  // topic -> entry ids
  std::chrono::steady_clock::time_point next_claim_{};
  // Reclaims use start_claim_idle until a scan of every stream has come round.
  bool starting_ = true;
  std::map<std::string, std::string> start_cursors_;  // topic -> where the start scan goes on
};

// Parses a Redis stream entry ([id, [field, value, ...]]) of `stream` into a Delivery; the
// strings are moved out of `entry` (pass a copy to keep it).
Delivery delivery_from_entry(const std::string& stream, redis::Reply entry);

// Trims `stream` below the oldest entry some group still needs (pending or not yet delivered),
// and never above entries younger than `keep`: XTRIM MINID ~ min(safe id, now - keep).
// A stream without groups (events.dlq) is trimmed by age alone. Returns the number of entries
// removed.
Result<std::int64_t> trim_stream(redis::Client& client, const std::string& stream,
                                 std::chrono::milliseconds keep);

}  // namespace hi::bus
