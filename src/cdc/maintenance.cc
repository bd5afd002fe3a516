#include "cdc/maintenance.h"

#include <unistd.h>

#include <algorithm>

#include "core/backoff.h"
#include "core/time.h"
#include "pg/connection.h"
#include "redis/client.h"

namespace hi::cdc {
namespace {

double wal_status_code(std::string_view s) {
  if (s == "reserved") return 0;
  if (s == "extended") return 1;
  if (s == "unreserved") return 2;
  return 3;
}

}  // namespace

RelayMaintenance::RelayMaintenance(const RelayOptions& options, const RelayStats& stats,
                                   Metrics& metrics)
    : options_(options),
      stats_(stats),
      metrics_(metrics),
      lag_bytes_(metrics.gauge("hashinsight_relay_slot_lag_bytes",
                               "WAL retained by the slot beyond its confirmed position")),
      wal_status_(metrics.gauge("hashinsight_relay_wal_status",
                                "Slot wal_status: 0 reserved, 1 extended, 2 unreserved, 3 lost")),
      last_heartbeat_(std::chrono::steady_clock::now()),
      last_stream_retention_(std::chrono::steady_clock::now()) {}

RelayMaintenance::~RelayMaintenance() = default;

void RelayMaintenance::run(std::stop_token stop) {
  std::optional<pg::Connection> conn;
  std::optional<redis::Client> redis;
  do {
    if (!conn || !conn->healthy()) {
      auto c = pg::Connection::connect(options_.database_url);
      if (c) conn = std::move(*c);
    }
    SlotState slot;
    if (conn && conn->healthy()) {
      slot = watch_slot(*conn);
      heartbeat(*conn);
      outbox_retention(*conn);
    }
    stream_retention();
    check_durability();
    if (!options_.redis_url.empty()) {
      if (!redis) {
        auto c = redis::Client::connect(options_.redis_url, std::chrono::milliseconds(1000));
        if (c) redis = std::move(*c);
      }
      if (redis) publish_status(*redis, slot);
    }
  } while (sleep_for(stop, std::chrono::seconds(1)));
}

RelayMaintenance::SlotState RelayMaintenance::watch_slot(pg::Connection& conn) {
  SlotState slot;
  auto r = conn.exec(
      "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status, "
      "safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
      {options_.slot});
  if (!r || r->empty()) return slot;
  slot.lag_bytes = r->is_null(0, 0) ? -1 : r->int64(0, 0);
  slot.wal_status = std::string(r->text(0, 1));
  slot.safe_wal_size = std::string(r->text(0, 2));
  lag_bytes_.Set(static_cast<double>(std::max<std::int64_t>(slot.lag_bytes, 0)));
  wal_status_.Set(wal_status_code(slot.wal_status));
  const auto now = std::chrono::steady_clock::now();
  if (slot.lag_bytes > options_.lag_warn_bytes &&
      now - last_lag_warning_ > std::chrono::minutes(1)) {
    last_lag_warning_ = now;
    log_.warn("slot retains much WAL", {{"slot", options_.slot},
                                        {"lag_bytes", slot.lag_bytes},
                                        {"wal_status", slot.wal_status},
                                        {"safe_wal_size", slot.safe_wal_size}});
  }
  if (slot.wal_status == "lost" || slot.wal_status == "unreserved") {
    log_.error("slot is losing its WAL",
               {{"slot", options_.slot}, {"wal_status", slot.wal_status}});
  }
  return slot;
}

// When nothing was decoded for a while, a non-transactional logical message gives the stream
// something to confirm, so the slot advances while the tables we capture are idle and the rest
// of the database is busy.
void RelayMaintenance::heartbeat(pg::Connection& conn) {
  const auto now = std::chrono::steady_clock::now();
  const auto idle_us = unix_now_us() - stats_.last_event_unix_us.load();
  if (options_.heartbeat.count() <= 0 || !stats_.streaming.load() ||
      idle_us <= options_.heartbeat.count() * 1000 || now - last_heartbeat_ < options_.heartbeat) {
    return;
  }
  last_heartbeat_ = now;
  (void)conn.exec("SELECT pg_logical_emit_message(false, $1, now()::text)",
                  {std::string(kHeartbeatPrefix)});
}

// Relayed outbox rows older than the limit, in small batches. Deleting a row never loses its
// event: the relay reads inserts from the WAL, which the slot retains until they are confirmed;
// and only rows committed before the newest confirmed transaction are old enough.
void RelayMaintenance::outbox_retention(pg::Connection& conn) {
  const auto now = std::chrono::steady_clock::now();
  const std::int64_t confirmed_us = stats_.confirmed_commit_unix_us.load();
  if (options_.retention_hours <= 0 || confirmed_us <= 0 ||
      now - last_outbox_retention_ < std::chrono::minutes(1)) {
    return;
  }
  last_outbox_retention_ = now;
  const std::string cutoff = format_rfc3339_us(std::min(
      confirmed_us, unix_now_us() - std::int64_t{options_.retention_hours} * 3600'000'000));
  std::int64_t removed = 0;
  for (int i = 0; i < 100; ++i) {
    auto d = conn.exec("DELETE FROM " + options_.outbox_table +
                           " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + options_.outbox_table +
                           " WHERE created_at < $1 LIMIT 1000))",
                       {cutoff});
    if (!d) break;
    removed += d->affected();
    if (d->affected() < 1000) break;
  }
  if (removed > 0) log_.info("outbox retention", {{"deleted", removed}, {"before", cutoff}});
}

void RelayMaintenance::stream_retention() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_stream_retention_ < std::chrono::minutes(1)) return;
  last_stream_retention_ = now;
  if (!retention_) {
    auto r = bus::make_retention(options_.bus);
    if (!r) {
      log_.warn("stream retention unavailable", {{"error", r.error().message}});
      return;
    }
    retention_ = std::move(*r);
  }
  std::vector<std::string> topics = bus::standard_topics();
  for (const auto& t : options_.capture_tables) topics.push_back("cdc." + t);
  auto trimmed = retention_->apply(topics, options_.stream_keep);
  if (!trimmed) {
    log_.warn("stream retention failed", {{"error", trimmed.error().message}});
  } else if (*trimmed > 0) {
    log_.info("stream retention", {{"trimmed", *trimmed}});
  }
}

// Once a minute: an event acknowledged by a bus that does not persist it at once can be lost
// with the machine even though the relay confirmed its LSN. Health reports that as degraded.
void RelayMaintenance::check_durability() {
  const auto now = std::chrono::steady_clock::now();
  if (last_durability_check_ != std::chrono::steady_clock::time_point{} &&
      now - last_durability_check_ < std::chrono::minutes(1)) {
    return;
  }
  last_durability_check_ = now;
  auto d = bus::check_durability(options_.bus);
  const std::string was = durable_;
  if (!d) {
    durable_ = "unknown";
    durability_ = d.error().message;
  } else {
    durable_ = d->durable ? "1" : "0";
    durability_ = d->detail;
  }
  if (durable_ != was && durable_ != "1") {
    log_.warn("the bus may lose acknowledged events in a machine crash",
              {{"bus", std::string(bus::to_string(options_.bus.kind))}, {"found", durability_}});
  }
}

void RelayMaintenance::publish_status(redis::Client& redis, const SlotState& slot) {
  const std::int64_t last_ack = stats_.last_ack_unix_us.load();
  const std::int64_t confirmed_commit = stats_.confirmed_commit_unix_us.load();
  const std::vector<std::string> hset = {
      "HSET", "hi:status:relay", "mode", "cdc", "bus",
      std::string(bus::to_string(options_.bus.kind)), "slot", options_.slot, "confirmed_lsn",
      pg::Lsn{stats_.confirmed_lsn.load()}.to_string(), "lag_bytes", std::to_string(slot.lag_bytes),
      "wal_status", slot.wal_status, "safe_wal_size", slot.safe_wal_size, "in_flight",
      std::to_string(stats_.in_flight.load()), "events_published",
      std::to_string(stats_.events_published.load()), "events_acked",
      std::to_string(stats_.events_acked.load()), "last_ack_at",
      last_ack > 0 ? format_rfc3339_us(last_ack) : "",
      // Everything committed before it is on the bus.
      "confirmed_commit_at", confirmed_commit > 0 ? format_rfc3339_us(confirmed_commit) : "",
      "bus_degraded", stats_.bus_degraded.load() ? "1" : "0", "streaming",
      stats_.streaming.load() ? "1" : "0", "reconnects", std::to_string(stats_.reconnects.load()),
      "streamed_transactions", std::to_string(stats_.streamed_transactions.load()), "updated_at",
      format_rfc3339_us(unix_now_us()), "durable", durable_, "durability", durability_, "pid",
      std::to_string(::getpid())};
  redis.append(hset);
  redis.append(std::vector<std::string>{"PEXPIRE", "hi:status:relay", "5000"});
  redis.append(
      std::vector<std::string>{"SET", "hi:metrics:relay", metrics_.render(), "PX", "5000"});
  (void)redis.flush();  // a broken connection reconnects on the next round
}

}  // namespace hi::cdc
