// The relay's maintenance thread: everything that runs beside the event loop, once a second.
//
// - watches the slot (retained WAL, wal_status, safe_wal_size) and warns when it grows or loses
//   WAL;
// - writes a heartbeat (a non-transactional logical message) when nothing was decoded for a
//   while, so the slot advances while the captured tables are idle and the database is busy;
// - applies outbox retention (relayed rows older than the limit) and stream retention on the
//   bus (bus::Retention);
// - checks that the bus keeps what it acknowledges (bus::check_durability) and says so;
// - publishes the relay's status to the Redis hash hi:status:relay and its metrics.
//
// It has its own database and Redis connections and reads the loop's RelayStats (atomics); it
// never touches the replication connection or the producer, which belong to the loop thread.
// Failures are logged and retried on the next round: nothing here stops the relay.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "bus/bus.h"
#include "cdc/relay.h"
#include "core/log.h"
#include "core/metrics.h"

namespace hi::pg {
class Connection;
}
namespace hi::redis {
class Client;
}

namespace hi::cdc {

// The prefix of the heartbeat messages; the loop confirms their position when idle.
inline constexpr std::string_view kHeartbeatPrefix = "hashinsight.heartbeat";

class RelayMaintenance {
 public:
  RelayMaintenance(const RelayOptions& options, const RelayStats& stats, Metrics& metrics);
  ~RelayMaintenance();

  // Runs rounds until `stop` is requested.
  void run(std::stop_token stop);

 private:
  struct SlotState {
    std::int64_t lag_bytes = -1;  // -1: unknown
    std::string wal_status = "unknown";
    std::string safe_wal_size;
  };
  SlotState watch_slot(pg::Connection& conn);
  void heartbeat(pg::Connection& conn);
  void outbox_retention(pg::Connection& conn);
  void stream_retention();
  void check_durability();
  void publish_status(redis::Client& redis, const SlotState& slot);

  const RelayOptions& options_;
  const RelayStats& stats_;
  Metrics& metrics_;
  Logger log_{"relay.status"};
  std::unique_ptr<bus::Retention> retention_;
  prometheus::Gauge& lag_bytes_;
  prometheus::Gauge& wal_status_;
  std::chrono::steady_clock::time_point last_heartbeat_;
  std::chrono::steady_clock::time_point last_outbox_retention_{};
  std::chrono::steady_clock::time_point last_stream_retention_;
  std::chrono::steady_clock::time_point last_lag_warning_{};
  std::chrono::steady_clock::time_point last_durability_check_{};
  std::string durable_ = "unknown";  // "1", "0" or "unknown" (the bus did not say)
  std::string durability_;           // what was found
};

}  // namespace hi::cdc
