// One destination's sink: a consumer group (sink-<name>) on the cdc.<schema>.<table> topics of
// its tables, applying every change to the destination exactly once, masked.
//
//   poll a batch -> skip what the destination's stored positions already cover (Kafka)
//     -> parse, mask (nothing unmasked goes further) -> order by version
//     -> follow schema changes (DDL)
//     -> collapse to each key's last image -> destination.apply(rows + positions)
//     -> commit the bus offsets
//
// The bus is acknowledged only after the destination commit, so a crash at any instant is a
// replay, which the versions make harmless (destination.h). A change the destination refuses
// (a value that does not fit, a narrowing type change, a dropped key column) is parked in the
// destination's _hi_sink_dead_letters table with its masked change and the reason, and the sink
// goes on. An unreachable destination stalls only this sink: its backlog waits on the bus.
//
// Schema changes: every change event names its columns' types (cdc/router.h). When a table's
// newest change in a batch shows columns the destination lacks, lacks columns it has, or a new
// type, the sink adds, drops or widens the destination's columns (each step idempotent); a
// narrowing type change is not applied, and the changes that carry it are parked.
//
// Source catalog (optional, `source_database_url`): primary keys, replica identity (ClickHouse
// needs REPLICA IDENTITY FULL: said at start-up, and updates that lack an unchanged value are
// parked), and for a table the destination does not have yet: the table is created from the
// source's schema and a snapshot of the source is requested (relay_snapshots), so it starts
// complete.
//
// Threading: run() owns its connections and runs on the caller's thread, which parses and masks
// a batch while a reader task reads the next one from the bus and an applier thread applies the
// one before (schema changes, rows, dead letters). A batch is acknowledged on the bus once it is
// applied, by the next reader task (or the caller's thread when the bus is idle). A reaper thread
// frees applied batches. stats() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>

#include "bus/bus.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "sinks/config.h"
#include "sinks/masking.h"

namespace hi::sinks {

struct SinkOptions {
  DestinationSpec destination;
  bus::BusOptions bus;
  std::string consumer_name;  // unique per process
  MaskingKeys keys;
  std::string source_database_url;  // may be empty (see the header comment)
  std::string status_redis_url;     // hi:status:sink:<name> for health; may be empty
  std::size_t batch_size = 5000;
  std::chrono::milliseconds poll_timeout{500};
  std::chrono::milliseconds backoff_base{200};
  std::chrono::milliseconds backoff_max{5000};
  bool request_snapshots = true;
};

struct SinkStats {
  std::atomic<std::uint64_t> deliveries{0};
  std::atomic<std::uint64_t> applied{0};  // changes written (before collapsing)
  std::atomic<std::uint64_t> skipped{0};  // deliveries at or below the stored position
  std::atomic<std::uint64_t> parked{0};
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::int64_t> last_commit_unix_us{0};  // commit time of the newest applied change
  std::atomic<std::int64_t> backlog{-1};
};

// The consumer group of a destination.
std::string sink_group(const std::string& destination);

class Sink {
 public:
  Sink(SinkOptions options, Metrics& metrics, Logger log);
  ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  // Connects (retrying while the servers are unreachable), then applies until `stop`. Returns an
  // error only for a permanent problem (bad configuration, fatal bus error).
  Status run(std::stop_token stop);

  const SinkStats& stats() const { return stats_; }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  SinkStats stats_;
};

}  // namespace hi::sinks
