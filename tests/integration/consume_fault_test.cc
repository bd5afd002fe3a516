// The consumers under faults, against real PostgreSQL and Redis (and librdkafka's mock cluster
// where the bus is Kafka), the workers as child processes.
//
// Expected values come from SQL over the raw rows (user_miners, consumer_inbox, event_dlq) and
// from Redis itself, never from the worker's own code paths.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "bus/kafka_mock.h"
#include "support/consume_helpers.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::eventually;
using test::TestServers;

constexpr const char* kGroup = "portfolio-recalc-group";

class ConsumeFaultTest : public test::ConsumerFixture {
 protected:
  ConsumeFaultTest() {
    worker_args_.insert(worker_args_.end(), {"--claim-idle-ms", "300", "--lease-ms", "1000"});
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
      // The invalidation and the XACK follow the commit that wrote the inbox rows.
      EXPECT_TRUE(
          eventually([&] { return !cached("user_portfolio:" + u); }, std::chrono::seconds(10)))
          << u;
    }
    EXPECT_TRUE(
        eventually([&] { return test::pending_entries(redis_, "events.miner", kGroup) == 0; },
                   std::chrono::seconds(10)))
        << test::pending_entries(redis_, "events.miner", kGroup) << " pending";
  }
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

// ---------------------------------------------------------------------------------------------
// A message that keeps killing its consumer

TEST_F(ConsumeFaultTest, MessageThatKeepsKillingItsConsumerIsParkedAfterFourCrashes) {
  test::give_miners(owner_, "1", "101", 2);
  const auto events = test::outbox_events(app_, "1", "101", 1);
  test::publish(redis_, events);
  // Every attempt at this batch ends the worker (as a segfault or the OOM killer would); the
  // harness restarts it, as `hashinsight up` does.
  int crashes = 0;
  for (int run = 0; run < 7; ++run) {
    const std::size_t i =
        worker("portfolio", {}, {"HI_FAILPOINTS=consume.after_commit=crash"}, false);
    bool parked = false;
    ASSERT_TRUE(eventually(
        [&] {
          parked = scalar("SELECT count(*) FROM event_dlq WHERE event_id = $1", {events[0].id}) > 0;
          return parked || !procs_[i].running();
        },
        std::chrono::seconds(30)))
        << test::file_text(log(i));
    if (parked) break;
    expect_crash_at(i, "consume.after_commit");
    ++crashes;
  }
  // The batch's crash, then three attempts of the message on its own.
  EXPECT_EQ(crashes, 4);
  auto row =
      owner_.exec("SELECT retry_count, error FROM event_dlq WHERE event_id = $1", {events[0].id});
  ASSERT_TRUE(row.ok());
  ASSERT_EQ(row->rows(), 1);
  EXPECT_EQ(row->int64(0, 0), 3);
  EXPECT_NE(row->text(0, 1).find("ended its consumer"), std::string::npos) << row->text(0, 1);
  ASSERT_TRUE(
      eventually([&] { return test::pending_entries(redis_, "events.miner", kGroup) == 0; }));
  // The first attempt's commit stands, once; the surviving worker is alive.
  EXPECT_EQ(test::inbox_rows(owner_, kGroup), 1);
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 101"), 1);
  EXPECT_TRUE(eventually([&] {
    auto n = redis_.command({"HLEN", std::string("hi:consume:attempts:") + kGroup});
    return n.ok() && n->integer == 0;
  }));
  EXPECT_TRUE(procs_.back().running());
}

// On Kafka nothing counts deliveries, so the runtime marks each batch's offsets in Redis while
// it works on them, and counts the attempts at offsets a dead consumer left marked. Here the
// marks say the event at offset 0 was attempted on its own three times and never finished.
TEST_F(ConsumeFaultTest, KafkaOffsetThatKeptKillingItsConsumerIsParkedUnattempted) {
  auto mock = bus::MockCluster::start(1);
  ASSERT_TRUE(mock.ok()) << mock.error().message;
  for (const auto& t : bus::standard_topics()) ASSERT_TRUE((*mock)->create_topic(t, 1, 1).ok());
  test::give_miners(owner_, "1", "101", 2);
  ASSERT_TRUE(
      redis_
          .command({"HSET", std::string("hi:consume:inflight:") + kGroup, "events.miner/0", "0-0"})
          .ok());
  ASSERT_TRUE(
      redis_
          .command({"HSET", std::string("hi:consume:attempts:") + kGroup, "events.miner/0/0", "3"})
          .ok());
  const auto events = test::outbox_events(app_, "1", "101", 2);
  {
    bus::BusOptions o;
    o.kind = bus::BusKind::kKafka;
    o.kafka_brokers = (*mock)->bootstrap();
    std::size_t delivered = 0;
    auto p = bus::make_producer(o, [&](std::uint64_t, const Status& s) {
      EXPECT_TRUE(s.ok());
      ++delivered;
    });
    ASSERT_TRUE(p.ok()) << p.error().message;
    for (const auto& e : events) ASSERT_TRUE((*p)->send(test::relay_message(e), 0).ok());
    ASSERT_TRUE(eventually([&] {
      (*p)->poll(std::chrono::milliseconds(20));
      return delivered == events.size();
    }));
  }
  const std::size_t w =
      worker("portfolio", {}, {"BUS=kafka", "KAFKA_BROKERS=" + (*mock)->bootstrap()});
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM event_dlq WHERE event_id = $1", {events[0].id}) == 1 &&
           test::inbox_rows(owner_, kGroup) == 1;
  })) << test::file_text(log(w));
  EXPECT_EQ(scalar("SELECT retry_count FROM event_dlq WHERE event_id = $1", {events[0].id}), 3);
  // Offset 0 was never attempted again; offset 1 was applied.
  EXPECT_EQ(scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = $1", {events[0].id}), 0);
  EXPECT_EQ(scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = $1", {events[1].id}), 1);
  EXPECT_TRUE(eventually([&] {
    auto a = redis_.command({"HLEN", std::string("hi:consume:attempts:") + kGroup});
    auto m = redis_.command({"HLEN", std::string("hi:consume:inflight:") + kGroup});
    return a.ok() && m.ok() && a->integer == 0 && m->integer == 0;
  }));
  procs_[w].signal(SIGTERM);
  EXPECT_EQ(procs_[w].wait_for(std::chrono::seconds(30)).value_or(-1), 0);
  procs_[w] = Process();
}

// A Kafka member whose offset commit is refused because the group moved on (a generation it no
// longer belongs to, as after max.poll.interval.ms went by during a long outage) must poll to
// rejoin: retrying the commit without polling never succeeds.
TEST_F(ConsumeFaultTest, KafkaMemberWhoseCommitIsRefusedRejoinsAndGoesOn) {
  auto mock = bus::MockCluster::start(1);
  ASSERT_TRUE(mock.ok()) << mock.error().message;
  for (const auto& t : bus::standard_topics()) ASSERT_TRUE((*mock)->create_topic(t, 1, 1).ok());
  test::give_miners(owner_, "1", "101", 2);
  bus::BusOptions o;
  o.kind = bus::BusKind::kKafka;
  o.kafka_brokers = (*mock)->bootstrap();
  std::size_t delivered = 0;
  auto p = bus::make_producer(o, [&](std::uint64_t, const Status& s) {
    EXPECT_TRUE(s.ok());
    ++delivered;
  });
  ASSERT_TRUE(p.ok()) << p.error().message;
  std::size_t sent = 0;
  auto publish = [&](const std::vector<test::TestEvent>& events) {
    for (const auto& e : events) ASSERT_TRUE((*p)->send(test::relay_message(e), 0).ok());
    sent += events.size();
    ASSERT_TRUE(eventually([&] {
      (*p)->poll(std::chrono::milliseconds(20));
      return delivered == sent;
    }));
  };
  const std::size_t w =
      worker("portfolio", {}, {"BUS=kafka", "KAFKA_BROKERS=" + (*mock)->bootstrap()});
  publish(test::outbox_events(app_, "1", "101", 1));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 1; }))
      << test::file_text(log(w));
  // The next commit is refused: the member's generation is gone.
  (*mock)->push_request_errors(bus::kafka_api::kOffsetCommit, 1, 22);  // ILLEGAL_GENERATION
  publish(test::outbox_events(app_, "1", "101", 1));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 2; }))
      << test::file_text(log(w));
  publish(test::outbox_events(app_, "1", "101", 1));
  ASSERT_TRUE(
      eventually([&] { return test::inbox_rows(owner_, kGroup) == 3; }, std::chrono::seconds(60)))
      << test::file_text(log(w));
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 101"), 3);
  procs_[w].signal(SIGTERM);
  EXPECT_EQ(procs_[w].wait_for(std::chrono::seconds(30)).value_or(-1), 0);
  procs_[w] = Process();
}

// ---------------------------------------------------------------------------------------------
// Poison the dead-letter queue itself could not store

TEST_F(ConsumeFaultTest, PoisonTheDlqCannotTypeIsParkedAndReplayedByteForByte) {
  test::give_miners(owner_, "1", "101", 2);
  struct Entry {
    std::string name;
    std::string key;
    std::string value;
    bus::Headers headers;
    std::string id;
  };
  auto envelope = [](const test::TestEvent& e) { return test::relay_message(e).value; };
  std::vector<Entry> poison;
  {
    auto e = test::synthetic_event("1", "101", 1);
    poison.push_back(
        {"tenant beyond bigint",
         "101",
         envelope(e),
         {{"id", e.id}, {"kind", "miner.added"}, {"tenant_id", "12345678901234567890"}},
         e.id});
  }
  {
    auto e = test::synthetic_event("1", "101", 1);
    poison.push_back({"key not utf-8",
                      "10\xff\x31",
                      envelope(e),
                      {{"id", e.id}, {"kind", "miner.added"}, {"tenant_id", "1"}},
                      e.id});
  }
  {
    auto e = test::synthetic_event("1", "101", 1);
    poison.push_back({"id not utf-8",
                      "101",
                      envelope(e),
                      {{"id", "ev-\xfe\xff"}, {"kind", "miner.added"}, {"tenant_id", "1"}},
                      "ev-\\xfe\\xff"});
  }
  {
    auto e = test::synthetic_event("1", "101", 1);
    poison.push_back({"header not utf-8",
                      "101",
                      envelope(e),
                      {{"id", e.id}, {"kind", "miner.\xff"}, {"tenant_id", "1"}},
                      e.id});
  }
  {
    // A NUL escape in a value of a user that does not exist (the handler fails, it is parked
    // with its value): jsonb refuses \u0000.
    auto e = test::synthetic_event("1", "1999", 1);
    json v = json::parse(envelope(e));
    v["payload"]["note"] = std::string("a\0b", 3);
    poison.push_back({"nul in value",
                      "1999",
                      v.dump(),
                      {{"id", e.id}, {"kind", "miner.added"}, {"tenant_id", "1"}},
                      e.id});
  }
  {
    // A user id of 2,500 two-byte characters: the handler's error names it, and 4,000 bytes
    // into that error falls inside a character.
    auto e = test::synthetic_event("1", "x", 1);
    std::string user;
    for (int i = 0; i < 2500; ++i) user += "\xc3\xa9";
    const std::string prefix = "event " + e.id + ": user_id '";
    if ((4000 - prefix.size()) % 2 == 0) user = "x" + user;
    e.user_id = user;
    poison.push_back({"error cut in a character",
                      user,
                      envelope(e),
                      {{"id", e.id}, {"kind", "miner.added"}, {"tenant_id", "1"}},
                      e.id});
  }
  for (const auto& p : poison) test::xadd_raw(redis_, "events.miner", p.key, p.value, p.headers);
  const auto good = test::outbox_events(app_, "1", "101", 1);
  test::publish(redis_, good);

  const std::size_t w = worker("portfolio", {"--max-attempts", "1"});
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM event_dlq") == static_cast<std::int64_t>(poison.size()) &&
           test::inbox_rows(owner_, kGroup) == 1;
  })) << test::file_text(log(w));
  ASSERT_TRUE(
      eventually([&] { return test::pending_entries(redis_, "events.miner", kGroup) == 0; }));
  for (const auto& p : poison) {
    EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE event_id = $1", {p.id}), 1) << p.name;
  }
  EXPECT_EQ(scalar("SELECT tenant_id FROM event_dlq WHERE headers::text LIKE "
                   "'%12345678901234567890%'"),
            0);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE message_key = '10\\xff1' AND raw IS NOT "
                   "NULL"),
            1);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE kind = 'miner.\\xff'"), 1);
  // The value with \u0000 is kept as a JSON string holding its text.
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE user_id = '1999' AND "
                   "jsonb_typeof(envelope) = 'string'"),
            1);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE octet_length(error) BETWEEN 3990 AND "
                   "4010"),
            1);
  expect_portfolio_invariants(1, {"101"});

  // Replay sends the original bytes (values as the same JSON: the row keeps it as jsonb).
  procs_[w].signal(SIGTERM);
  ASSERT_EQ(procs_[w].wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  procs_[w] = Process();
  const std::size_t before = test::read_stream(redis_, "events.miner").size();
  auto rep = test::run_cli({"dlq", "replay", "--hours", "1"});
  ASSERT_EQ(rep.status, 0) << rep.output;
  EXPECT_EQ(json::parse(rep.output)["replayed"], poison.size()) << rep.output;
  const auto entries = test::read_stream(redis_, "events.miner");
  ASSERT_EQ(entries.size(), before + poison.size());
  for (const auto& p : poison) {
    bool found = false;
    for (std::size_t i = before; i < entries.size() && !found; ++i) {
      const bus::Delivery& d = entries[i];
      const json a = json::parse(d.value, nullptr, false);
      const json b = json::parse(p.value, nullptr, false);
      const bool same_value = d.value == p.value || (!a.is_discarded() && a == b);
      found = d.key == p.key && d.headers == p.headers && same_value;
    }
    EXPECT_TRUE(found) << p.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Redis refusing the post-commit invalidation and notice

TEST_F(ConsumeFaultTest, InvalidationRedisRefusesIsRetriedBeforeTheAcknowledgement) {
  test::give_miners(owner_, "1", "101", 2);
  ASSERT_TRUE(redis_.command({"SET", "user_portfolio:101", "stale"}).ok());
  // A subscriber as another Redis user, so that it keeps its own rights.
  ASSERT_TRUE(
      redis_.command({"ACL", "SETUSER", "watcher", "on", "nopass", "~*", "&*", "+@all"}).ok());
  auto sub = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(sub->command({"AUTH", "watcher", "x"}).ok());
  ASSERT_TRUE(sub->command({"SUBSCRIBE", "hi:portfolio:1"}).ok());
  const std::size_t w = worker("portfolio");
  // From now on Redis refuses the invalidation (a script) and PUBLISH to the workers (as a
  // replica or an ACL would).
  struct Restore {
    redis::Client& r;
    ~Restore() { (void)r.command({"ACL", "SETUSER", "default", "+@all"}); }
  } restore{redis_};
  ASSERT_TRUE(redis_.command({"ACL", "SETUSER", "default", "-del", "-eval", "-publish"}).ok());
  const auto events = test::outbox_events(app_, "1", "101", 1);
  test::publish(redis_, events);
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 1; }))
      << test::file_text(log(w));
  // Committed, but neither invalidated nor acknowledged while Redis refuses.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_TRUE(cached("user_portfolio:101"));
  EXPECT_EQ(test::pending_entries(redis_, "events.miner", kGroup), 1);
  ASSERT_TRUE(redis_.command({"ACL", "SETUSER", "default", "+@all"}).ok());
  ASSERT_TRUE(eventually([&] {
    return !cached("user_portfolio:101") &&
           test::pending_entries(redis_, "events.miner", kGroup) == 0;
  })) << test::file_text(log(w));
  sub->set_timeout(std::chrono::seconds(5));
  auto msg = sub->command(std::vector<std::string>{"PING"});  // reads the next push (message)
  ASSERT_TRUE(msg.ok());
  ASSERT_GE(msg->elements.size(), 3u);
  EXPECT_EQ(msg->elements[0].str, "message");
  EXPECT_EQ(json::parse(msg->elements[2].str)["through_seq"].get<std::int64_t>(), events[0].seq);
  expect_portfolio_invariants(1, {"101"});
}

// ---------------------------------------------------------------------------------------------
// Redis (bus, locks, cache) killed during a consumer run

// The whole path: the test writes miners with their events as the API does, the relay
// publishes them, two portfolio workers apply them, and Redis (AOF always: what it acknowledged
// survives) is killed with SIGKILL and restarted ten times meanwhile. Afterwards every event is
// applied exactly once and every portfolio equals the raw rows.
TEST_F(ConsumeFaultTest, RedisKilledTenTimesDuringAConsumerRunLosesAndDoublesNothing) {
  const std::vector<std::string> users = {"101", "102", "103", "104"};
  for (const auto& u : users) test::give_miners(owner_, "1", u, 1);
  const std::size_t relay = procs_.size();
  procs_.push_back(test::start_relay({}, log(relay)));
  ASSERT_TRUE(eventually([&] {
    return test::file_text(log(relay)).find("streaming") != std::string::npos;
  })) << test::file_text(log(relay));
  worker("portfolio");
  worker("portfolio");
  std::atomic<bool> writing{true};
  std::atomic<int> written{0};
  std::jthread writer([&] {
    auto app = TestServers::get().app();
    // Bounded: a slower machine restarts Redis more slowly, not over a bigger AOF.
    for (int i = 0; writing.load() && i < 400; ++i) {
      test::add_miner_with_event(app, "1", users[i % users.size()], 1 + i % 5, 1 + i % 3);
      ++written;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (int k = 0; k < 10; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    TestServers::get().kill_and_restart_redis();
  }
  writing.store(false);
  writer.join();
  auto fresh = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(fresh.ok());
  redis_ = std::move(*fresh);
  const std::int64_t events = scalar("SELECT count(*) FROM event_outbox");
  ASSERT_EQ(events, written.load());  // independent of the workers: the rows written
  ASSERT_GT(events, 20);
  ASSERT_TRUE(eventually(
      [&] {
        return test::inbox_rows(owner_, kGroup) == events &&
               test::pending_entries(redis_, "events.miner", kGroup) == 0;
      },
      std::chrono::seconds(180)))
      << test::inbox_rows(owner_, kGroup) << " of " << events << " applied\n"
      << test::file_text(log(relay + 1));
  expect_portfolio_invariants(events, users);
  for (std::size_t i = 0; i < procs_.size(); ++i) {
    EXPECT_TRUE(procs_[i].running()) << test::file_text(log(i));
  }
}

// ---------------------------------------------------------------------------------------------
// A commit that is decodable before it is visible

TEST_F(ConsumeFaultTest, PortfolioWaitsUntilTheEventsTransactionIsVisible) {
  test::give_miners(owner_, "1", "101", 2);
  // The relay and the worker commit locally; only the writer below waits for a standby.
  const std::vector<std::string> local = {"PGOPTIONS=-c synchronous_commit=local"};
  const std::size_t relay = procs_.size();
  procs_.push_back(test::start_relay(local, log(relay)));
  ASSERT_TRUE(eventually([&] {
    return test::file_text(log(relay)).find("streaming") != std::string::npos;
  })) << test::file_text(log(relay));
  const std::size_t w = worker("portfolio", {}, local);
  struct Restore {
    pg::Connection& c;
    ~Restore() {
      (void)c.exec("ALTER SYSTEM RESET synchronous_standby_names");
      (void)c.exec("SELECT pg_reload_conf()");
    }
  } restore{owner_};
  ASSERT_TRUE(owner_.exec("ALTER SYSTEM SET synchronous_standby_names = 'ghost'").ok());
  ASSERT_TRUE(owner_.exec("SELECT pg_reload_conf()").ok());

  // The writer's commit is flushed (the relay decodes and publishes it) and then waits for a
  // standby that never answers: invisible to every other session meanwhile.
  test::TestEvent added;
  std::thread writer([&] {
    auto conn = TestServers::get().app();
    eventually([&] {
      auto r = conn.exec("SHOW synchronous_standby_names");
      return r.ok() && r->text(0, 0) == "ghost";
    });
    added = test::add_miner_with_event(conn, "1", "101", 3, 7);
  });
  ASSERT_TRUE(eventually([&] {
    for (const auto& d : test::read_stream(redis_, "events.miner")) {
      if (test::header(d, "kind") == "miner.added") return true;
    }
    return false;
  })) << test::file_text(log(relay));
  // The worker has it now; give it time to (wrongly) apply it.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_EQ(test::raw_holdings(owner_, "101").units, 3);  // the new row is not visible yet
  ASSERT_TRUE(owner_.exec("ALTER SYSTEM RESET synchronous_standby_names").ok());
  ASSERT_TRUE(owner_.exec("SELECT pg_reload_conf()").ok());
  writer.join();
  ASSERT_FALSE(added.id.empty());
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == 1; }))
      << test::file_text(log(w));
  EXPECT_EQ(test::raw_holdings(owner_, "101").units, 10);
  EXPECT_EQ(scalar("SELECT through_seq FROM user_portfolio WHERE user_id = 101"), added.seq);
  expect_portfolio_invariants(1, {"101"});
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 1);
}

// ---------------------------------------------------------------------------------------------
// A crash at each failpoint, then a restart without failpoints

class ConsumeCrashPointTest : public ConsumeFaultTest {
 protected:
  // Two users with stale cache entries and three events each, published.
  std::vector<test::TestEvent> stage() {
    std::vector<test::TestEvent> all;
    for (const char* u : {"101", "102"}) {
      test::give_miners(owner_, "1", u, 2);
      EXPECT_TRUE(redis_.command({"SET", std::string("user_portfolio:") + u, "stale"}).ok());
      auto ev = test::outbox_events(app_, "1", u, 3);
      all.insert(all.end(), ev.begin(), ev.end());
    }
    test::publish(redis_, all);
    return all;
  }
};

TEST_F(ConsumeCrashPointTest, AfterCommitThenRestartInvalidatesAndAppliesOnce) {
  const auto events = stage();
  const std::size_t w =
      worker("portfolio", {}, {"HI_FAILPOINTS=consume.after_commit=crash"}, false);
  expect_crash_at(w, "consume.after_commit");
  // The crash landed between the commit and the invalidation.
  EXPECT_GT(test::inbox_rows(owner_, kGroup), 0);
  EXPECT_TRUE(cached("user_portfolio:101") && cached("user_portfolio:102"));
  worker("portfolio");
  ASSERT_TRUE(eventually([&] {
    return test::inbox_rows(owner_, kGroup) == 6 &&
           test::pending_entries(redis_, "events.miner", kGroup) == 0 &&
           !cached("user_portfolio:101") && !cached("user_portfolio:102");
  })) << test::file_text(log(w + 1));
  expect_portfolio_invariants(6, {"101", "102"});
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 2);
}

TEST_F(ConsumeCrashPointTest, AfterInvalidateThenRestartAcknowledgesWithoutReapplying) {
  const auto events = stage();
  const std::size_t w =
      worker("portfolio", {}, {"HI_FAILPOINTS=consume.after_invalidate=crash"}, false);
  expect_crash_at(w, "consume.after_invalidate");
  // Committed and invalidated, not acknowledged.
  EXPECT_EQ(test::inbox_rows(owner_, kGroup), 6);
  EXPECT_FALSE(cached("user_portfolio:101") || cached("user_portfolio:102"));
  EXPECT_EQ(test::pending_entries(redis_, "events.miner", kGroup), 6);
  worker("portfolio");
  ASSERT_TRUE(eventually([&] {
    return test::pending_entries(redis_, "events.miner", kGroup) == 0;
  })) << test::file_text(log(w + 1));
  expect_portfolio_invariants(6, {"101", "102"});
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 2);
}

TEST_F(ConsumeCrashPointTest, InDlqParkThenRestartParksOnceAndAppliesTheRestOnce) {
  const auto events = stage();
  const auto poison = test::synthetic_event("1", "1999", 1);  // a user that does not exist
  test::publish(redis_, {poison});
  const std::size_t w = worker("portfolio", {"--max-attempts", "1"},
                               {"HI_FAILPOINTS=consume.in_dlq_park=crash"}, false);
  expect_crash_at(w, "consume.in_dlq_park");
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq"), 0);  // its transaction died with it
  worker("portfolio", {"--max-attempts", "1"});
  ASSERT_TRUE(eventually([&] {
    return test::pending_entries(redis_, "events.miner", kGroup) == 0 &&
           test::inbox_rows(owner_, kGroup) == 6;
  })) << test::file_text(log(w + 1));
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE event_id = $1", {poison.id}), 1);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq"), 1);
  const auto dlq = test::read_stream(redis_, "events.dlq");
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(test::header(dlq[0], "id"), poison.id);
  expect_portfolio_invariants(6, {"101", "102"});
}

TEST_F(ConsumeCrashPointTest, ReplayAfterPublishThenRerunMarksOnceAndAppliesOnce) {
  test::give_miners(owner_, "1", "101", 2);
  const auto poison = test::synthetic_event("1", "1999", 1);  // a user that does not exist yet
  test::publish(redis_, {poison});
  const std::size_t w = worker("portfolio", {"--max-attempts", "1"});
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM event_dlq WHERE event_id = $1", {poison.id}) == 1;
  })) << test::file_text(log(w));
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO users (id, tenant_id, email, display_name) "
                        "VALUES (1999, 1, 'late@acme.example', 'Late User') ON CONFLICT DO NOTHING")
                  .ok());
  const std::size_t stream_before = test::read_stream(redis_, "events.miner").size();
  auto crashed =
      test::run_cli({"dlq", "replay", "--hours", "1"}, {"HI_FAILPOINTS=dlq.after_publish=crash"});
  EXPECT_EQ(crashed.status, 137) << crashed.output;
  EXPECT_NE(crashed.output.find("failpoint dlq.after_publish: crash (exit 137)"), std::string::npos)
      << crashed.output;
  // Published, not marked.
  EXPECT_EQ(test::read_stream(redis_, "events.miner").size(), stream_before + 1);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE replayed_at IS NULL"), 1);
  auto rerun = test::run_cli({"dlq", "replay", "--hours", "1"});
  ASSERT_EQ(rerun.status, 0) << rerun.output;
  EXPECT_EQ(json::parse(rerun.output)["replayed"], 1);
  EXPECT_EQ(test::read_stream(redis_, "events.miner").size(), stream_before + 2);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE replayed_at IS NOT NULL"), 1);
  EXPECT_EQ(scalar("SELECT count(*) FROM event_dlq WHERE replayed_at IS NULL"), 0);
  // Both copies reach the worker: applied once.
  ASSERT_TRUE(eventually([&] {
    return test::pending_entries(redis_, "events.miner", kGroup) == 0 &&
           scalar("SELECT count(*) FROM consumer_inbox WHERE event_id = $1", {poison.id}) == 1;
  })) << test::file_text(log(w));
  EXPECT_EQ(scalar("SELECT events_applied FROM user_portfolio WHERE user_id = 1999"), 1);
  EXPECT_FALSE(cached("user_portfolio:1999"));
  auto again = test::run_cli({"dlq", "replay", "--hours", "1"});
  EXPECT_EQ(json::parse(again.output)["selected"], 0);
  ASSERT_TRUE(owner_.exec("DELETE FROM user_portfolio WHERE user_id = 1999").ok());
  ASSERT_TRUE(owner_.exec("DELETE FROM users WHERE id = 1999").ok());
}

}  // namespace
}  // namespace hi
