// kill -9 of portfolio workers mid-batch, repeatedly, while events flow: afterwards every event
// has exactly one inbox row, events_applied sums to the events, and every portfolio equals a
// recalculation from scratch. Label `slow`.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <random>
#include <thread>

#include "schema/seed.h"
#include "support/consume_helpers.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using test::eventually;
using test::TestServers;

constexpr const char* kGroup = "portfolio-recalc-group";

TEST(ConsumeCrashTest, KillNineMidBatchRepeatedlyLosesAndDoublesNothing) {
  auto owner = TestServers::get().owner();
  ASSERT_TRUE(schema::seed(owner, Logger("test")).ok());
  auto redis = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(redis.ok());
  test::reset_consumer_state(owner, *redis);
  auto app = TestServers::get().app();
  const std::vector<std::pair<std::string, std::string>> users = {
      {"1", "101"}, {"1", "102"}, {"1", "103"}, {"2", "201"}, {"2", "202"}, {"2", "203"}};
  for (const auto& [t, u] : users) test::give_miners(owner, t, u, 3);

  test::TempDir tmp;
  const std::vector<std::string> args = {"--claim-idle-ms",    "500", "--lease-ms", "1000",
                                         "--batch-size",       "32",  "--poll-ms",  "100",
                                         "--retry-backoff-ms", "10"};
  int started = 0;
  auto start = [&] {
    return test::start_worker("portfolio", tmp.path() + "/w" + std::to_string(started++) + ".log",
                              args);
  };
  Process workers[2] = {start(), start()};

  // Events flow from a writer thread for the whole test.
  std::atomic<bool> writing{true};
  std::atomic<std::int64_t> written{0};
  std::thread writer([&] {
    auto conn = TestServers::get().app();
    auto r = redis::Client::connect(TestServers::get().redis_url());
    if (!r) return;
    std::size_t i = 0;
    while (writing) {
      const auto& [t, u] = users[i++ % users.size()];
      auto ev = test::outbox_events(conn, t, u, 20);
      // A few duplicates, as after a relay crash.
      ev.push_back(ev.front());
      test::publish(*r, ev);
      written += 20;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  std::mt19937 rng(42);
  constexpr int kKills = 20;
  for (int k = 0; k < kKills; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 200));
    Process& victim = workers[k % 2];
    victim.signal(SIGKILL);
    victim.wait_for(std::chrono::seconds(5));
    if (k == kKills / 2) test::give_miners(owner, "1", "102", 1);  // state changes meanwhile
    victim = start();
  }
  writing = false;
  writer.join();
  const std::int64_t total = written.load();
  ASSERT_GT(total, 0);
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner, kGroup) == total; },
                         std::chrono::seconds(120)))
      << "inbox " << test::inbox_rows(owner, kGroup) << " of " << total;
  ASSERT_TRUE(eventually(
      [&] {
        auto p = redis->command({"XPENDING", "events.miner", kGroup});
        return p.ok() && p->elements[0].integer == 0;
      },
      std::chrono::seconds(60)));
  auto sum = owner.exec("SELECT sum(events_applied) FROM user_portfolio");
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(sum->int64(0, 0), total);
  // Every outbox event has exactly one inbox row (and none is missing).
  auto missing = owner.exec(
      "SELECT count(*) FROM event_outbox o WHERE NOT EXISTS (SELECT 1 FROM consumer_inbox i "
      "WHERE i.consumer_name = $1 AND i.event_id = o.id)",
      {kGroup});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->int64(0, 0), 0);
  auto seqs = owner.exec(
      "SELECT count(*) FROM user_portfolio p WHERE through_seq <> (SELECT max(seq) FROM "
      "event_outbox o WHERE o.user_id = p.user_id::text)");
  ASSERT_TRUE(seqs.ok());
  EXPECT_EQ(seqs->int64(0, 0), 0);
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app, "1"), 3);
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app, "2"), 3);
  for (auto& w : workers) {
    w.signal(SIGTERM);
    EXPECT_EQ(w.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  }
}

}  // namespace
}  // namespace hi
