// The consumer runtime and the portfolio worker against real PostgreSQL and Redis Streams:
// duplicates, two workers in one group, the fencing token, poison events through the DLQ and
// replay.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "consume/fenced_lock.h"
#include "consume/portfolio_worker.h"
#include "pg/transaction.h"
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

class ConsumeTest : public test::ConsumerFixture {
 protected:
  void start_workers(int n, const std::vector<std::string>& args = {}) {
    for (int i = 0; i < n; ++i) worker("portfolio", args);
  }
  std::string status_field(const std::string& field) {
    auto r = redis_.command({"HGET", std::string("hi:status:consumer:") + kGroup, field});
    return r && r->type == redis::Reply::Type::kString ? r->str : "";
  }
};

TEST_F(ConsumeTest, SameEventDeliveredTenTimesIsAppliedOnce) {
  test::give_miners(owner_, "1", "101", 3);
  const auto events = test::outbox_events(app_, "1", "101", 1);
  ASSERT_EQ(events.size(), 1u);
  test::publish(redis_, std::vector<test::TestEvent>(10, events[0]));
  start_workers(1);
  ASSERT_TRUE(eventually([&] { return status_field("duplicates") == "9"; }))
      << test::file_text(log(0));
  EXPECT_EQ(status_field("applied"), "1");
  EXPECT_EQ(test::inbox_rows(owner_, kGroup), 1);
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 101"), 1);
  EXPECT_EQ(scalar("SELECT through_seq FROM user_portfolio WHERE user_id = 101"), events[0].seq);
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 1);
  // Nothing left pending in the group.
  auto pending = redis_.command({"XPENDING", "events.miner", kGroup});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements[0].integer, 0);
}

TEST_F(ConsumeTest, PortfolioRowCarriesSourceAndCacheIsInvalidatedWithNotice) {
  test::give_miners(owner_, "2", "201", 2);
  ASSERT_TRUE(redis_.command({"SET", "user_portfolio:201", "stale"}).ok());
  auto sub = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(sub->command({"SUBSCRIBE", "hi:portfolio:2"}).ok());
  const auto events = test::outbox_events(app_, "2", "201", 3);
  test::publish(redis_, events);
  start_workers(1);
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 3; }));
  auto row = owner_.exec(
      "SELECT tenant_id, through_seq, events_applied, source_event_id, source_lsn, "
      "fencing_token, computed_at IS NOT NULL FROM user_portfolio WHERE user_id = 201");
  ASSERT_TRUE(row.ok());
  ASSERT_EQ(row->rows(), 1);
  EXPECT_EQ(row->int64(0, 0), 2);
  EXPECT_EQ(row->int64(0, 1), events.back().seq);
  EXPECT_EQ(row->int64(0, 2), 3);
  EXPECT_EQ(row->text(0, 3), events.back().id);
  EXPECT_EQ(row->text(0, 4), "0/16B3748");
  EXPECT_GT(row->int64(0, 5), 0);
  // The cached entry is replaced by a tombstone at the row's through_seq (right after the
  // commit the inbox count already shows: wait for it).
  const std::string tombstone =
      "{\"through_seq\":" + std::to_string(events.back().seq) + ",\"invalidated\":true}";
  EXPECT_TRUE(eventually([&] {
    return redis_.command({"GET", "user_portfolio:201"})->str == tombstone;
  })) << redis_.command({"GET", "user_portfolio:201"})->str;
  // The change notice (published right after the commit; a PING reads what arrived first).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  sub->set_timeout(std::chrono::seconds(5));
  auto msg = sub->command(std::vector<std::string>{"PING"});  // reads the next push (message)
  ASSERT_TRUE(msg.ok());
  ASSERT_GE(msg->elements.size(), 3u);
  EXPECT_EQ(msg->elements[0].str, "message");
  const json notice = json::parse(msg->elements[2].str);
  EXPECT_EQ(notice["user_id"], "201");
  EXPECT_EQ(notice["tenant_id"], "2");
  EXPECT_EQ(notice["through_seq"].get<std::int64_t>(), events.back().seq);
}

// --linger-ms: events that arrive within the linger after a batch's first one are applied in
// the same batch; without it each is applied as it comes.
TEST_F(ConsumeTest, LingerGathersEventsArrivingCloseTogetherIntoOneBatch) {
  test::give_miners(owner_, "1", "102", 1);
  test::give_miners(owner_, "1", "104", 1);
  std::int64_t expected_rows = 0;
  for (const char* linger : {"0", "3000"}) {
    const std::string user = linger == std::string("0") ? "102" : "104";
    const std::size_t w =
        worker("portfolio", {"--linger-ms", linger, "--instance", std::string("linger-") + linger});
    // The status hash is the group's: wait for this worker's own (the previous one's final
    // status stays for 60 s).
    ASSERT_TRUE(
        eventually([&] { return status_field("consumer") == std::string("linger-") + linger; }));
    const std::int64_t batches_before = std::stoll("0" + status_field("batches"));
    ASSERT_EQ(batches_before, 0);
    // Four events 200 ms apart: all within 3 s of the first, none within 0 ms of another.
    for (int i = 0; i < 4; ++i) {
      test::publish(redis_, test::outbox_events(app_, "1", user, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    expected_rows += 4;
    ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == expected_rows; }))
        << test::file_text(log(w));
    // The status hash is written once a second.
    std::int64_t batches = 0;
    ASSERT_TRUE(eventually([&] {
      auto now = status_field("applied");
      batches = std::stoll("0" + status_field("batches")) - batches_before;
      return now == "4" && batches > 0;
    }));
    if (linger == std::string("0")) {
      EXPECT_GE(batches, 2) << "events 200 ms apart were applied together without a linger";
    } else {
      EXPECT_EQ(batches, 1) << "events within the linger were applied in several batches";
    }
    procs_[w].signal(SIGTERM);
    EXPECT_EQ(procs_[w].wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  }
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 104"), 4);
}

TEST_F(ConsumeTest, TwoWorkersInOneGroupApplyEveryEventExactlyOnce) {
  const std::vector<std::pair<std::string, std::string>> users = {
      {"1", "101"}, {"1", "102"}, {"1", "103"}, {"1", "104"}, {"1", "105"},
      {"2", "201"}, {"2", "202"}, {"2", "203"}, {"2", "204"}, {"2", "205"}};
  for (const auto& [t, u] : users) test::give_miners(owner_, t, u, 4);
  start_workers(2, {"--batch-size", "64"});
  std::int64_t total = 0;
  std::map<std::string, std::int64_t> last_seq;
  for (int round = 0; round < 20; ++round) {
    std::vector<test::TestEvent> batch;
    if (round == 10) {
      // The state changes mid-stream as a bulk import changes it: rows of several models and
      // one event that names none of them.
      test::give_miners(owner_, "1", "103", 2);
      auto bulk = test::outbox_events(app_, "1", "103", 1, "miner.bulk_imported");
      batch.insert(batch.end(), bulk.begin(), bulk.end());
      total += 1;
    }
    for (const auto& [t, u] : users) {
      auto ev = test::outbox_events(app_, t, u, 10);
      last_seq[u] = ev.back().seq;
      batch.insert(batch.end(), ev.begin(), ev.end());
    }
    // Some events twice, as a relay restart would.
    batch.insert(batch.end(), batch.begin(), batch.begin() + 7);
    test::publish(redis_, batch);
    total += 100;
  }
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == total; },
                         std::chrono::seconds(60)))
      << test::inbox_rows(owner_, kGroup);
  ASSERT_TRUE(eventually([&] {
    auto p = redis_.command({"XPENDING", "events.miner", kGroup});
    return p.ok() && p->elements[0].integer == 0;
  }));
  EXPECT_EQ(scalar("SELECT sum(events_applied) FROM user_portfolio"), total);
  for (const auto& [u, seq] : last_seq) {
    EXPECT_EQ(scalar("SELECT through_seq FROM user_portfolio WHERE user_id = $1", {u}), seq) << u;
  }
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 5);
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "2"), 5);
  // Both members took part.
  EXPECT_NE(test::file_text(log(0)).find("consuming"), std::string::npos);
  auto consumers = redis_.command({"XINFO", "CONSUMERS", "events.miner", kGroup});
  ASSERT_TRUE(consumers.ok());
  EXPECT_EQ(consumers->elements.size(), 2u);
}

// A member restarted under the same name (as `up` restarts its workers) takes back a lock its
// dead previous process held, with a higher token; another member, even one whose name starts
// with the same letters, still finds it held.
TEST_F(ConsumeTest, ALockLeftByThisMembersPreviousProcessIsTakenOver) {
  const std::chrono::seconds lease(30);
  consume::FencedLocks previous("member-a", lease);
  auto t1 = previous.try_acquire(redis_, {"105"});
  ASSERT_TRUE(t1.ok()) << t1.error().message;
  ASSERT_GT((*t1)[0], 0);
  for (const char* other : {"member-b", "member-a2", "member"}) {
    consume::FencedLocks o(other, lease);
    auto t = o.try_acquire(redis_, {"105"});
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)[0], 0) << other << " took a lock member-a holds";
  }
  consume::FencedLocks restarted("member-a", lease);
  auto t2 = restarted.try_acquire(redis_, {"105"});
  ASSERT_TRUE(t2.ok());
  EXPECT_GT((*t2)[0], (*t1)[0]);
  EXPECT_EQ(redis_.command({"GET", consume::lock_key("105")})->str,
            "member-a:" + std::to_string((*t2)[0]));
  // The previous process's release (had it lived) no longer removes it.
  ASSERT_TRUE(previous.release(redis_, {"105"}, *t1).ok());
  EXPECT_EQ(redis_.command({"EXISTS", consume::lock_key("105")})->integer, 1);
}

TEST_F(ConsumeTest, LockHolderPausedBeyondItsLeaseIsFencedOff) {
  test::give_miners(owner_, "1", "104", 1);
  // The stalled holder: takes the lock with a short lease and reads the state.
  consume::FencedLocks stalled("stalled-holder", std::chrono::milliseconds(200));
  auto t1 = stalled.try_acquire(redis_, {"104"});
  ASSERT_TRUE(t1.ok());
  ASSERT_GT((*t1)[0], 0);
  consume::TenantBatch batch;
  batch.tenant_id = "1";
  const auto stale_event = test::synthetic_event("1", "104", 1);
  consume::Event ev{stale_event.id, "miner.added", "1", "104", 1, "0/1", nullptr};
  batch.users.push_back({"104", (*t1)[0], {&ev}});
  std::vector<consume::PortfolioRow> stale_rows;
  {
    pg::Transaction tx(app_);
    ASSERT_TRUE(tx.begin("1").ok());
    auto rows = consume::recalculate_rows(app_, batch);
    ASSERT_TRUE(rows.ok()) << rows.error().message;
    stale_rows = *rows;
    ASSERT_TRUE(tx.commit().ok());
  }
  // ... and stalls past its lease. Meanwhile the state changes and a worker recalculates.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  test::give_miners(owner_, "1", "104", 3);
  start_workers(1);
  const auto fresh = test::outbox_events(app_, "1", "104", 1);
  test::publish(redis_, fresh);
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 1; }));
  const std::int64_t stored =
      scalar("SELECT fencing_token FROM user_portfolio WHERE user_id = 104");
  EXPECT_GT(stored, (*t1)[0]);
  const std::int64_t units = scalar("SELECT units FROM user_portfolio WHERE user_id = 104");

  // The stalled holder wakes up and writes with its old token: rejected.
  {
    pg::Transaction tx(app_);
    ASSERT_TRUE(tx.begin("1").ok());
    auto w = consume::write_rows(app_, "1", stale_rows);
    ASSERT_TRUE(w.ok()) << w.error().message;
    EXPECT_TRUE(w->written.empty());
    ASSERT_EQ(w->fenced.size(), 1u);
    EXPECT_EQ(w->fenced[0].first, "104");
    EXPECT_EQ(w->fenced[0].second, stored);
    ASSERT_TRUE(tx.commit().ok());
  }
  EXPECT_EQ(scalar("SELECT units FROM user_portfolio WHERE user_id = 104"), units);
  EXPECT_EQ(scalar("SELECT fencing_token FROM user_portfolio WHERE user_id = 104"), stored);
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 104"), 1);
  // Its release does not free the lock someone else may hold now.
  auto released = stalled.release(redis_, {"104"}, *t1);
  ASSERT_TRUE(released.ok());
  EXPECT_EQ(*released, 0);

  // The worker sends the write with its COMMIT in one round trip. Fenced off, the whole
  // transaction must roll back: an inbox row written before it must not be kept without its
  // effect.
  consume::PortfolioHandler handler;
  ASSERT_TRUE(handler.prepare(app_).ok());  // the statements a worker's connection has
  ASSERT_TRUE(app_.exec("BEGIN").ok());
  ASSERT_TRUE(app_.exec("SELECT set_config('app.tenant_id', '1', true)").ok());
  ASSERT_TRUE(app_.exec("INSERT INTO consumer_inbox (consumer_name, event_id, tenant_id) "
                        "VALUES ('fence-test', 'fenced-event', 1)")
                  .ok());
  auto w = consume::write_rows(app_, "1", stale_rows, /*prepared=*/true, /*commit=*/true);
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_TRUE(w->ended);
  EXPECT_FALSE(app_.in_transaction());
  EXPECT_TRUE(w->written.empty());
  ASSERT_EQ(w->fenced.size(), 1u);
  EXPECT_EQ(w->fenced[0].first, "104");
  EXPECT_EQ(w->fenced[0].second, stored);
  EXPECT_EQ(scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = 'fenced-event'"), 0);
  EXPECT_EQ(scalar("SELECT units FROM user_portfolio WHERE user_id = 104"), units);

  // With a current token the same round trip writes and commits.
  auto current = stale_rows;
  current[0].fencing_token = stored + 1;
  ASSERT_TRUE(app_.exec("BEGIN").ok());
  ASSERT_TRUE(app_.exec("SELECT set_config('app.tenant_id', '1', true)").ok());
  ASSERT_TRUE(app_.exec("INSERT INTO consumer_inbox (consumer_name, event_id, tenant_id) "
                        "VALUES ('fence-test', 'current-event', 1)")
                  .ok());
  w = consume::write_rows(app_, "1", current, /*prepared=*/true, /*commit=*/true);
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_TRUE(w->ended);
  EXPECT_FALSE(app_.in_transaction());
  EXPECT_TRUE(w->fenced.empty());
  ASSERT_EQ(w->written.size(), 1u);
  EXPECT_EQ(scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = 'current-event'"), 1);
  EXPECT_EQ(scalar("SELECT fencing_token FROM user_portfolio WHERE user_id = 104"), stored + 1);
}

TEST_F(ConsumeTest, FenceCounterLostInRedisIsRepairedAndWritesContinue) {
  test::give_miners(owner_, "1", "105", 1);
  start_workers(1);
  test::publish(redis_, test::outbox_events(app_, "1", "105", 1));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 1; }));
  ASSERT_TRUE(
      owner_.exec("UPDATE user_portfolio SET fencing_token = 1000 WHERE user_id = 105").ok());
  test::publish(redis_, test::outbox_events(app_, "1", "105", 1));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 2; }))
      << test::file_text(log(0));
  EXPECT_GT(scalar("SELECT fencing_token FROM user_portfolio WHERE user_id = 105"), 1000);
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 105"), 2);
}

TEST_F(ConsumeTest, PoisonEventIsDeadLetteredWhileOthersFlowAndReplayAppliesItOnce) {
  for (const char* u : {"101", "102"}) test::give_miners(owner_, "1", u, 2);
  start_workers(1, {"--max-attempts", "3"});
  // User 1999 does not exist: its recalculation fails until the user is created.
  auto poison = test::synthetic_event("1", "1999", 1);
  std::vector<test::TestEvent> batch = test::outbox_events(app_, "1", "101", 5);
  batch.push_back(poison);
  auto more = test::outbox_events(app_, "1", "102", 5);
  batch.insert(batch.end(), more.begin(), more.end());
  test::publish(redis_, batch);

  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM event_dlq WHERE event_id = $1", {poison.id}) == 1;
  })) << test::file_text(log(0));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 10; }));
  auto row = owner_.exec(
      "SELECT consumer_name, kind, tenant_id, user_id, retry_count, error, topic, "
      "replayed_at IS NULL FROM event_dlq WHERE event_id = $1",
      {poison.id});
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->text(0, 0), kGroup);
  EXPECT_EQ(row->text(0, 1), "miner.added");
  EXPECT_EQ(row->int64(0, 2), 1);
  EXPECT_EQ(row->text(0, 3), "1999");
  EXPECT_EQ(row->int64(0, 4), 3);
  EXPECT_NE(row->text(0, 5).find("1999"), std::string::npos);
  EXPECT_EQ(row->text(0, 6), "events.miner");
  EXPECT_TRUE(row->boolean(0, 7));
  // The events.dlq message (published after the row commits).
  ASSERT_TRUE(eventually([&] { return !test::read_stream(redis_, "events.dlq").empty(); }));
  auto dlq = test::read_stream(redis_, "events.dlq");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(test::header(dlq[0], "id"), poison.id);
  EXPECT_EQ(test::header(dlq[0], "consumer"), kGroup);
  EXPECT_EQ(test::header(dlq[0], "tenant_id"), "1");
  EXPECT_FALSE(test::header(dlq[0], "error").empty());
  EXPECT_EQ(scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = $1", {poison.id}), 0);
  // Later events keep flowing.
  test::publish(redis_, test::outbox_events(app_, "1", "101", 2));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 12; }));

  // dlq stats
  auto stats = test::run_cli({"dlq", "stats"});
  ASSERT_EQ(stats.status, 0) << stats.output;
  const json s = json::parse(stats.output);
  EXPECT_EQ(s["parked"], 1);
  ASSERT_EQ(s["consumers"].size(), 1u);
  EXPECT_EQ(s["consumers"][0]["consumer"], kGroup);
  EXPECT_EQ(s["consumers"][0]["kind"], "miner.added");
  EXPECT_FALSE(s["oldest"].is_null());

  // --dry-run changes nothing.
  const auto stream_before = test::read_stream(redis_, "events.miner").size();
  auto dry = test::run_cli({"dlq", "replay", "--hours", "1", "--dry-run"});
  ASSERT_EQ(dry.status, 0) << dry.output;
  const json d = json::parse(dry.output);
  EXPECT_EQ(d["dry_run"], true);
  EXPECT_EQ(d["selected"], 1);
  EXPECT_EQ(d["replayed"], 0);
  EXPECT_EQ(d["events"][0]["event_id"], poison.id);
  EXPECT_EQ(test::read_stream(redis_, "events.miner").size(), stream_before);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE replayed_at IS NULL"), 1);

  // Fix the cause, replay: applied exactly once.
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO users (id, tenant_id, email, display_name) "
                        "VALUES (1999, 1, 'late@acme.example', 'Late User') ON CONFLICT DO NOTHING")
                  .ok());
  auto rep = test::run_cli({"dlq", "replay", "--hours", "1"});
  ASSERT_EQ(rep.status, 0) << rep.output;
  const json rj = json::parse(rep.output);
  EXPECT_EQ(rj["replayed"], 1);
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = $1", {poison.id}) == 1;
  })) << test::file_text(log(0));
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 1999") == 1;
  }));
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE replayed_at IS NOT NULL"), 1);
  auto again = test::run_cli({"dlq", "replay", "--hours", "1"});
  EXPECT_EQ(json::parse(again.output)["selected"], 0);

  // Re-publishing an already applied event leaves it applied once.
  ASSERT_TRUE(owner_.exec("UPDATE event_dlq SET replayed_at = NULL").ok());
  auto twice = test::run_cli({"dlq", "replay", "--hours", "1"});
  ASSERT_EQ(json::parse(twice.output)["replayed"], 1);
  ASSERT_TRUE(eventually([&] {
    auto p = redis_.command({"XPENDING", "events.miner", kGroup});
    return p.ok() && p->elements[0].integer == 0 && status_field("duplicates") == "1";
  }));
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 1999"), 1);
  ASSERT_TRUE(owner_.exec("DELETE FROM user_portfolio WHERE user_id = 1999").ok());
  ASSERT_TRUE(owner_.exec("DELETE FROM users WHERE id = 1999").ok());
}

// A worker prepares its reads when it starts, often while user_miners is nearly empty, and a
// prepared statement keeps the plan made then. However the table grows after, a batch reads
// the rows of its users and no others. (The plan a long-running worker settles on is the
// generic one: forced here. The empty table is a temporary one of this connection, which
// shadows the shared table.)
TEST(PortfolioInputs, ReadsOnlyTheBatchsUsersWhateverTheTableWasWhenPrepared) {
  auto owner = TestServers::get().owner();
  ASSERT_TRUE(schema::seed(owner, Logger("test")).ok());  // the models and a network snapshot
  auto app = TestServers::get().app();
  ASSERT_TRUE(app.exec_script("CREATE TEMP TABLE user_miners (LIKE public.user_miners INCLUDING "
                              "DEFAULTS INCLUDING INDEXES);"
                              "ALTER TABLE user_miners ENABLE ROW LEVEL SECURITY;"
                              "ALTER TABLE user_miners FORCE ROW LEVEL SECURITY;"
                              "CREATE POLICY tenant ON user_miners USING (tenant_id = "
                              "NULLIF(current_setting('app.tenant_id', true), '')::bigint)")
                  .ok());
  ASSERT_TRUE(app.exec("SET plan_cache_mode = force_generic_plan").ok());
  consume::ReferenceCache reference;
  ASSERT_TRUE(consume::prepare_inputs(app, reference).ok());
  {
    // Then 40 users of tenant 1 gain 50 rows each.
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("1").ok());
    ASSERT_TRUE(app.exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) "
                         "SELECT 1, 900000 + g % 40, 1, 1 FROM generate_series(1, $1::int) g",
                         {"2000"})
                    .ok());
    ASSERT_TRUE(tx.commit().ok());
  }
  pg::Transaction tx(app);
  ASSERT_TRUE(tx.begin("1").ok());
  auto in = consume::load_inputs(app, {"900007", "900008"}, &reference);
  ASSERT_TRUE(in.ok()) << in.error().message;
  // Each user's 50 rows of one unit of model 1 at the user's price come summed: one row of 50.
  for (const char* user : {"900007", "900008"}) {
    ASSERT_EQ(in->holdings[user].size(), 1u) << user;
    EXPECT_EQ(in->holdings[user][0].quantity, 50) << user;
  }
  // Rows this transaction read from the table, by any plan: the two users' 100.
  auto read = app.exec(
      "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM "
      "pg_stat_xact_user_tables WHERE relid = 'user_miners'::regclass AND $1::int = 1",
      {"1"});
  ASSERT_TRUE(read.ok()) << read.error().message;
  ASSERT_EQ(read->rows(), 1);
  EXPECT_EQ(read->int64(0, 0), 100);
}

// The rows come summed per (model, electricity price), active ones only, and value the same
// as the rows one by one: the reference is mining::recalculate_portfolio over the raw rows.
TEST(PortfolioInputs, SumsActiveRowsPerModelAndPriceAndValuesThemAsTheRows) {
  auto owner = TestServers::get().owner();
  ASSERT_TRUE(schema::seed(owner, Logger("test")).ok());
  ASSERT_TRUE(
      owner
          .exec_script(
              "INSERT INTO users (id, tenant_id, email, display_name, electricity_price_usd_kwh) "
              "VALUES (900101, 1, 'sum@example.test', 'Sum', 0.07) ON CONFLICT DO NOTHING;"
              "DELETE FROM user_miners WHERE user_id = 900101;"
              "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, "
              "electricity_price_usd_kwh, status) VALUES "
              "(1, 900101, 1, 3, NULL, 'active'), (1, 900101, 1, 4, NULL, 'active'), "
              "(1, 900101, 1, 2, 0.05, 'active'), (1, 900101, 1, 6, 0.05, 'active'), "
              "(1, 900101, 2, 5, NULL, 'active'), (1, 900101, 2, 9, NULL, 'inactive'), "
              "(1, 900101, 3, 8, NULL, 'maintenance'), "
              // Two rows whose sum passes the 100,000,000 units one valuation takes.
              "(1, 900101, 4, 60000000, NULL, 'active'), "
              "(1, 900101, 4, 70000000, NULL, 'active')")
          .ok());
  auto app = TestServers::get().app();
  pg::Transaction tx(app);
  ASSERT_TRUE(tx.begin("1").ok());
  auto in = consume::load_inputs(app, {"900101"});
  ASSERT_TRUE(in.ok()) << in.error().message;
  std::vector<std::tuple<std::int64_t, std::int64_t, double>> got;
  for (const auto& m : in->holdings["900101"]) {
    EXPECT_EQ(m.status, mining::kActiveStatus);
    got.emplace_back(m.miner_model_id, m.quantity, m.electricity_usd_per_kwh.value_or(-1));
  }
  std::sort(got.begin(), got.end());
  // By hand: model 1 at the user's price 3 + 4, at 0.05 2 + 6; model 2 the active 5; model 3
  // none; model 4 130,000,000 in parts of at most 100,000,000.
  const std::vector<std::tuple<std::int64_t, std::int64_t, double>> want = {
      {1, 7, -1}, {1, 8, 0.05}, {2, 5, -1}, {4, 30000000, -1}, {4, 100000000, -1}};
  EXPECT_EQ(got, want);

  // The raw rows, valued one by one.
  auto raw = app.exec(
      "SELECT model_id, quantity, electricity_price_usd_kwh::float8, status FROM user_miners "
      "WHERE user_id = 900101 ORDER BY id");
  ASSERT_TRUE(raw.ok()) << raw.error().message;
  std::vector<mining::UserMiner> rows;
  for (int i = 0; i < raw->rows(); ++i) {
    mining::UserMiner m;
    m.miner_model_id = raw->int64(i, 0);
    m.quantity = raw->int64(i, 1);
    if (!raw->is_null(i, 2)) m.electricity_usd_per_kwh = raw->float64(i, 2);
    m.status = std::string(raw->text(i, 3));
    rows.push_back(m);
  }
  auto want_p = mining::recalculate_portfolio(rows, in->models, in->snapshot, 0.07, in->options);
  ASSERT_TRUE(want_p.ok()) << want_p.error().message;
  auto got_p = consume::portfolio_of(*in, "900101", in->snapshot);
  ASSERT_TRUE(got_p.ok()) << got_p.error().message;
  EXPECT_EQ(got_p->totals.units, want_p->totals.units);
  EXPECT_NEAR(got_p->totals.hashrate_ths, want_p->totals.hashrate_ths,
              1e-9 * want_p->totals.hashrate_ths);
  EXPECT_NEAR(got_p->totals.power_kw, want_p->totals.power_kw, 1e-9 * want_p->totals.power_kw);
  EXPECT_NEAR(got_p->totals.cost_usd_per_day, want_p->totals.cost_usd_per_day,
              1e-9 * want_p->totals.cost_usd_per_day);
  EXPECT_NEAR(got_p->totals.profit_usd_per_day, want_p->totals.profit_usd_per_day,
              1e-9 * std::abs(want_p->totals.profit_usd_per_day));
  ASSERT_EQ(got_p->by_model.size(), want_p->by_model.size());
  for (std::size_t i = 0; i < want_p->by_model.size(); ++i) {
    EXPECT_EQ(got_p->by_model[i].model_id, want_p->by_model[i].model_id);
    EXPECT_EQ(got_p->by_model[i].figures.units, want_p->by_model[i].figures.units);
  }
}

// A batch reads again only the models its events name, and takes the user's other models from
// the sums stored with the portfolio while those were read whole within kHoldingsMaxAge; an
// event that names no model, or older sums, make it read every row of the user.
TEST(PortfolioHoldings, ReadsOnlyTheChangedModelsWhileTheStoredSumsAreRecent) {
  auto owner = TestServers::get().owner();
  ASSERT_TRUE(schema::seed(owner, Logger("test")).ok());
  ASSERT_TRUE(
      owner
          .exec_script(
              "INSERT INTO users (id, tenant_id, email, display_name, electricity_price_usd_kwh) "
              "VALUES (900201, 1, 'reuse@example.test', 'Reuse', 0.06) ON CONFLICT DO NOTHING;"
              "DELETE FROM user_miners WHERE user_id = 900201;"
              "DELETE FROM user_portfolio WHERE user_id = 900201;"
              "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) VALUES "
              "(1, 900201, 1, 2), (1, 900201, 1, 3), (1, 900201, 1, 4), "
              "(1, 900201, 2, 5), (1, 900201, 2, 6), (1, 900201, 3, 7);"
              // Stored sums that differ from the rows, so that the test sees which were used:
              // model 2 at 999 units, no model 3.
              "INSERT INTO user_portfolio (tenant_id, user_id, holdings, holdings_read_at) "
              "VALUES (1, 900201, '[[1,null,1],[2,null,999]]', now())")
          .ok());
  auto app = TestServers::get().app();
  consume::PortfolioHandler handler;
  ASSERT_TRUE(handler.prepare(app).ok());  // the statements load_batch_inputs() runs
  consume::ReferenceCache reference;
  reference.prepared = true;

  bus::Delivery added, status;
  added.value = R"({"kind":"miner.added","payload":{"model_id":1,"quantity":4}})";
  status.value = R"({"kind":"miner.status_changed","payload":{"miner_id":1,"to":"active"}})";
  consume::Event added_ev{"e1", "miner.added", "1", "900201", 1, "0/1", &added};
  consume::Event status_ev{"e2", "miner.status_changed", "1", "900201", 2, "0/1", &status};
  // Units per model as loaded, and the user_miners rows the transaction read.
  auto load = [&](const consume::Event& ev) {
    std::map<std::int64_t, std::int64_t> units;
    std::int64_t rows_read = -1;
    bool reused = false;
    // The counts accumulate until the backend reports them (never inside a transaction).
    auto count = [&] {
      auto r = app.exec(
          "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM "
          "pg_stat_xact_user_tables WHERE relid = 'user_miners'::regclass AND $1::int = 1",
          {"1"});
      return r.ok() && r->rows() == 1 ? r->int64(0, 0) : std::int64_t{-1};
    };
    pg::Transaction tx(app);
    EXPECT_TRUE(tx.begin("1").ok());
    const std::int64_t before = count();
    consume::TenantBatch batch;
    batch.tenant_id = "1";
    batch.users = {{"900201", 1, {&ev}}};
    auto in = consume::load_batch_inputs(app, batch, reference);
    EXPECT_TRUE(in.ok()) << in.error().message;
    if (in.ok()) {
      for (const auto& m : in->holdings["900201"]) units[m.miner_model_id] += m.quantity;
      reused = in->reused.contains("900201");
    }
    rows_read = count() - before;
    EXPECT_TRUE(tx.commit().ok());
    return std::tuple{units, rows_read, reused};
  };

  // Model 1 from its three rows (2 + 3 + 4), model 2 as stored, model 3 unknown to the sums.
  auto [units, read, reused] = load(added_ev);
  EXPECT_EQ(units, (std::map<std::int64_t, std::int64_t>{{1, 9}, {2, 999}}));
  EXPECT_EQ(read, 3);
  EXPECT_TRUE(reused);

  // A status change names no model: every row, summed (model 2: 5 + 6).
  std::tie(units, read, reused) = load(status_ev);
  EXPECT_EQ(units, (std::map<std::int64_t, std::int64_t>{{1, 9}, {2, 11}, {3, 7}}));
  EXPECT_EQ(read, 6);
  EXPECT_FALSE(reused);

  // Sums read whole longer ago than kHoldingsMaxAge are not trusted either.
  ASSERT_TRUE(owner
                  .exec("UPDATE user_portfolio SET holdings_read_at = now() - $1::interval "
                        "WHERE user_id = 900201",
                        {std::to_string(consume::kHoldingsMaxAge.count() + 1) + " seconds"})
                  .ok());
  std::tie(units, read, reused) = load(added_ev);
  EXPECT_EQ(units, (std::map<std::int64_t, std::int64_t>{{1, 9}, {2, 11}, {3, 7}}));
  // Model 1's 3 rows, read in the same round trip as the sums before they were found old,
  // then all 6.
  EXPECT_EQ(read, 3 + 6);
  EXPECT_FALSE(reused);
}

}  // namespace
}  // namespace hi
