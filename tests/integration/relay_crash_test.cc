// The relay's delivery guarantees under abuse: killed with SIGKILL at random moments while
// writers run, and a one-million-row transaction through bounded memory.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "bus/redis_streams.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::eventually;
using test::TestServers;

class RelayCrashTest : public test::RelayFixture {};

// Kill -9 at random moments (at least 20 times) while four writers run. At the end every event
// is on the bus at least once, and an event appears again only if the slot had not confirmed its
// transaction when the run that repeated it started: its commit LSN is at or past the confirmed
// position read right after the kill before that run.
TEST_F(RelayCrashTest, KilledTwentyTimesLosesNothingAndDuplicatesOnlyUnconfirmed) {
  std::atomic<bool> writing{true};
  std::vector<std::vector<std::string>> written(4);
  std::vector<std::jthread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      auto conn = TestServers::get().app();
      int n = 0;
      while (writing.load()) {
        auto ids = test::write_events(conn, "crash-" + std::to_string(w), "miner.added", 1 + n % 5);
        written[w].insert(written[w].end(), ids.begin(), ids.end());
        ++n;
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    });
  }
  struct Kill {
    std::int64_t at_ms;  // wall clock, as in stream entry ids
    pg::Lsn confirmed;   // the slot's position right after the kill
  };
  std::vector<Kill> kills;
  std::mt19937 rng(42);
  for (int i = 0; i < 20; ++i) {
    Process relay = test::start_relay({"RELAY_HEARTBEAT_MS=100"}, log_);
    ASSERT_TRUE(relay.valid());
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    relay.signal(SIGKILL);
    relay.wait_for(std::chrono::seconds(10));
    // The walsender notices the dead client; the slot keeps what was confirmed.
    ASSERT_TRUE(eventually([&] {
      auto r = owner_.exec(
          "SELECT active FROM pg_replication_slots WHERE slot_name = 'hashinsight_outbox'");
      return r && (r->empty() || !r->boolean(0, 0));
    }));
    // A kill during the first start's backfill leaves its marker pending: the slot's position
    // then promises nothing (the next start drops the slot and backfills again).
    auto marker =
        owner_.exec("SELECT value FROM relay_settings WHERE name = 'backfill:hashinsight_outbox'");
    const bool backfilled = marker && !marker->empty() && marker->text(0, 0) == "done";
    kills.push_back({std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count(),
                     backfilled ? test::confirmed_flush(owner_, "hashinsight_outbox") : pg::Lsn{}});
  }
  writing = false;
  writers.clear();
  std::size_t total = 0;
  for (const auto& w : written) total += w.size();
  ASSERT_GT(total, 1000u);
  // A last, undisturbed run drains the rest.
  Process relay = test::start_relay({}, log_);
  // Until every written id is there (the stream's length counts repeats too).
  std::set<std::string> all;
  for (const auto& w : written) all.insert(w.begin(), w.end());
  eventually(
      [&] {
        std::set<std::string> ids;
        for (const auto& d : test::read_stream(redis_, "events.miner")) {
          ids.insert(test::header(d, "id"));
        }
        return std::includes(ids.begin(), ids.end(), all.begin(), all.end());
      },
      std::chrono::seconds(60));
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait_for(std::chrono::seconds(20)).value_or(-1), 0);

  std::map<std::string, std::vector<std::int64_t>> seen;  // id -> entry times (ms)
  std::map<std::string, pg::Lsn> commit_lsn;
  for (const auto& d : test::read_stream(redis_, "events.miner")) {
    const std::string id = test::header(d, "id");
    seen[id].push_back(std::stoll(d.position.substr(0, d.position.find('-'))));
    // The highest of its copies: a backfilled copy carries no commit LSN (0/0).
    commit_lsn[id] =
        std::max(commit_lsn[id],
                 *pg::Lsn::parse(json::parse(d.value)["source"]["commit_lsn"].get<std::string>()));
  }
  std::size_t duplicates = 0;
  for (const auto& w : written) {
    for (const auto& id : w) {
      ASSERT_TRUE(seen.contains(id)) << "lost event " << id;
      const auto& times = seen[id];
      if (times.size() < 2) continue;
      ++duplicates;
      // Each repeated copy came from a run that started after the last kill before it, from that
      // kill's confirmed position or later (a run may reconnect and repeat what it had not
      // confirmed yet): PostgreSQL sends nothing below it, so a repeat of a confirmed event is
      // the relay's. Its first kill after the first copy proves nothing: the repeat may come
      // from the same run.
      for (std::size_t c = 1; c < times.size(); ++c) {
        const Kill* last = nullptr;
        for (const auto& k : kills) {
          if (k.at_ms < times[c]) last = &k;
        }
        if (last == nullptr) continue;
        EXPECT_GE(commit_lsn[id], last->confirmed)
            << id << " was confirmed at " << last->confirmed.to_string()
            << " before the run that delivered it again";
      }
    }
  }
  RecordProperty("events", static_cast<int>(total));
  RecordProperty("duplicates", static_cast<int>(duplicates));
  std::printf("events %zu, duplicates after 20 kills %zu\n", total, duplicates);
}

TEST_F(RelayCrashTest, MillionRowTransactionPassesInBoundedMemory) {
  Process relay = test::start_relay({"RELAY_MAX_INFLIGHT=20000"}, log_);
  ASSERT_TRUE(eventually([&] { return log_text().find("streaming") != std::string::npos; }));
  constexpr int kRows = 1'000'000;
  auto ins = owner_.exec(
      "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
      "SELECT 'big-' || g, 1, 'miner.bulk_imported', 'big-user-' || (g % 100), "
      "'{\"model_id\":1}', g FROM generate_series(1, " +
      std::to_string(kRows) + ") g");
  ASSERT_TRUE(ins.ok()) << ins.error().message;
  ASSERT_TRUE(eventually(
      [&] {
        auto r = redis_.command({"XLEN", "events.miner"});
        return r && r->integer >= kRows;
      },
      std::chrono::seconds(300)))
      << log_text();
  const double rss = test::peak_rss_mb(relay.pid());
  std::printf("peak RSS of the relay through a %d-row transaction: %.1f MB\n", kRows, rss);
  EXPECT_GT(rss, 0);
  EXPECT_LT(rss, 64.0);
  relay.signal(SIGTERM);
  EXPECT_EQ(relay.wait_for(std::chrono::seconds(20)).value_or(-1), 0);
  auto len = redis_.command({"XLEN", "events.miner"});
  EXPECT_EQ(len->integer, kRows);
  // Every row exactly once, by id ("big-1" .. "big-1000000"), read page by page.
  std::vector<bool> seen(kRows + 1, false);
  int distinct = 0, repeated = 0, foreign = 0;
  std::string from = "-";
  for (;;) {
    auto page = redis_.command({"XRANGE", "events.miner", from, "+", "COUNT", "20000"});
    ASSERT_TRUE(page.ok());
    if (page->elements.empty()) break;
    for (const auto& e : page->elements) {
      const std::string id = test::header(bus::delivery_from_entry("events.miner", e), "id");
      const int n = id.rfind("big-", 0) == 0 ? std::atoi(id.c_str() + 4) : 0;
      if (n < 1 || n > kRows) {
        ++foreign;
      } else if (seen[n]) {
        ++repeated;
      } else {
        seen[n] = true;
        ++distinct;
      }
    }
    from = "(" + page->elements.back().elements[0].str;
  }
  EXPECT_EQ(distinct, kRows);
  EXPECT_EQ(repeated, 0);
  EXPECT_EQ(foreign, 0);
}

}  // namespace
}  // namespace hi
