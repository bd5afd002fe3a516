// The dead-letter queue: parking an event that kept failing, and the operator's tools.
//
// A parked event is an `event_dlq` row (event id, consumer, topic, kind, tenant, user, the
// message's value, key and headers, error, retry_count, failed_at) and a message on events.dlq
// (the original value; headers id, kind, tenant_id, consumer, error, topic, retry_count). The
// row is the record; the message is a notification for whoever watches the topic. A parked
// event has no inbox row, so once it is re-published (`replay`) under its original id it is
// applied exactly once; an event that was applied meanwhile stays applied once (inbox).
//
// Rows are tenant-owned (row-level security): park() runs in the caller's tenant transaction;
// replay() walks every tenant with a transaction each (and tenant 0, where events without a
// usable tenant are parked). stats() uses the SECURITY DEFINER aggregate hi_dlq_stats().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "core/result.h"
#include "pg/connection.h"

namespace hi::consume {

struct ParkRequest {
  std::string consumer;  // consumer_name
  std::string event_id;
  std::string kind;
  std::string tenant_id;  // decimal; the transaction's tenant
  std::string user_id;    // may be empty
  std::string error;
  int retry_count = 0;
  const bus::Delivery* delivery = nullptr;  // topic, key, value, headers
};

// Inserts the event_dlq row inside the caller's transaction (app.tenant_id = tenant_id).
// Returns false when the event is already parked for this consumer (not replayed yet).
Result<bool> park(pg::Connection& conn, const ParkRequest& request);

// The events.dlq message of a parked event.
bus::Message dlq_message(const ParkRequest& request, const std::string& dlq_topic);

// `hashinsight dlq stats`: {"consumers":[{consumer, kind, parked, replayed, oldest, newest}],
// "parked", "replayed", "oldest", "newest"} (times RFC 3339, null when none).
Result<nlohmann::json> dlq_stats(pg::Connection& app);

struct ReplayOptions {
  double hours = 24;  // parked within the last `hours`
  bool dry_run = false;
  std::optional<std::int64_t> limit;
  std::string consumer;  // empty = every consumer
  std::chrono::milliseconds delivery_timeout{30000};
};

struct ReplayedEvent {
  std::int64_t dlq_id = 0;
  std::string event_id;
  std::string consumer;
  std::string kind;
  std::string topic;
  std::string tenant_id;
  std::string failed_at;
  bool replayed = false;
  std::string error;  // why it could not be re-published
};

struct ReplayReport {
  bool dry_run = false;
  std::int64_t selected = 0;
  std::int64_t replayed = 0;
  std::int64_t failed = 0;
  std::vector<ReplayedEvent> events;
  nlohmann::json to_json() const;
};

// Re-publishes parked events (oldest first) to their original topics with their original key,
// headers and id, then marks them replayed_at = now(); in dry-run mode only lists them.
// `progress(done, total)` is called as events are confirmed by the bus.
Result<ReplayReport> replay(pg::Connection& app, const bus::BusOptions& bus,
                            const ReplayOptions& options,
                            const std::function<void(std::int64_t, std::int64_t)>& progress = {});

// Every tenant id (global table `tenants`) plus "0".
Result<std::vector<std::string>> all_tenants(pg::Connection& app);

}  // namespace hi::consume
