// The relay: PostgreSQL logical replication (pgoutput) -> outbox router / table capture -> bus.
//
// One event loop on one thread owns the replication connection and the producer; it never
// sleeps to poll: it waits in poll(2) on the replication socket and the producer's wake fd.
// Changes are published as they are decoded, with at most `max_inflight` events unacknowledged
// (the loop stops reading WAL beyond that: bounded memory for any transaction size). A
// transaction's end LSN is confirmed to PostgreSQL only when the bus acknowledged every event of
// it and of every earlier transaction (AckTracker), so a crash at any instant replays from the
// confirmed LSN: an event may arrive twice, never not at all.
//
// A side thread (RelayMaintenance, maintenance.h) publishes status (hi:status:relay in Redis,
// metrics), watches the slot (retained WAL, wal_status), writes heartbeats while idle, and
// applies outbox and stream retention. Slot and publication set-up is in slot.h.
//
// First start: the slot is created with the snapshot of its consistent point, and the outbox
// rows that exist at that point are published from it (a keyset scan), so no event written
// before the relay first ran is missed. A slot found invalidated (wal_status = lost) stops the
// relay with an error; it is never recreated silently (`hashinsight relay --recreate-slot`).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <unordered_set>
#include <vector>

#include "bus/bus.h"
#include "cdc/ack_tracker.h"
#include "cdc/router.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "pg/lsn.h"
#include "pg/pgoutput.h"

namespace hi::pg {
struct StreamEvent;
}

namespace hi::cdc {

class SnapshotReader;
namespace internal {
struct SnapshotWindow;
}

struct RelayOptions {
  std::string database_url;     // normal connection (slot checks, heartbeat, retention)
  std::string replication_url;  // replication connection (may equal database_url)
  std::string redis_url;        // status hash; empty = no status publishing
  std::string slot = "hashinsight_outbox";
  std::string publication = "hashinsight_outbox";
  std::string outbox_table = "public.event_outbox";
  std::vector<std::string> capture_tables;  // "schema.table"; published on <publication>_capture
  std::string routes;                       // RELAY_ROUTES
  std::string unknown_topic = "events.dlq";
  Format format = Format::kEnvelope;
  std::size_t max_inflight = 50000;
  std::chrono::milliseconds heartbeat{10000};  // 0 = off
  std::int64_t lag_warn_bytes = 64 << 20;
  int retention_hours = 168;  // 0 = keep
  // Redis Streams: entries every group has acknowledged are trimmed once older than this
  // (XTRIM MINID below what any group still needs; never an unread entry).
  std::chrono::milliseconds stream_keep{std::chrono::hours(24)};
  std::chrono::milliseconds snapshot_pause{0};  // between two snapshot chunks
  bool recreate_slot = false;  // drop an invalidated slot and backfill (explicit operator choice)
  bus::BusOptions bus;
};

// Counters the relay exposes (tests, benchmarks, status). Updated by the loop thread.
struct RelayStats {
  std::atomic<std::uint64_t> events_published{0};
  std::atomic<std::uint64_t> events_acked{0};
  std::atomic<std::uint64_t> transactions{0};
  std::atomic<std::uint64_t> streamed_transactions{0};  // protocol 2, published at Stream Commit
  std::atomic<std::uint64_t> confirmed_lsn{0};
  std::atomic<std::int64_t> last_ack_unix_us{0};
  std::atomic<std::int64_t> last_event_unix_us{0};
  std::atomic<std::uint64_t> in_flight{0};
  std::atomic<bool> bus_degraded{false};
  std::atomic<bool> streaming{false};
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::int64_t> confirmed_commit_unix_us{0};
};

class Relay {
 public:
  Relay(RelayOptions options, Metrics& metrics, Logger log);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Runs until `stop` is requested (returns ok) or a fatal error (slot lost, bad outbox row
  // the router cannot route, a permanent bus error). Transient failures (server restart, bus
  // outage) are retried inside.
  Status run(std::stop_token stop);

  const RelayStats& stats() const { return stats_; }

 private:
  struct Session;  // the state of one replication connection (relay.cc)

  Status connect_bus(std::stop_token stop);
  Status stream(std::stop_token stop);
  Status open_session(std::stop_token stop);
  Status backfill(std::stop_token stop);
  Status handle(const pg::StreamEvent& ev);
  Status handle_change(const pg::Message& msg);
  // Remembers a relation for the session. A captured table with REPLICA IDENTITY FULL flags
  // every column as its key: its changes are keyed by its primary key instead (read from the
  // catalog), so that one row's changes share a key and a partition.
  Status put_relation(pg::Relation relation);
  Status replay_stream(const pg::StreamCommit& commit);
  Status publish(bus::Message message);
  Status publish_outbox_row(const pg::Relation& rel, const pg::Tuple& row);
  Status pump(std::chrono::milliseconds timeout);
  void drain(std::stop_token stop);
  void send_status(bool force);
  // Snapshots (relay_snapshot.cc): what the reader sent, the keys changed in a chunk's window,
  // the watermarks, the chunk's rows published a slice per loop turn.
  void snapshot_events();
  void snapshot_note_change(const pg::Relation& rel, const pg::Tuple* row, std::uint32_t xid);
  void snapshot_note_truncate(const pg::Relation& rel);
  void snapshot_watermark(const pg::LogicalMessage& message);
  Status snapshot_publish_slice();
  bool snapshot_rows_pending() const;
  void snapshot_check_released();
  void snapshot_session_started();
  prometheus::Counter& events_counter(const std::string& topic);

  RelayOptions options_;
  Metrics& metrics_;
  Logger log_;
  RelayStats stats_;
  OutboxRouter router_;
  std::unordered_set<std::string> capture_;
  AckTracker tracker_;  // spans connections: reset only once nothing is in flight
  std::unique_ptr<bus::Producer> producer_;
  std::optional<Error> fatal_;                 // a permanent delivery failure, reported by the bus
  std::unique_ptr<Session> session_;           // while connected
  std::unique_ptr<SnapshotReader> snapshots_;  // when tables are captured
  std::unique_ptr<internal::SnapshotWindow> snapshot_window_;
  std::int64_t last_change_ns_ = 0;  // when the stream last published a change (monotonic)
  std::map<std::string, prometheus::Counter*, std::less<>> topic_counters_;
  prometheus::Histogram& commit_to_ack_;
  prometheus::Gauge& confirmed_gauge_;
  prometheus::Counter& reconnects_;
};

}  // namespace hi::cdc
