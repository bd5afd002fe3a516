// Helpers of the consumer tests: events written to the outbox and published as the relay
// publishes them, worker child processes, and the expected portfolio computed from scratch.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "core/process.h"
#include "pg/connection.h"
#include "redis/client.h"
#include "support/servers.h"

namespace hi::test {

struct TestEvent {
  std::string id;
  std::string tenant_id;
  std::string user_id;
  std::string kind;
  std::int64_t seq = 0;
};

// Appends `count` outbox events for `user` of `tenant` (one transaction); ids and seqs.
std::vector<TestEvent> outbox_events(pg::Connection& app, const std::string& tenant,
                                     const std::string& user, int count,
                                     const std::string& kind = "miner.added");

// An event that is not in the outbox (a user the database does not know, a bench event).
TestEvent synthetic_event(const std::string& tenant, const std::string& user, std::int64_t seq,
                          const std::string& kind = "miner.added");

// The message the relay would publish for `e` (envelope, key, headers id/kind/tenant_id).
bus::Message relay_message(const TestEvent& e);

// XADDs the relay message of every event to its topic (events.<prefix>), pipelined.
void publish(redis::Client& redis, const std::vector<TestEvent>& events);

// Starts `hashinsight worker <name>` against the test servers; output appended to log_path.
Process start_worker(const std::string& name, const std::string& log_path,
                     const std::vector<std::string>& args = {},
                     const std::vector<std::string>& env = {});

// Runs `hashinsight <args>` to completion against the test servers.
CommandResult run_cli(const std::vector<std::string>& args,
                      const std::vector<std::string>& env = {});

// Gives `user` of `tenant` `rows` active user_miners rows (models 1.., quantity 1..).
void give_miners(pg::Connection& owner, const std::string& tenant, const std::string& user,
                 int rows);

// Empties what the consumer tests write (inbox, DLQ, portfolios, miners, outbox, audit log)
// and flushes Redis.
void reset_consumer_state(pg::Connection& owner, redis::Client& redis);

// Inbox rows of a consumer.
std::int64_t inbox_rows(pg::Connection& owner, const std::string& consumer);

// Checks (gtest assertions) that every user_portfolio row of `tenant` equals a recalculation
// from scratch of the current tables. Returns the number of rows checked.
int expect_portfolios_match_recalculation(pg::Connection& app, const std::string& tenant);

// Adds a user_miners row and its `miner.added` event in one transaction of `tenant`, as the
// API does; returns the event.
TestEvent add_miner_with_event(pg::Connection& app, const std::string& tenant,
                               const std::string& user, int model_id, int quantity);

// XADDs one entry with exactly these bytes (fields key, value, then the headers).
void xadd_raw(redis::Client& redis, const std::string& stream, const std::string& key,
              const std::string& value, const bus::Headers& headers);

// Entries of `stream` delivered to `group` and not acknowledged (XPENDING).
std::int64_t pending_entries(redis::Client& redis, const std::string& stream,
                             const std::string& group);

// Independent of the worker's code: a user's active units and power (kW) summed by SQL over
// the raw user_miners rows and miner_models.
struct RawHoldings {
  std::int64_t units = 0;
  double power_kw = 0;
};
RawHoldings raw_holdings(pg::Connection& owner, const std::string& user);

// What every consumer test starts from: the seed (once per program), no slots, no consumer
// state, an owner and a tenant-scoped app connection, a Redis client, and worker child
// processes (`procs_`) that TearDown stops with SIGTERM, expecting status 0.
class ConsumerFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // The log of procs_[i].
  std::string log(std::size_t i) const;
  // Starts `hashinsight worker <name>` with worker_args_ + `args`; returns its index in procs_.
  // `wait`: until it says it is consuming.
  std::size_t worker(const std::string& name, std::vector<std::string> args = {},
                     const std::vector<std::string>& env = {}, bool wait = true);
  // The first column of the first row of `sql` run by the owner; -1 for none or NULL.
  std::int64_t scalar(const std::string& sql, const pg::Params& params = {});
  // Whether `key` holds a cache entry a reader would serve (not missing, not a tombstone).
  bool cached(const std::string& key);

  // Fast retries and polls for tests; fixtures add their own.
  std::vector<std::string> worker_args_ = {"--retry-backoff-ms", "20", "--poll-ms", "200"};
  TempDir tmp_;
  pg::Connection owner_;
  pg::Connection app_;
  redis::Client redis_;
  std::vector<Process> procs_;
};

}  // namespace hi::test
