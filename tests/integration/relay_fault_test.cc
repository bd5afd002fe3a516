// The relay's faults, each provoked on purpose: a stop or a crash (failpoints) in the middle of
// the first backfill, after the bus acknowledged events but before the LSN was confirmed, in
// the middle of replaying a large streamed transaction; a replay longer than the server's
// wal_sender_timeout; a bus that refuses writes permanently. After each, a plain restart must
// bring every committed outbox event to the bus at least once.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "pg/transaction.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using test::eventually;
using test::read_stream;
using test::TestServers;

class RelayFaultTest : public test::RelayFixture {
 protected:
  bool logged(const std::string& text) const { return log_text().find(text) != std::string::npos; }
  // Starts the relay and waits until it streams.
  void start_streaming(std::vector<std::string> env = {}) {
    relay_ = test::start_relay(env, log_);
    ASSERT_TRUE(eventually([&] { return logged("streaming"); })) << log_text();
  }
  // Runs the relay with `failpoints` until it crashes there: exit status 137 and the
  // failpoint's own line in its log prove where it died.
  void crash_at(const std::string& failpoints, const std::string& point) {
    Process relay = test::start_relay({"HI_FAILPOINTS=" + failpoints}, log_);
    auto status = relay.wait_for(std::chrono::seconds(60));
    ASSERT_TRUE(status.has_value()) << "the relay did not crash at " << point << "\n" << log_text();
    EXPECT_EQ(*status, 137) << log_text();
    EXPECT_TRUE(logged("failpoint " + point + ": crash (exit 137)")) << log_text();
  }
  std::set<std::string> ids_on(const std::string& stream) {
    std::set<std::string> ids;
    for (const auto& d : read_stream(redis_, stream)) ids.insert(test::header(d, "id"));
    return ids;
  }
  // Waits until every id in `expected` is on events.miner (generous: Redis reloading its AOF
  // after a kill on a loaded machine, or the sanitizer build, can take a while).
  void expect_all_delivered(const std::vector<std::string>& expected) {
    const bool all = eventually(
        [&] {
          const auto seen = ids_on("events.miner");
          for (const auto& id : expected) {
            if (!seen.contains(id)) return false;
          }
          return true;
        },
        std::chrono::seconds(180));
    const auto seen = ids_on("events.miner");
    std::size_t missing = 0;
    for (const auto& id : expected) missing += seen.contains(id) ? 0 : 1;
    EXPECT_TRUE(all) << missing << " of " << expected.size() << " events never reached the bus\n"
                     << log_text();
  }
  std::string backfill_marker() {
    auto r =
        owner_.exec("SELECT value FROM relay_settings WHERE name = 'backfill:hashinsight_outbox'");
    return r && !r->empty() ? std::string(r->text(0, 0)) : "";
  }
};

// The first backfill publishes 2,000 rows per batch; the failpoint holds the relay after the
// first batch while it is asked to stop. The backfill is not finished, so its marker must stay
// pending and the next start must publish every row that existed before the slot.
TEST_F(RelayFaultTest, StopDuringTheFirstBackfillLeavesItPendingAndLosesNothing) {
  const auto early = test::write_events(app_, "201", "miner.added", 4500);
  Process relay = test::start_relay({"HI_FAILPOINTS=relay.mid_backfill=1*sleep(1500)"}, log_);
  ASSERT_TRUE(eventually([&] { return logged("failpoint relay.mid_backfill: sleep"); }))
      << log_text();
  relay.signal(SIGTERM);
  auto status = relay.wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0) << log_text();
  EXPECT_EQ(backfill_marker(), "pending") << log_text();

  start_streaming();
  expect_all_delivered(early);
  EXPECT_EQ(backfill_marker(), "done");
}

TEST_F(RelayFaultTest, CrashInTheMiddleOfTheFirstBackfillIsRedoneOnRestart) {
  const auto early = test::write_events(app_, "202", "miner.added", 4500);
  crash_at("relay.mid_backfill=2*crash", "relay.mid_backfill");
  EXPECT_EQ(backfill_marker(), "pending");
  start_streaming();
  expect_all_delivered(early);
  const auto late = test::write_events(app_, "202", "miner.added", 10);
  expect_all_delivered(late);
}

// Events acknowledged by the bus whose LSN was not yet confirmed are sent again after the
// crash: duplicates are allowed (consumers deduplicate), losses are not.
TEST_F(RelayFaultTest, CrashAfterTheBusAckBeforeTheConfirmReplaysWithoutLoss) {
  start_streaming();
  relay_.signal(SIGTERM);  // the slot exists now; the next run streams from the WAL
  ASSERT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_ = Process();
  // The walsender applies the stopped relay's last status as it exits: read the position after.
  ASSERT_TRUE(eventually([&] {
    auto r = owner_.exec("SELECT count(*) FROM pg_replication_slots WHERE active");
    return r && r->int64(0, 0) == 0;
  }));
  const pg::Lsn before = test::confirmed_flush(owner_, "hashinsight_outbox");
  // The events' transaction commits after this position.
  const pg::Lsn written_after =
      *pg::Lsn::parse(owner_.exec("SELECT pg_current_wal_lsn()::text")->text(0, 0));
  const auto ids = test::write_events(app_, "203", "miner.added", 50);
  crash_at("relay.after_bus_ack=crash", "relay.after_bus_ack");
  // Their transaction was not confirmed: the crash came between the bus ack and the confirm
  // (an earlier, empty transaction may have been).
  EXPECT_LE(test::confirmed_flush(owner_, "hashinsight_outbox"), written_after);
  start_streaming();
  expect_all_delivered(ids);
  EXPECT_TRUE(
      eventually([&] { return test::confirmed_flush(owner_, "hashinsight_outbox") > before; }));
}

// A large transaction streamed before its commit (protocol 2) is replayed from its spill
// file at Stream Commit; a crash in the middle of that replay publishes it again whole.
class StreamedRelayFaultTest : public RelayFaultTest {
 protected:
  void SetUp() override {
    RelayFaultTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(owner_.exec("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'").ok());
    ASSERT_TRUE(owner_.exec("SELECT pg_reload_conf()").ok());
  }
  void TearDown() override {
    RelayFaultTest::TearDown();
    (void)owner_.exec("ALTER SYSTEM RESET logical_decoding_work_mem");
    (void)owner_.exec("ALTER SYSTEM RESET wal_sender_timeout");
    (void)owner_.exec("SELECT pg_reload_conf()");
  }
  // One transaction of `rows` outbox rows with ids "<prefix><n>".
  std::vector<std::string> write_large(const std::string& prefix, int rows) {
    auto r = owner_.exec(
        "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
        "SELECT $1::text || g, 1, 'miner.added', 'big-user', "
        "('{\"pad\":\"' || repeat('x', 200) || '\"}')::jsonb, g "
        "FROM generate_series(1, $2::int) g",
        {prefix, std::to_string(rows)});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    std::vector<std::string> ids;
    for (int i = 1; i <= rows; ++i) ids.push_back(prefix + std::to_string(i));
    return ids;
  }
  std::int64_t streamed_transactions() {
    auto r = redis_.command({"HGET", "hi:status:relay", "streamed_transactions"});
    return r && r->type == redis::Reply::Type::kString ? std::stoll(r->str) : 0;
  }
};

TEST_F(StreamedRelayFaultTest, CrashInTheMiddleOfAStreamedReplayPublishesItAgainWhole) {
  start_streaming();
  relay_.signal(SIGTERM);
  ASSERT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_ = Process();
  const auto ids = write_large("replay-", 12000);
  crash_at("relay.mid_stream_replay=2*crash", "relay.mid_stream_replay");
  start_streaming();
  expect_all_delivered(ids);
  EXPECT_TRUE(eventually([&] { return streamed_transactions() == 1; }));
}

// The replay of a streamed transaction reads nothing from the server. With wal_sender_timeout
// at 2 s and the replay held 0.6 s every 4,096 changes (about 4 s in all), the relay must
// keep sending standby status, or the walsender times out, the connection drops and the whole
// transaction is sent and published again.
TEST_F(StreamedRelayFaultTest, AReplayLongerThanTheWalSenderTimeoutKeepsItsConnection) {
  ASSERT_TRUE(owner_.exec("ALTER SYSTEM SET wal_sender_timeout = '2s'").ok());
  ASSERT_TRUE(owner_.exec("SELECT pg_reload_conf()").ok());
  start_streaming({"HI_FAILPOINTS=relay.mid_stream_replay=sleep(600)"});
  const auto ids = write_large("slow-", 30000);
  expect_all_delivered(ids);
  EXPECT_TRUE(eventually([&] { return streamed_transactions() == 1; }));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_FALSE(logged("replication connection lost")) << log_text();
  EXPECT_EQ(read_stream(redis_, "events.miner").size(), ids.size()) << "published twice";
}

// An outbox row the router cannot route (its payload is not a JSON object) is parked whole on
// events.dlq with the reason, in the first backfill, while streaming and in poll mode alike:
// every column of the row is there, and the events around it still flow.
TEST_F(RelayFaultTest, AnUnroutableRowIsParkedWholeInEveryMode) {
  auto insert_bad = [&](const std::string& id) {
    auto r = owner_.exec(
        "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
        "VALUES ($1, 1, 'miner.added', 'bad-user', '[1, 2]', 1)",
        {id});
    ASSERT_TRUE(r.ok()) << r.error().message;
  };
  // The parked entry of outbox row `id` (a table change: the row is under "after").
  auto parked = [&](const std::string& id) -> std::optional<bus::Delivery> {
    for (const auto& d : read_stream(redis_, "events.dlq")) {
      const auto v = nlohmann::json::parse(d.value, nullptr, false);
      if (v.is_object() && v.contains("after") && v["after"].value("id", "") == id) return d;
    }
    return std::nullopt;
  };
  auto expect_parked = [&](const std::string& id) {
    ASSERT_TRUE(eventually([&] { return parked(id).has_value(); })) << log_text();
    const bus::Delivery d = *parked(id);
    EXPECT_NE(test::header(d, "reason").find("not a JSON object"), std::string::npos);
    const auto v = nlohmann::json::parse(d.value);
    EXPECT_EQ(v["after"]["user_id"], "bad-user") << d.value;
    EXPECT_EQ(v["after"]["kind"], "miner.added") << d.value;
    // Typed where the relay knows the column type (the stream), text where it read the row
    // as text (backfill, poll mode): the same payload either way.
    auto payload = v["after"]["payload"];
    if (payload.is_string()) payload = nlohmann::json::parse(payload.get<std::string>());
    EXPECT_EQ(payload, nlohmann::json::array({1, 2})) << d.value;
  };
  insert_bad("bad-backfill");
  auto good = test::write_events(app_, "205", "miner.added", 3);
  start_streaming();
  expect_parked("bad-backfill");
  insert_bad("bad-stream");
  auto more = test::write_events(app_, "205", "miner.added", 3);
  expect_parked("bad-stream");
  good.insert(good.end(), more.begin(), more.end());
  expect_all_delivered(good);
  relay_.signal(SIGTERM);
  ASSERT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);

  (void)redis_.command({"FLUSHALL"});
  ASSERT_TRUE(owner_.exec("UPDATE event_outbox SET processed = true").ok());
  start_streaming({"RELAY_MODE=poll"});  // waits for "streaming" of the first run's log
  ASSERT_TRUE(eventually([&] { return logged("polling the outbox"); })) << log_text();
  insert_bad("bad-poll");
  auto polled = test::write_events(app_, "205", "miner.added", 3);
  expect_parked("bad-poll");
  expect_all_delivered(polled);
}

// The relay says whether the bus keeps what it acknowledges: Redis with appendfsync always
// does; with everysec an acknowledged event can be lost with the machine.
TEST_F(RelayFaultTest, TheStatusSaysWhetherTheBusIsDurable) {
  auto status = [&](const char* field) {
    auto r = redis_.command({"HGET", "hi:status:relay", field});
    return r && r->type == redis::Reply::Type::kString ? r->str : std::string();
  };
  ASSERT_TRUE(redis_.command({"CONFIG", "SET", "appendfsync", "everysec"}).ok());
  start_streaming();
  EXPECT_TRUE(eventually([&] { return status("durable") == "0"; })) << status("durability");
  EXPECT_EQ(status("durability"), "appendonly=yes appendfsync=everysec");
  EXPECT_TRUE(logged("the bus may lose acknowledged events")) << log_text();
  relay_.signal(SIGTERM);
  ASSERT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_ = Process();
  ASSERT_TRUE(redis_.command({"CONFIG", "SET", "appendfsync", "always"}).ok());
  (void)redis_.command({"DEL", "hi:status:relay"});
  start_streaming();
  EXPECT_TRUE(eventually([&] { return status("durable") == "1"; })) << status("durability");
}

// Server faults while the relay streams: each time, it resumes from the confirmed LSN and every
// committed event reaches the bus.
TEST_F(RelayFaultTest, TheWalsenderTerminatedMidStreamResumesWithoutLoss) {
  start_streaming();
  auto ids = test::write_events(app_, "206", "miner.added", 500);
  ASSERT_TRUE(owner_
                  .exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                        "WHERE slot_name = 'hashinsight_outbox' AND active")
                  .ok());
  const auto more = test::write_events(app_, "206", "miner.added", 500);
  ids.insert(ids.end(), more.begin(), more.end());
  expect_all_delivered(ids);
  EXPECT_TRUE(eventually([&] { return logged("reconnecting"); })) << log_text();
}

TEST_F(RelayFaultTest, PostgresStoppedImmediatelyAndRestartedLosesNothing) {
  start_streaming();
  auto ids = test::write_events(app_, "207", "miner.added", 2000);
  TestServers::get().restart_postgres_immediately();
  app_ = TestServers::get().app();
  owner_ = TestServers::get().owner();
  const auto more = test::write_events(app_, "207", "miner.added", 500);
  ids.insert(ids.end(), more.begin(), more.end());
  expect_all_delivered(ids);
}

// Redis killed with SIGKILL ten times while writers run and the relay has events in flight.
// Its AOF (appendfsync always) keeps every entry it acknowledged; what it did not acknowledge
// the relay sends again.
// SigIgn of /proc/PID/status: does the process ignore `signal`?
bool ignores(int pid, int signal) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("SigIgn:")) {
      const auto mask = std::stoull(line.substr(7), nullptr, 16);
      return (mask >> (signal - 1)) & 1;
    }
  }
  return false;
}

TEST_F(RelayFaultTest, RedisKilledTenTimesWithEventsInFlightLosesNothing) {
  start_streaming();
  // Redis killed while the relay writes a pipeline must be a failed write, not SIGPIPE (which
  // once ended the relay here without a word).
  EXPECT_TRUE(ignores(relay_.pid(), SIGPIPE));
  std::atomic<bool> writing{true};
  std::vector<std::string> written;
  // A bounded amount: on a loaded machine each restart (reloading the AOF) takes longer, and an
  // unbounded writer would grow the AOF every reload has to read.
  std::jthread writer([&] {
    auto conn = TestServers::get().app();
    while (writing.load() && written.size() < 4000) {
      const auto ids = test::write_events(conn, "208", "miner.added", 20);
      written.insert(written.end(), ids.begin(), ids.end());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    TestServers::get().kill_and_restart_redis();
  }
  writing.store(false);
  writer.join();
  auto fresh = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(fresh.ok());
  redis_ = std::move(*fresh);
  ASSERT_GT(written.size(), 200u);
  expect_all_delivered(written);
  EXPECT_TRUE(relay_.running()) << log_text();
}

// Four writers add events for the same user at once. The per-user sequence serialises them
// (its row lock makes seq order commit order), so the user's events reach the bus in seq
// order, each seq once.
TEST_F(RelayFaultTest, ConcurrentWritersOfOneUserKeepItsOrderOnTheBus) {
  start_streaming();
  std::vector<std::jthread> writers;
  std::atomic<int> total{0};
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&] {
      auto conn = TestServers::get().app();
      for (int i = 0; i < 50; ++i) {
        total += static_cast<int>(test::write_events(conn, "209", "miner.added", 1 + i % 3).size());
      }
    });
  }
  writers.clear();  // joins
  ASSERT_TRUE(eventually([&] {
    return static_cast<int>(read_stream(redis_, "events.miner").size()) >= total.load();
  })) << log_text();
  std::int64_t last = 0;
  int seen = 0;
  for (const auto& d : read_stream(redis_, "events.miner")) {
    if (d.key != "209") continue;
    const auto seq = nlohmann::json::parse(d.value)["seq"].get<std::int64_t>();
    EXPECT_GT(seq, last) << "seq " << seq << " after " << last;
    last = seq;
    ++seen;
  }
  EXPECT_EQ(seen, total.load());
  // Independent check: the highest seq the database handed out for the user.
  auto top =
      owner_.exec("SELECT last_seq FROM user_event_seq WHERE tenant_id = 1 AND user_id = '209'");
  ASSERT_TRUE(top.ok() && !top->empty());
  EXPECT_EQ(last, top->int64(0, 0));
}

// The relay logs in as its own role (REPLICATION, BYPASSRLS, the outbox only): it streams,
// backfills, writes heartbeats and keeps its marker without the owner's rights, and it alters
// no publication: captured tables the owner has not published stop it with the way out.
TEST_F(RelayFaultTest, TheRelayRunsAsItsOwnRoleAndCreatesNoPublication) {
  const auto early = test::write_events(app_, "210", "miner.added", 5);
  const std::string url = "RELAY_DATABASE_URL=" + test::relay_role_url();
  start_streaming({url, "RELAY_HEARTBEAT_MS=200"});
  expect_all_delivered(early);
  const auto later = test::write_events(app_, "210", "miner.added", 5);
  expect_all_delivered(later);
  EXPECT_EQ(backfill_marker(), "done");
  auto user = owner_.exec("SELECT usename FROM pg_stat_replication LIMIT 1");
  ASSERT_TRUE(user.ok() && !user->empty());
  EXPECT_EQ(user->text(0, 0), "hashinsight_relay");
  // Heartbeats from the relay's role move the slot while the outbox is idle.
  const pg::Lsn before = test::confirmed_flush(owner_, "hashinsight_outbox");
  ASSERT_TRUE(owner_.exec("CREATE TABLE IF NOT EXISTS busy (x int)").ok());
  ASSERT_TRUE(owner_.exec("INSERT INTO busy SELECT generate_series(1, 1000)").ok());
  EXPECT_TRUE(eventually([&] {
    return test::confirmed_flush(owner_, "hashinsight_outbox") > before;
  })) << log_text();
  EXPECT_FALSE(logged("permission denied")) << log_text();
  relay_.signal(SIGTERM);
  ASSERT_EQ(relay_.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  relay_ = Process();

  test::capture_tables(owner_, {});
  Process relay = test::start_relay({url, "RELAY_CAPTURE_TABLES=public.busy"}, log_);
  auto status = relay.wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << log_text();
  EXPECT_EQ(*status, 1);
  EXPECT_TRUE(logged("does not publish RELAY_CAPTURE_TABLES=public.busy")) << log_text();
  EXPECT_TRUE(logged("hashinsight migrate")) << log_text();
}

// A bus that refuses an event permanently (here Redis answers NOPERM: the relay's user may not
// write the stream) is not an outage to wait out: the relay stops with one clear error and a
// non-zero status, so its supervisor sees it, instead of reconnecting forever.
TEST_F(RelayFaultTest, APermanentBusRefusalStopsTheRelayWithOneClearError) {
  ASSERT_TRUE(redis_
                  .command({"ACL", "SETUSER", "relay-readonly", "on", ">secret", "~*", "&*",
                            "+@all", "-xadd"})
                  .ok());
  const std::string url =
      "redis://relay-readonly:secret@127.0.0.1:" + std::to_string(TestServers::get().redis_port()) +
      "/0";
  test::write_events(app_, "204", "miner.added", 3);
  Process relay = test::start_relay({"REDIS_URL=" + url}, log_);
  auto status = relay.wait_for(std::chrono::seconds(30));
  (void)redis_.command({"ACL", "DELUSER", "relay-readonly"});
  ASSERT_TRUE(status.has_value()) << "the relay kept running\n" << log_text();
  EXPECT_EQ(*status, 1) << log_text();
  EXPECT_TRUE(logged("relay stopped")) << log_text();
  EXPECT_TRUE(logged("NOPERM")) << log_text();
  EXPECT_FALSE(logged("reconnecting")) << log_text();
}

}  // namespace
}  // namespace hi
