// The consumers under faults, against real PostgreSQL and Redis (and librdkafka's mock cluster
// where the bus is Kafka), the workers as child processes.
//
// Expected values come from SQL over the raw rows (user_miners, consumer_inbox, event_dlq) and
// from Redis itself, never from the worker's own code paths.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "schema/seed.h"
#include "support/consume_helpers.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::eventually;
using test::TestServers;

constexpr const char* kGroup = "portfolio-recalc-group";

class ConsumeFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    owner_ = TestServers::get().owner();
    static bool seeded = false;
    if (!seeded) {
      auto s = schema::seed(owner_, Logger("test"));
      ASSERT_TRUE(s.ok()) << s.error().message;
      seeded = true;
    }
    auto r = redis::Client::connect(TestServers::get().redis_url());
    ASSERT_TRUE(r.ok());
    redis_ = std::move(*r);
    test::reset_relay_state(owner_, redis_);
    test::reset_consumer_state(owner_, redis_);
    app_ = TestServers::get().app();
  }
  void TearDown() override {
    for (std::size_t i = 0; i < procs_.size(); ++i) {
      if (!procs_[i].valid()) continue;
      procs_[i].signal(SIGTERM);
      auto st = procs_[i].wait_for(std::chrono::seconds(20));
      EXPECT_EQ(st.value_or(-1), 0) << test::file_text(log(i));
    }
  }
  std::string log(std::size_t i) { return tmp_.path() + "/p" + std::to_string(i) + ".log"; }
  // Starts `hashinsight worker <name>`; returns its index in procs_. `wait`: until it consumes.
  std::size_t worker(const std::string& name, std::vector<std::string> args = {},
                     const std::vector<std::string>& env = {}, bool wait = true) {
    args.insert(args.end(), {"--retry-backoff-ms", "20", "--poll-ms", "200", "--claim-idle-ms",
                             "300", "--lease-ms", "1000"});
    const std::size_t i = procs_.size();
    procs_.push_back(test::start_worker(name, log(i), args, env));
    if (wait) {
      EXPECT_TRUE(eventually([&] {
        return test::file_text(log(i)).find("consuming") != std::string::npos;
      })) << test::file_text(log(i));
    }
    return i;
  }
  // Waits for procs_[i] to crash at `point`: exit status 137 and the failpoint's own line.
  void expect_crash_at(std::size_t i, const std::string& point) {
    auto st = procs_[i].wait_for(std::chrono::seconds(30));
    ASSERT_TRUE(st.has_value()) << "no crash at " << point << "\n" << test::file_text(log(i));
    EXPECT_EQ(*st, 137) << test::file_text(log(i));
    EXPECT_NE(test::file_text(log(i)).find("failpoint " + point + ": crash (exit 137)"),
              std::string::npos)
        << test::file_text(log(i));
    procs_[i] = Process();  // reaped
  }
  std::int64_t scalar(const std::string& sql, const pg::Params& params = {}) {
    auto r = owner_.exec(sql, params);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r && !r->empty() && !r->is_null(0, 0) ? r->int64(0, 0) : -1;
  }
  bool cached(const std::string& key) {
    auto r = redis_.command({"EXISTS", key});
    return r.ok() && r->integer == 1;
  }
  // The exactly-once invariants of the portfolio group, from raw rows: every inbox row counted
  // once in events_applied, every portfolio equal to a recalculation, nothing pending.
  void expect_portfolio_invariants(std::int64_t events, const std::vector<std::string>& users) {
    EXPECT_EQ(test::inbox_rows(owner_, kGroup), events);
    EXPECT_EQ(scalar("SELECT sum(events_applied) FROM user_portfolio"), events);
    EXPECT_EQ(scalar("SELECT count(*) FROM user_portfolio p WHERE events_applied <> (SELECT "
                     "count(*) FROM consumer_inbox i JOIN event_outbox o ON o.id = i.event_id "
                     "WHERE i.consumer_name = $1 AND o.user_id = p.user_id::text)",
                     {kGroup}),
              0);
    for (const auto& u : users) {
      const test::RawHoldings raw = test::raw_holdings(owner_, u);
      auto row = owner_.exec("SELECT units, power_kw FROM user_portfolio WHERE user_id = $1", {u});
      ASSERT_TRUE(row.ok());
      ASSERT_EQ(row->rows(), 1) << u;
      EXPECT_EQ(row->int64(0, 0), raw.units) << u;
      EXPECT_NEAR(row->float64(0, 1), raw.power_kw, 1e-6) << u;
      EXPECT_FALSE(cached("user_portfolio:" + u)) << u;
    }
    EXPECT_EQ(test::pending_entries(redis_, "events.miner", kGroup), 0);
  }

  test::TempDir tmp_;
  pg::Connection owner_;
  pg::Connection app_;
  redis::Client redis_;
  std::vector<Process> procs_;
};

// ---------------------------------------------------------------------------------------------
// Messages a consumer cannot parse

TEST_F(ConsumeFaultTest, MalformedMessagesAreDeadLetteredAndTheConsumersLive) {
  test::give_miners(owner_, "1", "101", 2);
  const std::string src =
      R"("source":{"commit_lsn":"0/1","ordinal":1,"xid":3,"commit_ts":"2026-01-01T00:00:00Z"})";
  // Fields of the wrong type (nlohmann's value() throws on each); no kind header, so the
  // envelope's kind is read.
  const std::map<std::string, std::string> envelopes = {
      {"bad-kind", R"({"id":"bad-kind","kind":7,"seq":1,)" + src + "}"},
      {"bad-lsn", R"({"id":"bad-lsn","kind":"miner.added","source":{"commit_lsn":5}})"},
      {"bad-seq", R"({"id":"bad-seq","kind":"miner.added","seq":[1],)" + src + "}"},
      {"bad-source", R"({"id":"bad-source","kind":"miner.added","source":"relay"})"},
  };
  for (const auto& [id, value] : envelopes) {
    test::xadd_raw(redis_, "events.miner", "101", value, {{"id", id}, {"tenant_id", "1"}});
  }
  const auto good = test::outbox_events(app_, "1", "101", 1);
  test::publish(redis_, good);
  // Table changes for the audit worker: an op that is not a string; a source that is not an
  // object; then a good change.
  const std::string change_src =
      R"("source":{"commit_lsn":"0/2","ordinal":1,"xid":5,"table":"public.user_miners"})";
  test::xadd_raw(redis_, "cdc.public.user_miners", R"({"id":77})",
                 R"({"op":1,"after":{"id":77,"tenant_id":1},)" + change_src + "}",
                 {{"id", "0/2:1"}});
  test::xadd_raw(redis_, "cdc.public.user_miners", R"({"id":77})",
                 R"({"op":"u","before":{"id":77},"after":{"id":77,"tenant_id":1},"source":"x"})",
                 {{"id", "0/2:2"}});
  test::xadd_raw(
      redis_, "cdc.public.user_miners", R"({"id":77})",
      R"({"op":"c","before":null,"after":{"id":77,"tenant_id":1,"quantity":1},)" + change_src + "}",
      {{"id", "0/2:3"}});

  const std::size_t portfolio = worker("portfolio");
  const std::size_t audit = worker("audit", {"--topics", "cdc.public.user_miners"});
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM event_dlq WHERE consumer_name = $1", {kGroup}) == 4 &&
           scalar("SELECT count(*) FROM event_dlq WHERE consumer_name = 'audit-group'") == 2;
  })) << test::file_text(log(portfolio))
      << test::file_text(log(audit));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 1; }));
  ASSERT_TRUE(eventually([&] { return scalar("SELECT count(*) FROM change_audit_log") == 1; }));
  for (const auto& [id, value] : envelopes) {
    auto r = owner_.exec("SELECT retry_count, error FROM event_dlq WHERE event_id = $1", {id});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->rows(), 1) << id;
    EXPECT_EQ(r->int64(0, 0), 0) << id;  // not retried: it cannot be parsed
    const std::string field = id.substr(4);
    EXPECT_NE(r->text(0, 1).find(field), std::string::npos) << r->text(0, 1);
  }
  EXPECT_TRUE(procs_[portfolio].running());
  EXPECT_TRUE(procs_[audit].running());
  EXPECT_TRUE(eventually([&] {
    return test::pending_entries(redis_, "events.miner", kGroup) == 0 &&
           test::pending_entries(redis_, "cdc.public.user_miners", "audit-group") == 0;
  }));
  expect_portfolio_invariants(1, {"101"});
}

}  // namespace
}  // namespace hi
