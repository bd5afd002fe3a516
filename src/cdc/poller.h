// The polling fallback for databases without logical replication (`hashinsight relay --mode
// poll`): claims unprocessed outbox rows with FOR UPDATE SKIP LOCKED in batches, publishes them,
// waits for the bus to acknowledge all of them, then marks them processed in the same
// transaction. It waits on LISTEN/NOTIFY (the outbox trigger notifies while a poller has
// switched it on), not on a timer. Several pollers may run at once: a locked row is skipped by
// the others, so a committed batch is published by exactly one of them (a crash before the
// commit republishes the batch: at-least-once, deduplicated by consumers).
//
// Ordering: one poller publishes in created_at order; with several, events of one user may
// interleave across pollers. Logical replication (the default) keeps commit order.
#pragma once

#include <stop_token>

#include "bus/bus.h"
#include "cdc/relay.h"
#include "cdc/router.h"
#include "core/log.h"
#include "core/metrics.h"
#include "pg/connection.h"

namespace hi::cdc {

// One outbox row of a query result (every column as text) as a bus message: routed, or parked
// whole on `park_topic` (route_or_park); `parked_reason` as there.
bus::Message route_outbox_row(const OutboxRouter& router, const pg::QueryResult& rows, int row,
                              const ChangeSource& source, const std::string& park_topic,
                              std::string* parked_reason = nullptr);

class Poller {
 public:
  Poller(RelayOptions options, std::size_t batch, Metrics& metrics, Logger log);
  Status run(std::stop_token stop);
  const RelayStats& stats() const { return stats_; }

 private:
  Status run_once(std::stop_token stop, bus::Producer& producer);

  RelayOptions options_;
  std::size_t batch_;
  Metrics& metrics_;
  Logger log_;
  RelayStats stats_;
  std::optional<Error> delivery_error_;
  std::size_t acked_ = 0;
};

}  // namespace hi::cdc
