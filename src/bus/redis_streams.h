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
  // Other members' entries pending for claim_idle, taken over (XAUTOCLAIM).
  Result<std::vector<Delivery>> reclaim(std::size_t max);
  // Appends an XACK per topic of `ids` (topic -> entry ids) to the client's pipeline.
  void append_acks(const std::map<std::string, std::vector<std::string>>& ids);
  // Sets the delivery counts of out[first..] (entries of `topic`) from the pending list.
  void read_delivery_counts(const std::string& topic, std::vector<Delivery>& out, std::size_t first,
                            std::size_t max);

  // ---- with ConsumerOptions::resume_from ("positioned"): NOACK reads under a lease
  //
  // Nothing is pending in the group, so what the group's last-delivered id passed is known only
  // to the caller's stored positions. Hence:
  //   - Reads hold the group's lease (key hi:bus:lease:<group>: the holder's consumer, host and
  //     pid), found ours under WATCH and renewed in the MULTI that reads, so two processes
  //     never take new entries at once. A holder that died on this host (its pid gone) is replaced
  //     at once; one elsewhere when the lease expires.
  //   - Having taken the lease, the consumer first re-reads with plain XREAD what lies between
  //     the caller's position and the group's last-delivered id (a dead holder's batches in
  //     hand), and the same after a reply lost with the connection.
  //   - The first lease writes the caller's positions to hi:bus:applied:<topic> (field: the
  //     group), and commit(), in place of XACK, each topic's highest position committed.
  //     trim_stream() keeps what follows, as it keeps a group's pending entries.
  //   - The pending entries of an earlier reader that did not read with NOACK are acknowledged
  //     at the first lease: everything they hold lies at or below the group's last-delivered id and
  //     is re-read from the caller's position.
  bool positioned() const { return options_.resume_from.has_value(); }
  // kOk when the lease is ours; kUnavailable while a live process holds it.
  Status take_lease();
  // The gap of each topic: from what was handed out to the group's last-delivered id.
  Status find_gaps();
  Result<std::vector<Delivery>> read_gaps(std::size_t max);
  Result<std::vector<Delivery>> poll_positioned(std::size_t max, std::chrono::milliseconds timeout);
  Status acknowledge_old_pending();
  // topic -> position, to hi:bus:applied:<topic> (field: the group), for trim_stream().
  Status report_applied(const std::map<std::string, std::string>& positions);
  void note_handed(const std::vector<Delivery>& out);

  redis::Client client_;
  ConsumerOptions options_;
  std::string lease_key_;
  std::string lease_value_;  // {"consumer":..,"host":..,"pid":..}
  bool leased_ = false;
  bool started_ = false;  // the caller's positions reported, old pending entries acknowledged
  bool regap_ = true;
  std::map<std::string, std::string> handed_;  // topic -> the highest position handed out
  struct Gap {
    std::string after;    // exclusive
    std::string through;  // inclusive: the group's last-delivered id when found
  };
  std::map<std::string, Gap> gaps_;
  std::int64_t in_hand_ = 0;  // handed out, not yet committed
  bool groups_ready_ = false;
  // Read this consumer's own pending entries ("0") before new ones (">"): at start, since a
  // restarted member under the same name (`up` gives its workers stable names) finds what its
  // previous process was given and never acknowledged, and after a lost connection, since a
  // reply lost with it leaves entries delivered to us that we never saw. Otherwise they would
  // wait for CONSUMER_CLAIM_IDLE_MS and another member's XAUTOCLAIM.
  bool read_own_pending_ = true;
  std::map<std::string, std::vector<std::string>> deferred_acks_;  // topic -> entry ids
  std::chrono::steady_clock::time_point next_claim_{};
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
