// The relay against real PostgreSQL and Redis: routing and envelopes, completeness under
// concurrent writers, a bus outage, table capture, the polling fallback and the heartbeat.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "pg/transaction.h"
#include "schema/outbox.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::eventually;
using test::read_stream;
using test::TestServers;

class RelayTest : public test::RelayFixture {
 protected:
  void start(std::vector<std::string> env = {}, std::vector<std::string> args = {}) {
    relay_ = test::start_relay(env, log_, args);
    ASSERT_TRUE(eventually(
        [&] {
          return log_text().find("streaming") != std::string::npos ||
                 log_text().find("polling the outbox") != std::string::npos;
        },
        std::chrono::seconds(30)))
        << log_text();
  }
  std::size_t stream_len(const std::string& s) {
    auto r = redis_.command({"XLEN", s});
    return r.ok() ? static_cast<std::size_t>(r->integer) : 0;
  }
};

TEST_F(RelayTest, RoutesEachKindWithKeyHeadersAndEnvelope) {
  start();
  const auto miner = test::write_events(app_, "101", "miner.added", 1, R"({"model_id":7,"qty":2})");
  test::write_events(app_, "101", "treasury.trade_executed", 1);
  test::write_events(app_, "102", "ops.schedule_created", 1);
  test::write_events(app_, "103", "crm.customer_created", 1);
  test::write_events(app_, "104", "weather.changed", 1);
  ASSERT_TRUE(eventually([&] { return stream_len("events.dlq") == 1; })) << log_text();
  ASSERT_TRUE(eventually([&] { return stream_len("events.crm") == 1; }));
  EXPECT_EQ(stream_len("events.treasury"), 1u);
  EXPECT_EQ(stream_len("events.ops"), 1u);

  auto entries = read_stream(redis_, "events.miner");
  ASSERT_EQ(entries.size(), 1u);
  const auto& d = entries[0];
  EXPECT_EQ(d.key, "101");
  EXPECT_EQ(test::header(d, "id"), miner[0]);
  EXPECT_EQ(test::header(d, "kind"), "miner.added");
  EXPECT_EQ(test::header(d, "tenant_id"), "1");
  const json env = json::parse(d.value);
  EXPECT_EQ(env["id"], miner[0]);
  EXPECT_EQ(env["kind"], "miner.added");
  EXPECT_EQ(env["tenant_id"], "1");
  EXPECT_EQ(env["user_id"], "101");
  EXPECT_TRUE(env["entity_id"].is_null());
  EXPECT_EQ(env["seq"].get<int>(), 1);
  EXPECT_EQ(env["payload"], json::parse(R"({"model_id":7,"qty":2})"));
  EXPECT_TRUE(std::regex_match(env["created_at"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)")))
      << env["created_at"];
  const auto& src = env["source"];
  EXPECT_TRUE(
      std::regex_match(src["commit_lsn"].get<std::string>(), std::regex(R"([0-9A-F]+/[0-9A-F]+)")));
  EXPECT_EQ(src["ordinal"].get<int>(), 1);
  EXPECT_GT(src["xid"].get<long>(), 0);
  EXPECT_TRUE(src.contains("commit_ts"));

  auto unknown = read_stream(redis_, "events.dlq");
  ASSERT_EQ(unknown.size(), 1u);
  EXPECT_NE(test::header(unknown[0], "reason").find("weather.changed"), std::string::npos);
}

TEST_F(RelayTest, InsertThenDeleteInOneTransactionStillPublishes) {
  start();
  std::string id;
  {
    pg::Transaction tx(app_);
    ASSERT_TRUE(tx.begin("1"));
    auto ev = schema::append_event(
        app_, {"1", "105", "miner.added", "m-1", "{}", std::nullopt, std::nullopt});
    ASSERT_TRUE(ev.ok());
    id = ev->id;
    ASSERT_TRUE(app_.exec("DELETE FROM event_outbox WHERE id = $1", {id}).ok());
    ASSERT_TRUE(app_.exec("UPDATE event_outbox SET processed = true").ok());
    ASSERT_TRUE(tx.commit());
  }
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") == 1; })) << log_text();
  auto e = read_stream(redis_, "events.miner");
  EXPECT_EQ(test::header(e[0], "id"), id);
  EXPECT_EQ(json::parse(e[0].value)["entity_id"], "m-1");
  // Nothing else appears for the delete.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(stream_len("events.miner"), 1u);
}

TEST_F(RelayTest, DebeziumFormatPutsPayloadInValueAndIdInHeader) {
  start({"RELAY_FORMAT=debezium", "RELAY_ROUTES=miner=outbox.event.miner"});
  const auto ids = test::write_events(app_, "106", "miner.added", 1, R"({"a":1})");
  ASSERT_TRUE(eventually([&] { return stream_len("outbox.event.miner") == 1; })) << log_text();
  auto e = read_stream(redis_, "outbox.event.miner");
  EXPECT_EQ(e[0].key, "106");
  EXPECT_EQ(json::parse(e[0].value), json::parse(R"({"a":1})"));
  EXPECT_EQ(test::header(e[0], "id"), ids[0]);
  EXPECT_EQ(test::header(e[0], "eventType"), "miner.added");
  EXPECT_EQ(stream_len("events.miner"), 0u);
}

TEST_F(RelayTest, EventsWrittenBeforeTheSlotExistedArePublishedOnFirstStart) {
  const auto early = test::write_events(app_, "107", "miner.added", 25);
  start();
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") == 25; })) << log_text();
  const auto later = test::write_events(app_, "107", "miner.added", 5);
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") == 30; })) << log_text();
  std::set<std::string> seen;
  for (const auto& d : read_stream(redis_, "events.miner")) seen.insert(test::header(d, "id"));
  for (const auto& id : early) EXPECT_TRUE(seen.contains(id));
  for (const auto& id : later) EXPECT_TRUE(seen.contains(id));
}

TEST_F(RelayTest, HundredThousandEventsFromEightWritersArriveComplete) {
  start();
  constexpr int kWriters = 8, kPerWriter = 12500, kPerTx = 50;
  const auto written = test::write_concurrently(kWriters, kPerWriter, kPerTx, "w", 7);
  ASSERT_TRUE(
      eventually([&] { return stream_len("events.miner") >= 100000; }, std::chrono::seconds(120)))
      << stream_len("events.miner") << "\n"
      << log_text();
  auto entries = read_stream(redis_, "events.miner");
  std::set<std::string> seen;
  std::map<std::string, long> last_seq;
  for (const auto& d : entries) {
    seen.insert(test::header(d, "id"));
    // A user's events keep their commit order: seq strictly increases per key.
    const long seq = json::parse(d.value)["seq"].get<long>();
    EXPECT_GT(seq, last_seq[d.key]) << d.key;
    last_seq[d.key] = seq;
  }
  for (const auto& w : written) {
    ASSERT_EQ(w.size(), static_cast<std::size_t>(kPerWriter));
    for (const auto& id : w) ASSERT_TRUE(seen.contains(id)) << "missing " << id;
  }
  EXPECT_EQ(entries.size(), 100000u) << "no duplicates without a crash";
}

TEST_F(RelayTest, RedisOutageStallsTheSlotAndResumesWithoutLoss) {
  start({"RELAY_HEARTBEAT_MS=0"});
  auto before = test::write_events(app_, "108", "miner.added", 10);
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") == 10; })) << log_text();
  ASSERT_TRUE(
      eventually([&] { return test::confirmed_flush(owner_, "hashinsight_outbox") > pg::Lsn{0}; }));
  TestServers::get().stop_redis();
  auto during = test::write_events(app_, "108", "miner.added", 200);
  const pg::Lsn after_write =
      *pg::Lsn::parse(owner_.exec("SELECT pg_current_wal_lsn()::text")->text(0, 0));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  // The slot did not move past the transaction the bus has not acknowledged (other WAL, such
  // as autovacuum's, may be confirmed before it).
  const pg::Lsn at_outage = test::confirmed_flush(owner_, "hashinsight_outbox");
  EXPECT_LT(at_outage, after_write);
  EXPECT_TRUE(relay_.running()) << log_text();
  TestServers::get().start_redis();
  auto r = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(r.ok());
  redis_ = std::move(*r);
  ASSERT_TRUE(
      eventually([&] { return stream_len("events.miner") >= 210; }, std::chrono::seconds(30)))
      << log_text();
  std::set<std::string> seen;
  for (const auto& d : read_stream(redis_, "events.miner")) seen.insert(test::header(d, "id"));
  for (const auto& id : before) EXPECT_TRUE(seen.contains(id));
  for (const auto& id : during) EXPECT_TRUE(seen.contains(id));
  EXPECT_TRUE(eventually(
      [&] { return test::confirmed_flush(owner_, "hashinsight_outbox") >= after_write; }));
  EXPECT_NE(log_text().find("redis unreachable"), std::string::npos);
}

TEST_F(RelayTest, HeartbeatAdvancesTheSlotWhileCapturedTablesAreIdle) {
  ASSERT_TRUE(owner_.exec("CREATE TABLE IF NOT EXISTS busy_other (id bigserial, v text)").ok());
  start({"RELAY_HEARTBEAT_MS=200"});
  const pg::Lsn first = test::confirmed_flush(owner_, "hashinsight_outbox");
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        owner_
            .exec(
                "INSERT INTO busy_other (v) SELECT repeat('x', 1000) FROM generate_series(1, 200)")
            .ok());
  }
  auto current = owner_.exec("SELECT pg_current_wal_lsn()::text");
  const pg::Lsn written = *pg::Lsn::parse(current->text(0, 0));
  EXPECT_TRUE(
      eventually([&] { return test::confirmed_flush(owner_, "hashinsight_outbox") >= written; },
                 std::chrono::seconds(15)))
      << "slot stuck at " << test::confirmed_flush(owner_, "hashinsight_outbox").to_string()
      << " (started at " << first.to_string() << ", WAL at " << written.to_string() << ")";
}

TEST_F(RelayTest, StatusIsPublishedForTheHealthApi) {
  start();
  test::write_events(app_, "109", "miner.added", 3);
  ASSERT_TRUE(eventually([&] {
    auto r = redis_.command({"HGET", "hi:status:relay", "events_acked"});
    return r.ok() && r->str == "3";
  })) << log_text();
  auto all = redis_.command({"HGETALL", "hi:status:relay"});
  ASSERT_TRUE(all.ok());
  std::map<std::string, std::string> fields;
  for (std::size_t i = 0; i + 1 < all->elements.size(); i += 2) {
    fields[all->elements[i].str] = all->elements[i + 1].str;
  }
  EXPECT_EQ(fields["slot"], "hashinsight_outbox");
  EXPECT_EQ(fields["wal_status"], "reserved");
  EXPECT_EQ(fields["bus"], "redis");
  EXPECT_FALSE(fields["last_ack_at"].empty());
  auto metrics = redis_.command({"GET", "hi:metrics:relay"});
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->str.find("hashinsight_relay_events_total{topic=\"events.miner\"} 3"),
            std::string::npos)
      << metrics->str;
  EXPECT_NE(metrics->str.find("hashinsight_relay_commit_to_ack_seconds_count 3"),
            std::string::npos);
}

TEST_F(RelayTest, CapturesTableChangesWithToastMarkersAndSchemaChanges) {
  ASSERT_TRUE(owner_
                  .exec("DROP TABLE IF EXISTS captured; CREATE TABLE captured (id int PRIMARY KEY, "
                        "name text, big text, n int, flag boolean, doc jsonb)")
                  .ok());
  ASSERT_TRUE(owner_.exec("ALTER TABLE captured ALTER COLUMN big SET STORAGE EXTERNAL").ok());
  test::capture_tables(owner_, {"public.captured"});
  start({"RELAY_CAPTURE_TABLES=public.captured"});
  const std::string big(20000, 'b');
  ASSERT_TRUE(
      owner_.exec("INSERT INTO captured VALUES (1, 'one', $1, 10, true, '{\"k\":1}')", {big}).ok());
  ASSERT_TRUE(owner_.exec("UPDATE captured SET n = 11 WHERE id = 1").ok());  // big unchanged
  ASSERT_TRUE(owner_.exec("ALTER TABLE captured ADD COLUMN extra text").ok());
  ASSERT_TRUE(
      owner_.exec("INSERT INTO captured VALUES (2, 'two', NULL, NULL, false, NULL, 'new')").ok());
  ASSERT_TRUE(owner_.exec("ALTER TABLE captured REPLICA IDENTITY FULL").ok());
  ASSERT_TRUE(owner_.exec("UPDATE captured SET name = 'uno' WHERE id = 1").ok());
  ASSERT_TRUE(owner_.exec("DELETE FROM captured WHERE id = 2").ok());
  ASSERT_TRUE(owner_.exec("TRUNCATE captured").ok());
  ASSERT_TRUE(eventually([&] { return stream_len("cdc.public.captured") == 6; })) << log_text();
  auto e = read_stream(redis_, "cdc.public.captured");
  std::vector<json> v;
  for (const auto& d : e) v.push_back(json::parse(d.value));
  // insert
  EXPECT_EQ(v[0]["op"], "c");
  EXPECT_EQ(v[0]["after"]["id"], 1);
  EXPECT_EQ(v[0]["after"]["flag"], true);
  EXPECT_EQ(v[0]["after"]["doc"], json::parse(R"({"k":1})"));
  EXPECT_EQ(v[0]["after"]["big"].get<std::string>().size(), big.size());
  EXPECT_EQ(e[0].key, R"({"id":1})");
  EXPECT_EQ(test::header(e[0], "id"), v[0]["source"]["commit_lsn"].get<std::string>() + ":" +
                                          std::to_string(v[0]["source"]["ordinal"].get<int>()));
  // update with the TOAST column unchanged: not null, but named as unchanged
  EXPECT_EQ(v[1]["op"], "u");
  EXPECT_EQ(v[1]["after"]["n"], 11);
  EXPECT_FALSE(v[1]["after"].contains("big"));
  EXPECT_EQ(v[1]["unchanged"], json::array({"big"}));
  EXPECT_TRUE(v[1]["before"].is_null());
  // the column added mid-stream
  EXPECT_EQ(v[2]["op"], "c");
  EXPECT_EQ(v[2]["after"]["extra"], "new");
  EXPECT_TRUE(v[2]["after"]["big"].is_null());
  // update under REPLICA IDENTITY FULL carries the old row
  EXPECT_EQ(v[3]["op"], "u");
  EXPECT_EQ(v[3]["before"]["name"], "one");
  EXPECT_EQ(v[3]["after"]["name"], "uno");
  // ... and is keyed by the primary key still (REPLICA IDENTITY FULL flags every column as the
  // key: keyed by them, one row's changes would spread over a topic's partitions)
  EXPECT_EQ(e[3].key, R"({"id":1})");
  // delete and truncate
  EXPECT_EQ(v[4]["op"], "d");
  EXPECT_EQ(v[4]["before"]["id"], 2);
  EXPECT_EQ(v[4]["before"]["name"], "two");
  EXPECT_EQ(e[4].key, R"({"id":2})");
  EXPECT_TRUE(v[4]["after"].is_null());
  EXPECT_EQ(v[5]["op"], "t");
  EXPECT_EQ(v[5]["source"]["table"], "public.captured");
}

// With a tiny logical_decoding_work_mem the server streams large transactions before they
// commit (protocol 2): the relay publishes a committed one whole and in order, nothing of an
// aborted one, and nothing of a rolled-back subtransaction.
TEST_F(RelayTest, StreamedLargeTransactionsPublishOnlyWhatCommitted) {
  ASSERT_TRUE(owner_.exec("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'").ok());
  ASSERT_TRUE(owner_.exec("SELECT pg_reload_conf()").ok());
  struct Restore {
    pg::Connection& c;
    ~Restore() {
      (void)c.exec("ALTER SYSTEM RESET logical_decoding_work_mem");
      (void)c.exec("SELECT pg_reload_conf()");
    }
  } restore{owner_};
  start();
  EXPECT_NE(log_text().find("v2 streaming"), std::string::npos) << log_text();
  const std::string insert =
      "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
      "SELECT $1::text || g, 1, 'miner.added', 'stream-user', ('{\"pad\":\"' || repeat('x', 200) "
      "|| "
      "'\"}')::jsonb, g FROM generate_series(1, $2::int) g";
  {  // aborted: nothing may appear
    pg::Transaction tx(owner_);
    ASSERT_TRUE(tx.begin());
    auto r = owner_.exec(insert, {std::string("aborted-"), std::string("3000")});
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_TRUE(tx.rollback());
  }
  {  // committed, with a rolled-back subtransaction in the middle
    pg::Transaction tx(owner_);
    ASSERT_TRUE(tx.begin());
    ASSERT_TRUE(owner_.exec(insert, {std::string("kept-a-"), std::string("2000")}).ok());
    ASSERT_TRUE(owner_.exec("SAVEPOINT s1").ok());
    ASSERT_TRUE(owner_.exec(insert, {std::string("dropped-"), std::string("1500")}).ok());
    ASSERT_TRUE(owner_.exec("ROLLBACK TO SAVEPOINT s1").ok());
    ASSERT_TRUE(owner_.exec(insert, {std::string("kept-b-"), std::string("2000")}).ok());
    ASSERT_TRUE(tx.commit());
  }
  const auto small = test::write_events(app_, "after-stream", "miner.added", 3);
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") >= 4003; })) << log_text();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto entries = read_stream(redis_, "events.miner");
  EXPECT_EQ(entries.size(), 4003u);
  int kept = 0;
  std::string first_commit_lsn;
  for (const auto& d : entries) {
    const std::string id = test::header(d, "id");
    EXPECT_EQ(id.find("aborted-"), std::string::npos) << id;
    EXPECT_EQ(id.find("dropped-"), std::string::npos) << id;
    if (id.rfind("kept-", 0) == 0) {
      ++kept;
      const json env = json::parse(d.value);
      // One transaction: one commit LSN, ordinals counting up.
      if (first_commit_lsn.empty()) first_commit_lsn = env["source"]["commit_lsn"];
      EXPECT_EQ(env["source"]["commit_lsn"], first_commit_lsn);
    }
  }
  EXPECT_EQ(kept, 4000);
  EXPECT_TRUE(eventually([&] {
    auto r = redis_.command({"HGET", "hi:status:relay", "streamed_transactions"});
    return r && r->type == redis::Reply::Type::kString && r->str == "1";
  })) << "the committed transaction did not arrive streamed";
  EXPECT_EQ(test::header(entries.front(), "id"), "kept-a-1");
  EXPECT_EQ(test::header(entries[3999], "id"), "kept-b-2000");
}

// A slot whose WAL was removed (max_slot_wal_keep_size) stops the relay with an error naming
// the way out; it is not recreated silently. --recreate-slot recreates it and republishes the
// outbox from a snapshot.
TEST_F(RelayTest, InvalidatedSlotFailsLoudlyUntilExplicitlyRecreated) {
  start();
  const auto before = test::write_events(app_, "lost-user", "miner.added", 5);
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") == 5; })) << log_text();
  relay_.signal(SIGTERM);
  ASSERT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_ = Process();
  ASSERT_TRUE(owner_.exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'").ok());
  ASSERT_TRUE(owner_.exec("SELECT pg_reload_conf()").ok());
  struct Restore {
    pg::Connection& c;
    ~Restore() {
      (void)c.exec("ALTER SYSTEM RESET max_slot_wal_keep_size");
      (void)c.exec("SELECT pg_reload_conf()");
    }
  } restore{owner_};
  const auto missed = test::write_events(app_, "lost-user", "miner.added", 5);
  ASSERT_TRUE(owner_.exec("CREATE TABLE IF NOT EXISTS wal_filler (v text)").ok());
  ASSERT_TRUE(eventually(
      [&] {
        (void)owner_.exec(
            "INSERT INTO wal_filler SELECT repeat('w', 1000) FROM generate_series(1, 3000)");
        (void)owner_.exec("SELECT pg_switch_wal()");
        (void)owner_.exec("CHECKPOINT");
        auto r = owner_.exec(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'hashinsight_outbox'");
        return r && !r->empty() && r->text(0, 0) == "lost";
      },
      std::chrono::seconds(60)));

  auto failed = test::start_relay({}, log_ + ".lost");
  const auto status = failed.wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << "the relay kept running on a lost slot";
  EXPECT_NE(*status, 0);
  std::ifstream in(log_ + ".lost");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("invalidated"), std::string::npos) << text;
  EXPECT_NE(text.find("--recreate-slot"), std::string::npos) << text;
  auto still = owner_.exec(
      "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'hashinsight_outbox'");
  ASSERT_EQ(still->rows(), 1);
  EXPECT_EQ(still->text(0, 0), "lost") << "the slot was recreated without being asked";

  start({}, {"--recreate-slot"});
  // Everything in the outbox is republished, the missed events included.
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") >= 15; })) << log_text();
  std::set<std::string> seen;
  for (const auto& d : read_stream(redis_, "events.miner")) seen.insert(test::header(d, "id"));
  for (const auto& id : missed) EXPECT_TRUE(seen.contains(id)) << id;
  for (const auto& id : before) EXPECT_TRUE(seen.contains(id)) << id;
}

TEST_F(RelayTest, RetentionDeletesRelayedRowsPastTheirAge) {
  start({"OUTBOX_RETENTION_HOURS=24"});
  auto old = owner_.exec(
      "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq, created_at) "
      "SELECT 'old-' || g, 1, 'miner.added', 'ret', '{}', g, now() - interval '3 days' "
      "FROM generate_series(1, 30) g");
  ASSERT_TRUE(old.ok()) << old.error().message;
  const auto fresh = test::write_events(app_, "ret", "miner.added", 4);
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") == 34; })) << log_text();
  ASSERT_TRUE(eventually([&] {
    auto r = owner_.exec("SELECT count(*) FROM event_outbox WHERE id LIKE 'old-%'");
    return r && r->int64(0, 0) == 0;
  })) << log_text();
  auto left = owner_.exec("SELECT count(*) FROM event_outbox");
  EXPECT_EQ(left->int64(0, 0), 4) << "rows younger than the retention stay";
}

// Under logical replication nobody listens, so writers do not notify; a poller switches the
// outbox's trigger on (as the relay role, through hi_outbox_notify) and from then on they do.
TEST_F(RelayTest, OutboxInsertsNotifyOnlyOnceAPollerSwitchedItOn) {
  ASSERT_TRUE(owner_.exec("SELECT hi_outbox_notify(false)").ok());
  auto listener = TestServers::get().owner();
  ASSERT_TRUE(listener.listen("hi_outbox").ok());
  auto trigger = [&] {
    auto r = owner_.exec(
        "SELECT t.tgenabled::text || '/' || s.value FROM pg_trigger t, relay_settings s "
        "WHERE t.tgname = 'event_outbox_notify' AND s.name = 'outbox_notify'");
    return r && !r->empty() ? std::string(r->text(0, 0)) : "";
  };
  EXPECT_EQ(trigger(), "D/off");
  test::write_events(app_, "111", "miner.added", 1);
  auto quiet = listener.wait_notification(std::chrono::milliseconds(300));
  ASSERT_TRUE(quiet.ok());
  EXPECT_FALSE(quiet->has_value()) << "an insert notified with no poller";

  start({"RELAY_MODE=poll"});
  EXPECT_EQ(trigger(), "O/on");
  test::write_events(app_, "111", "miner.added", 1);
  auto woken = listener.wait_notification(std::chrono::seconds(10));
  ASSERT_TRUE(woken.ok());
  EXPECT_TRUE(woken->has_value()) << "an insert did not notify the pollers";
  ASSERT_TRUE(owner_.exec("SELECT hi_outbox_notify(false)").ok());
  EXPECT_EQ(trigger(), "D/off");
}

TEST_F(RelayTest, PollModeWithTwoPollersPublishesEachEventOnce) {
  // Each claim is held 50 ms (a failpoint), so neither poller can drain the outbox alone
  // before the other claims: both must take rows, and SKIP LOCKED must keep them apart.
  const std::vector<std::string> env = {"RELAY_MODE=poll", "RELAY_POLL_BATCH=50",
                                        "HI_FAILPOINTS=poll.after_claim=sleep(50)"};
  start(env);
  Process second = test::start_relay(env, log_ + ".2");
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(log_ + ".2");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("polling the outbox") != std::string::npos;
  }));
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    auto batch = test::write_events(app_, "110", "miner.added", 50);
    ids.insert(ids.end(), batch.begin(), batch.end());
  }
  ASSERT_TRUE(eventually([&] { return stream_len("events.miner") >= 2000; })) << log_text();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto entries = read_stream(redis_, "events.miner");
  std::map<std::string, int> count;
  for (const auto& d : entries) ++count[test::header(d, "id")];
  for (const auto& id : ids) EXPECT_EQ(count[id], 1) << id;
  auto left = owner_.exec("SELECT count(*) FROM event_outbox WHERE NOT processed");
  EXPECT_EQ(left->int64(0, 0), 0);
  // Both claimed rows (SKIP LOCKED shares the work; neither waited behind the other's
  // locks): each says at its stop how many events it published, and the two add up.
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_.signal(SIGTERM);
  EXPECT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_ = Process();
  auto published = [](const std::string& path) -> long {
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find("poller stopped");
    if (at == std::string::npos) return -1;
    const auto n = text.find("published", at);
    return std::stol(text.substr(text.find_first_of("0123456789", n)));
  };
  const long first = published(log_), other = published(log_ + ".2");
  EXPECT_GT(first, 0) << log_text();
  EXPECT_GT(other, 0) << "the second poller published nothing";
  EXPECT_EQ(first + other, static_cast<long>(ids.size()));
}

}  // namespace
}  // namespace hi
