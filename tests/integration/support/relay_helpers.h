// Helpers of the relay and consumer tests: writing outbox events as the API does, reading what
// reached the bus, running the relay as a child process.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "core/process.h"
#include "pg/connection.h"
#include "pg/lsn.h"
#include "redis/client.h"
#include "support/servers.h"

namespace hi::test {

// Inserts `count` events of `kind` for `user` in one transaction of tenant 1; returns their ids.
std::vector<std::string> write_events(pg::Connection& conn, const std::string& user,
                                      const std::string& kind, int count,
                                      const std::string& payload = "{\"model_id\":1}");

// `writers` threads, each with its own app connection, write `per_writer` events in
// transactions of `per_tx`, spreading them over `users` users named "<prefix><writer>-<n>".
// Returns the ids each writer wrote.
std::vector<std::vector<std::string>> write_concurrently(int writers, int per_writer, int per_tx,
                                                         const std::string& prefix, int users);

// Every entry of a Redis stream, oldest first.
std::vector<bus::Delivery> read_stream(redis::Client& redis, const std::string& stream);

std::string header(const bus::Delivery& d, const std::string& name);

// Polls `done` every 20 ms until true or `timeout`; returns done().
bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

// The slot's confirmed_flush_lsn (0/0 when the slot is missing).
pg::Lsn confirmed_flush(pg::Connection& conn, const std::string& slot);

// Starts `hashinsight relay` with DATABASE_URL/REDIS_URL of the test servers plus `env`.
Process start_relay(const std::vector<std::string>& env, const std::string& log_path,
                    const std::vector<std::string>& args = {});

// Peak resident set size of a live process in MB (VmHWM).
double peak_rss_mb(int pid);

// Makes the capture publication publish `tables` (as `hashinsight migrate` does for
// RELAY_CAPTURE_TABLES: the relay itself alters no publication).
void capture_tables(pg::Connection& owner, const std::vector<std::string>& tables);

// postgresql://hashinsight_relay@... : the test cluster as the relay's own role.
std::string relay_role_url();

// Removes every slot and the backfill markers, empties the outbox, flushes Redis.
void reset_relay_state(pg::Connection& owner, redis::Client& redis);

// What every relay test starts from: an owner connection, a Redis client, no slots, an empty
// outbox and an empty Redis, and a log path for the relay child process.
// The relay under test is `relay_`: TearDown stops it with SIGTERM and expects status 0.
class RelayFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  std::string log_text() const;

  TempDir tmp_;
  std::string log_;
  pg::Connection owner_;
  pg::Connection app_;  // tenant-scoped writes, as the API makes them
  redis::Client redis_;
  Process relay_;
};

}  // namespace hi::test
