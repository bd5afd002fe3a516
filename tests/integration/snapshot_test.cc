// Incremental snapshots (`hashinsight snapshot`, cdc/snapshot.h) against a real PostgreSQL and
// Redis (and librdkafka's mock cluster for one case): a consumer that materialises the table's
// topic (snapshot rows and changes, by key, latest wins) ends equal to the table, row by row,
// while writers insert, update and delete the rows being read, and across relay crashes placed
// by failpoints at each step of a chunk.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bus/bus.h"
#include "bus/kafka_mock.h"
#include "core/process.h"
#include "support/relay_helpers.h"
#include "support/sanitized.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;

// The sanitized build runs every process several times slower: the same cases on fewer rows.
constexpr int kScale = test::kSanitized ? 8 : 1;
using test::eventually;
using test::TestServers;

// A value of a change event's row as SQL text prints it (NULL for null), to compare with a
// query's text columns.
std::string as_text(const json& v) {
  if (v.is_null()) return "NULL";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

using Rows = std::map<std::string, std::vector<std::string>>;  // key -> column texts

struct Materialised {
  Rows rows;
  std::size_t snapshot_events = 0;
  std::set<std::int64_t> chunks;
  bool saw_last = false;
};

// Applies the events of a cdc topic in order: c/u/r put the row, d removes it. `key_of` and
// `columns` name the key and the compared columns.
Materialised materialise(const std::vector<bus::Delivery>& events, const std::string& key_column,
                         const std::vector<std::string>& columns) {
  Materialised m;
  for (const auto& d : events) {
    const json v = json::parse(d.value);
    const std::string op = v["op"];
    if (op == "d") {
      m.rows.erase(as_text(v["before"][key_column]));
      continue;
    }
    if (op == "u" && v["before"].is_object()) m.rows.erase(as_text(v["before"][key_column]));
    std::vector<std::string> row;
    for (const auto& c : columns) row.push_back(as_text(v["after"][c]));
    m.rows[as_text(v["after"][key_column])] = row;
    if (op == "r") {
      ++m.snapshot_events;
      m.chunks.insert(v["source"]["snapshot"]["chunk"].get<std::int64_t>());
      if (v["source"]["snapshot"]["last"].get<bool>()) m.saw_last = true;
    }
  }
  return m;
}

// The table as SQL prints it: key -> column texts.
Rows table_rows(pg::Connection& conn, const std::string& table, const std::string& key_column,
                const std::vector<std::string>& columns) {
  std::string list = key_column + "::text";
  for (const auto& c : columns) list += ", coalesce(" + c + "::text, 'NULL')";
  auto r = conn.exec("SELECT " + list + " FROM " + table);
  EXPECT_TRUE(r.ok());
  Rows out;
  for (int i = 0; r && i < r->rows(); ++i) {
    std::vector<std::string> row;
    for (std::size_t c = 0; c < columns.size(); ++c) {
      row.emplace_back(r->text(i, static_cast<int>(c) + 1));
    }
    out[std::string(r->text(i, 0))] = row;
  }
  return out;
}

class SnapshotTest : public test::RelayFixture {
 protected:
  void TearDown() override {
    stop_writers();  // also when an assertion ended the test early
    RelayFixture::TearDown();
  }
  // A captured table `items` of `rows` rows (id, name, n), read by the relay as its own role.
  void make_items(int rows) {
    ASSERT_TRUE(owner_
                    .exec_script("DROP TABLE IF EXISTS items; CREATE TABLE items (id bigint "
                                 "PRIMARY KEY, name text NOT NULL, n int); INSERT INTO items "
                                 "SELECT g, 'item-' || g, g % 1000 FROM generate_series(1, " +
                                 std::to_string(rows) + ") g; DELETE FROM relay_snapshots")
                    .ok());
    test::capture_tables(owner_, {"public.items"});
  }
  Process relay(const std::vector<std::string>& env = {}) {
    std::vector<std::string> e = {"RELAY_CAPTURE_TABLES=public.items",
                                  "RELAY_DATABASE_URL=" + test::relay_role_url()};
    e.insert(e.end(), env.begin(), env.end());
    return test::start_relay(e, log_);
  }
  std::int64_t request(const std::string& table, int chunk) {
    auto r = owner_.exec(
        "INSERT INTO relay_snapshots (table_name, chunk_size) VALUES ($1, $2) RETURNING id",
        {table, std::to_string(chunk)});
    EXPECT_TRUE(r.ok());
    return r ? r->int64(0, 0) : 0;
  }
  std::string state(std::int64_t id) {
    auto r = owner_.exec("SELECT state FROM relay_snapshots WHERE id = $1", {std::to_string(id)});
    return r && !r->empty() ? std::string(r->text(0, 0)) : "";
  }
  std::int64_t column(std::int64_t id, const std::string& name) {
    auto r =
        owner_.exec("SELECT " + name + " FROM relay_snapshots WHERE id = $1", {std::to_string(id)});
    return r && !r->empty() ? r->int64(0, 0) : -1;
  }

  // `n` writers insert, update and delete random rows of items with ids up to `max_id`.
  void start_writers(int n, int max_id) {
    writing_ = true;
    for (int w = 0; w < n; ++w) {
      writers_.emplace_back([this, w, max_id] {
        auto conn = TestServers::get().owner();
        std::mt19937 rng(1000 + w);
        while (writing_.load()) {
          const std::string id = std::to_string(1 + rng() % max_id);
          switch (rng() % 3) {
            case 0:
              (void)conn.exec(
                  "INSERT INTO items VALUES ($1, 'new-' || $1, 7) ON CONFLICT (id) DO UPDATE "
                  "SET name = 'upserted-' || $1",
                  {id});
              break;
            case 1:
              (void)conn.exec(
                  "UPDATE items SET n = coalesce(n, 0) + 1, name = 'upd-' || $1 "
                  "WHERE id = $1",
                  {id});
              break;
            default:
              (void)conn.exec("DELETE FROM items WHERE id = $1", {id});
              break;
          }
          ++writes_;
          std::this_thread::sleep_for(std::chrono::microseconds(300));
        }
      });
    }
  }
  void stop_writers() {
    writing_ = false;
    writers_.clear();
  }

  // Writes a marker row and waits until it is on the topic: everything before it is too.
  void wait_for_marker() {
    ASSERT_TRUE(
        owner_.exec("INSERT INTO items VALUES (-1, 'marker', NULL) ON CONFLICT (id) DO NOTHING")
            .ok());
    ASSERT_TRUE(eventually(
        [&] {
          auto e = test::read_stream(redis_, "cdc.public.items");
          for (auto it = e.rbegin(); it != e.rend(); ++it) {
            if (it->value.find("\"marker\"") != std::string::npos) return true;
          }
          return false;
        },
        std::chrono::seconds(60)))
        << log_text();
  }

  // The topic, materialised, equals the table row by row.
  Materialised expect_topic_equals_table() {
    const std::vector<std::string> cols = {"name", "n"};
    Materialised m = materialise(test::read_stream(redis_, "cdc.public.items"), "id", cols);
    const Rows want = table_rows(owner_, "items", "id", cols);
    EXPECT_EQ(m.rows.size(), want.size());
    std::size_t differ = 0;
    for (const auto& [k, row] : want) {
      auto it = m.rows.find(k);
      if (it == m.rows.end() || it->second != row) {
        if (++differ <= 5) {
          ADD_FAILURE() << "row " << k << ": table " << row[0] << "|" << row[1] << ", topic "
                        << (it == m.rows.end() ? "missing" : it->second[0] + "|" + it->second[1]);
        }
      }
    }
    for (const auto& [k, row] : m.rows) {
      if (!want.contains(k) && ++differ <= 10) ADD_FAILURE() << "row " << k << " resurrected";
    }
    EXPECT_EQ(differ, 0u);
    return m;
  }

  // `hashinsight <args>` as the owner, to completion.
  CommandResult cli(const std::vector<std::string>& args) {
    SpawnOptions o;
    o.argv = {test::hashinsight_binary()};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.env = {"DATABASE_URL=" + TestServers::get().database_url(), "LOG_FORMAT=text",
             "HI_DATA_DIR=/nonexistent"};
    auto r = run_command(o, std::chrono::seconds(60));
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : CommandResult{};
  }

  std::atomic<bool> writing_{false};
  std::atomic<long> writes_{0};
  std::vector<std::jthread> writers_;
};

// 200k rows (25k in the sanitized build) snapshotted while four writers insert, update and delete
// rows of the same table.
TEST_F(SnapshotTest, WhileWritersChangeTheTableTheTopicEndsEqualToIt) {
  const int rows = 200000 / kScale;
  make_items(rows);
  relay_ = relay();
  ASSERT_TRUE(eventually([&] { return log_text().find("streaming") != std::string::npos; }))
      << log_text();
  start_writers(4, rows + rows / 20);
  const std::int64_t id = request("public.items", 5000);
  ASSERT_TRUE(eventually([&] { return state(id) == "done"; }, std::chrono::seconds(300)))
      << state(id) << "\n"
      << log_text();
  stop_writers();
  wait_for_marker();
  const Materialised m = expect_topic_equals_table();
  EXPECT_GT(writes_.load(), 1000);
  // The writers really overlapped the chunks: some rows were left to their streamed change.
  const std::int64_t excluded = column(id, "keys_excluded");
  EXPECT_GT(excluded, 0);
  // Every row no writer touched (its name is still the original one) existed throughout, so
  // every chunk that covered it read it: rows read (published or excluded) are at least those.
  auto untouched = owner_.exec("SELECT count(*) FROM items WHERE name LIKE 'item-%'");
  ASSERT_TRUE(untouched.ok());
  EXPECT_GE(column(id, "rows_done"), untouched->int64(0, 0));
  EXPECT_GT(untouched->int64(0, 0), 0);
  EXPECT_EQ(static_cast<std::int64_t>(m.snapshot_events), column(id, "rows_done") - excluded);
  EXPECT_EQ(static_cast<std::int64_t>(m.chunks.size()), column(id, "chunks_done"));
  EXPECT_TRUE(m.saw_last);
}

// The relay crashed by failpoints at each step of a chunk, five times, while writers change the
// table: every restart resumes from the last recorded chunk, and the topic still ends equal to
// the table (a chunk is read again after a crash, never skipped).
TEST_F(SnapshotTest, CrashedAtEachStepOfAChunkItResumesAndLosesNothing) {
  // A crash loop: left to the normal build, as scripts/test leaves crash loops (under the
  // sanitizers the writers empty the table before the five crashes have chunks to land in).
  if (kScale > 1) GTEST_SKIP() << "crash loop: run by the normal build";
  make_items(30000);
  start_writers(2, 32000);
  // Chunks small enough that the five crashes (about eight chunks' worth of passes) still find
  // chunks left after the writers' deletes.
  const std::int64_t id = request("public.items", 1000);
  const std::vector<std::pair<std::string, int>> crashes = {{"snapshot.after_low_watermark", 2},
                                                            {"snapshot.after_read", 3},
                                                            {"snapshot.after_publish", 2},
                                                            {"snapshot.after_read", 1},
                                                            {"snapshot.after_publish", 3}};
  std::int64_t chunks_before = 0;
  for (std::size_t i = 0; i < crashes.size(); ++i) {
    const auto& [name, pass] = crashes[i];
    Process p = relay({"HI_FAILPOINTS=" + name + "=" + std::to_string(pass) + "*crash"});
    auto status = p.wait_for(std::chrono::seconds(120));
    ASSERT_TRUE(status.has_value()) << name << " never fired\n" << log_text();
    EXPECT_EQ(*status, 137) << log_text();
    // The crash landed where it says, and the restart resumed rather than started over.
    const std::string log = log_text();
    const std::string line = "failpoint " + name + ": crash";
    int fired = 0, planned = 0;
    for (auto at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) ++fired;
    for (std::size_t j = 0; j <= i; ++j) planned += crashes[j].first == name ? 1 : 0;
    EXPECT_EQ(fired, planned) << log;
    if (i > 0) {
      EXPECT_NE(log.find("snapshot resumed"), std::string::npos) << log;
    }
    // Progress only moves forward, and only by chunks the bus acknowledged.
    const std::int64_t chunks = column(id, "chunks_done");
    EXPECT_GE(chunks, chunks_before);
    chunks_before = chunks;
    ASSERT_TRUE(eventually([&] {
      auto r = owner_.exec(
          "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'hashinsight_outbox' AND active");
      return r && r->empty();
    }));
  }
  EXPECT_EQ(state(id), "running");
  EXPECT_GT(chunks_before, 0);
  relay_ = relay();
  ASSERT_TRUE(eventually([&] { return state(id) == "done"; }, std::chrono::seconds(120)))
      << state(id) << "\n"
      << log_text();
  stop_writers();
  wait_for_marker();
  const Materialised m = expect_topic_equals_table();
  // Every chunk number, 1 to the last, reached the topic.
  EXPECT_EQ(static_cast<std::int64_t>(m.chunks.size()), column(id, "chunks_done"));
  EXPECT_EQ(*m.chunks.begin(), 1);
  EXPECT_EQ(*m.chunks.rbegin(), column(id, "chunks_done"));
}

// A request made while the relay makes its slot (after its snapshot reader first looked for
// requests, before the slot's consistent point, so not in the stream either) is still run.
TEST_F(SnapshotTest, ARequestMadeWhileTheSlotIsMadeIsRun) {
  make_items(50);
  relay_ = relay({"HI_FAILPOINTS=relay.before_slot_created=sleep(1500)"});
  ASSERT_TRUE(eventually([&] {
    return log_text().find("failpoint relay.before_slot_created: sleep") != std::string::npos;
  })) << log_text();
  const std::int64_t id = request("public.items", 20);
  ASSERT_TRUE(eventually([&] { return state(id) == "done"; }, std::chrono::seconds(60)))
      << state(id) << "\n"
      << log_text();
  wait_for_marker();
  const Materialised m = expect_topic_equals_table();
  EXPECT_EQ(m.snapshot_events, 50u);
}

// Composite and text keys page correctly (collation order, values with quotes and commas);
// a table without a primary key is refused, by the command and by the relay.
TEST_F(SnapshotTest, CompositeAndTextKeysAndATableWithoutAKey) {
  ASSERT_TRUE(
      owner_
          .exec_script("DROP TABLE IF EXISTS pairs, nokey; DELETE FROM relay_snapshots;"
                       "CREATE TABLE pairs (region text, seq int, note text, PRIMARY KEY (seq, "
                       "region)); INSERT INTO pairs SELECT r, s, 'n' || s FROM unnest(ARRAY['a', "
                       "'B', 'c,d', 'e''f', 'ü', 'a b', '']) r, generate_series(1, 15) s;"
                       "CREATE TABLE nokey (a int, b text); INSERT INTO nokey VALUES (1, 'x')")
          .ok());
  test::capture_tables(owner_, {"public.pairs", "public.nokey"});
  relay_ = test::start_relay({"RELAY_CAPTURE_TABLES=public.pairs,public.nokey",
                              "RELAY_DATABASE_URL=" + test::relay_role_url()},
                             log_);
  // The command refuses it with the reason; the relay refuses a request written by hand.
  const CommandResult refused = cli({"snapshot", "start", "--table", "public.nokey"});
  EXPECT_EQ(refused.status, 2);
  EXPECT_NE(refused.output.find("has no primary key"), std::string::npos) << refused.output;
  const std::int64_t bad = request("public.nokey", 10);
  const CommandResult started =
      cli({"snapshot", "start", "--table", "pairs", "--chunk", "4", "--where", "seq <> 13"});
  ASSERT_EQ(started.status, 0) << started.output;
  const std::int64_t id = json::parse(started.output.substr(0, started.output.find('\n')))["id"];
  ASSERT_TRUE(eventually([&] { return state(id) == "done"; }, std::chrono::seconds(60)))
      << log_text();
  EXPECT_EQ(state(bad), "failed");
  auto err = owner_.exec("SELECT error FROM relay_snapshots WHERE id = $1", {std::to_string(bad)});
  ASSERT_TRUE(err && !err->empty());
  EXPECT_NE(std::string(err->text(0, 0)).find("no primary key"), std::string::npos);

  // Every row but seq 13 arrived once, as op r, in key order (seq, then region as PostgreSQL
  // orders text), with its chunk and index.
  auto want = owner_.exec(
      "SELECT seq::text || '/' || region FROM pairs WHERE seq <> 13 ORDER BY seq, region");
  ASSERT_TRUE(want.ok());
  auto events = test::read_stream(redis_, "cdc.public.pairs");
  ASSERT_EQ(static_cast<int>(events.size()), want->rows());
  for (int i = 0; i < want->rows(); ++i) {
    const json v = json::parse(events[static_cast<std::size_t>(i)].value);
    EXPECT_EQ(v["op"], "r");
    EXPECT_EQ(std::to_string(v["after"]["seq"].get<int>()) + "/" +
                  v["after"]["region"].get<std::string>(),
              want->text(i, 0));
    EXPECT_EQ(v["source"]["snapshot"]["chunk"], 1 + i / 4);
    EXPECT_EQ(v["source"]["ordinal"], 1 + i % 4);
    EXPECT_EQ(v["source"]["snapshot"]["id"], id);
    EXPECT_EQ(json::parse(events[static_cast<std::size_t>(i)].key),
              json({{"region", v["after"]["region"]}, {"seq", v["after"]["seq"]}}));
  }
  const CommandResult st = cli({"snapshot", "status", std::to_string(id)});
  ASSERT_EQ(st.status, 0) << st.output;
  const json s = json::parse(st.output.substr(0, st.output.find('\n')));
  EXPECT_EQ(s["state"], "done");
  EXPECT_EQ(s["rows_done"], want->rows());
  EXPECT_EQ(s["chunks_done"], (want->rows() + 3) / 4);
  // Never analysed: the estimate is a count of the table (the condition aside), 7 x 15 rows.
  EXPECT_EQ(s["rows_estimated"], 7 * 15);
  const CommandResult follow = cli({"snapshot", "status", std::to_string(id), "--follow"});
  EXPECT_EQ(follow.status, 0) << follow.output;
  EXPECT_NE(follow.output.find("done      rows " + std::to_string(want->rows()) + "/105"),
            std::string::npos)
      << follow.output;
}

// On Kafka (the mock cluster, six partitions): the snapshot rows and the changes of a key share
// its partition, so a consumer group that materialises the topic also ends equal to the table.
TEST_F(SnapshotTest, OnKafkaTheMaterialisedTopicEqualsTheTable) {
  make_items(20000);
  auto mock = bus::MockCluster::start_with_topics(3, {"cdc.public.items"}, 6, 3);
  ASSERT_TRUE(mock.ok()) << mock.error().message;
  relay_ = relay({"BUS=kafka", "KAFKA_BROKERS=" + (*mock)->bootstrap()});
  start_writers(2, 21000);
  const std::int64_t id = request("public.items", 1000);
  ASSERT_TRUE(eventually([&] { return state(id) == "done"; }, std::chrono::seconds(120)))
      << log_text();
  stop_writers();
  ASSERT_TRUE(
      owner_.exec("INSERT INTO items VALUES (-1, 'marker', NULL) ON CONFLICT (id) DO NOTHING")
          .ok());
  const std::vector<std::string> cols = {"name", "n"};
  const Rows want = table_rows(owner_, "items", "id", cols);

  bus::BusOptions o;
  o.kind = bus::BusKind::kKafka;
  o.kafka_brokers = (*mock)->bootstrap();
  bus::ConsumerOptions co;
  co.group = co.consumer_name = "snapshot-reader";
  co.topics = {"cdc.public.items"};
  auto consumer = bus::make_consumer(o, co);
  ASSERT_TRUE(consumer.ok());
  std::vector<bus::Delivery> events;
  Materialised m;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (m.rows != want && std::chrono::steady_clock::now() < deadline) {
    auto batch = (*consumer)->poll(5000, std::chrono::milliseconds(500));
    if (!batch || batch->empty()) continue;
    for (auto& d : *batch) events.push_back(std::move(d));
    m = materialise(events, "id", cols);  // per partition in order; keys never span two
  }
  EXPECT_EQ(m.rows.size(), want.size());
  EXPECT_TRUE(m.rows == want) << "the materialised topic differs from the table";
  EXPECT_GT(m.snapshot_events, 15000u);
  EXPECT_TRUE(m.saw_last);
}

// Cancel stops a running snapshot after its current chunk; the relay streams on.
TEST_F(SnapshotTest, CancelStopsItCleanly) {
  make_items(20000);
  relay_ = relay({"RELAY_SNAPSHOT_PAUSE_MS=100"});
  const std::int64_t id = request("public.items", 100);
  ASSERT_TRUE(eventually([&] { return column(id, "chunks_done") >= 3; })) << log_text();
  const CommandResult c = cli({"snapshot", "cancel", std::to_string(id)});
  ASSERT_EQ(c.status, 0) << c.output;
  ASSERT_TRUE(eventually([&] { return log_text().find("snapshot stopped") != std::string::npos; }))
      << log_text();
  EXPECT_EQ(state(id), "cancelled");
  const std::int64_t chunks = column(id, "chunks_done");
  EXPECT_LT(chunks, 200);
  EXPECT_EQ(cli({"snapshot", "cancel", std::to_string(id)}).status, 2);  // not running any more
  // Nothing more is read, and changes still stream.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(column(id, "chunks_done"), chunks);
  wait_for_marker();
  std::size_t r_events = 0;
  for (const auto& e : test::read_stream(redis_, "cdc.public.items")) {
    if (json::parse(e.value)["op"] == "r") ++r_events;
  }
  EXPECT_LE(r_events, static_cast<std::size_t>(chunks + 1) * 100);
}

// `bench snapshot` on its own private servers: the whole table reaches the stream, once per row
// (XLEN of the idle run), beside its COPY baseline, and the live run measured its updates.
TEST(SnapshotBench, ReportsRowsPerSecondBesideCopyAndTheLiveLatency) {
  SpawnOptions o;
  o.argv = {test::hashinsight_binary(),
            "bench",
            "snapshot",
            "--rows",
            "3000",
            "--chunk",
            "500",
            "--live-rate",
            "200",
            "--json"};
  o.env = {"LOG_FORMAT=text", "HI_DATA_DIR=/nonexistent"};
  auto r = run_command(o, std::chrono::minutes(3));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 0) << r->output;
  const auto brace = r->output.rfind("\n{");
  const json out = json::parse(r->output.substr(brace == std::string::npos ? 0 : brace + 1));
  EXPECT_EQ(out["rows"], 3000);
  EXPECT_EQ(out["events"], 3000);  // 6 chunks of 500, each row once
  EXPECT_GT(out["rows_per_s"].get<double>(), 0);
  EXPECT_GT(out["copy_rows_per_s"].get<double>(), 0);
  EXPECT_GT(out["live_writes"].get<long>(), 0);
  EXPECT_GT(out["live_p99_ms"].get<double>(), 0);
  EXPECT_EQ(out["durable"], true);
}

}  // namespace
}  // namespace hi
