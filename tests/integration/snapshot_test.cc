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
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
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

  std::atomic<bool> writing_{false};
  std::atomic<long> writes_{0};
  std::vector<std::jthread> writers_;
};

// 200k rows snapshotted while four writers insert, update and delete rows of the same table.
TEST_F(SnapshotTest, WhileWritersChangeTheTableTheTopicEndsEqualToIt) {
  make_items(200000);
  relay_ = relay();
  ASSERT_TRUE(eventually([&] { return log_text().find("streaming") != std::string::npos; }))
      << log_text();
  start_writers(4, 210000);
  const std::int64_t id = request("public.items", 5000);
  ASSERT_TRUE(eventually([&] { return state(id) == "done"; }, std::chrono::seconds(180)))
      << state(id) << "\n"
      << log_text();
  stop_writers();
  wait_for_marker();
  const Materialised m = expect_topic_equals_table();
  EXPECT_GT(writes_.load(), 1000);
  // The writers really overlapped the chunks: some rows were left to their streamed change.
  const std::int64_t excluded = column(id, "keys_excluded");
  EXPECT_GT(excluded, 0);
  // Rows read (published or excluded): about the 200k, give or take the writers' inserts and
  // deletes.
  EXPECT_GT(column(id, "rows_done"), 190000);
  EXPECT_EQ(static_cast<std::int64_t>(m.snapshot_events), column(id, "rows_done") - excluded);
  EXPECT_EQ(static_cast<std::int64_t>(m.chunks.size()), column(id, "chunks_done"));
  EXPECT_TRUE(m.saw_last);
}

}  // namespace
}  // namespace hi
