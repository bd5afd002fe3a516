#include "support/relay_helpers.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <iterator>
#include <thread>

#include "bus/redis_streams.h"
#include "cdc/slot.h"
#include "pg/transaction.h"
#include "schema/outbox.h"
#include "support/servers.h"

namespace hi::test {

std::vector<std::string> write_events(pg::Connection& conn, const std::string& user,
                                      const std::string& kind, int count,
                                      const std::string& payload) {
  std::vector<std::string> ids;
  pg::Transaction tx(conn);
  if (!tx.begin("1")) return ids;
  for (int i = 0; i < count; ++i) {
    auto r = schema::append_event(
        conn, {"1", user, kind, std::nullopt, payload, std::nullopt, std::nullopt});
    if (!r) {
      ADD_FAILURE() << r.error().message;
      return {};
    }
    ids.push_back(r->id);
  }
  if (!tx.commit()) return {};
  return ids;
}

std::vector<std::vector<std::string>> write_concurrently(int writers, int per_writer, int per_tx,
                                                         const std::string& prefix, int users) {
  std::vector<std::vector<std::string>> written(static_cast<std::size_t>(writers));
  std::vector<std::jthread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      auto conn = TestServers::get().app();
      auto& mine = written[static_cast<std::size_t>(w)];
      for (int done = 0; done < per_writer; done += per_tx) {
        const std::string user =
            prefix + std::to_string(w) + "-" + std::to_string((done / per_tx) % users);
        auto ids = write_events(conn, user, "miner.added", per_tx);
        mine.insert(mine.end(), ids.begin(), ids.end());
      }
    });
  }
  threads.clear();  // joins
  return written;
}

std::vector<bus::Delivery> read_stream(redis::Client& redis, const std::string& stream) {
  std::vector<bus::Delivery> out;
  std::string start = "-";
  for (;;) {
    auto r = redis.command({"XRANGE", stream, start, "+", "COUNT", "10000"});
    if (!r || r->elements.empty()) break;
    for (const auto& e : r->elements) out.push_back(bus::delivery_from_entry(stream, e));
    const std::string last = r->elements.back().elements[0].str;
    start = "(" + last;
    if (r->elements.size() < 10000) break;
  }
  return out;
}

std::string header(const bus::Delivery& d, const std::string& name) {
  for (const auto& [k, v] : d.headers) {
    if (k == name) return v;
  }
  return "";
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

pg::Lsn confirmed_flush(pg::Connection& conn, const std::string& slot) {
  auto r = conn.exec(
      "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", {slot});
  if (!r || r->empty() || r->is_null(0, 0)) return {};
  auto l = pg::Lsn::parse(r->text(0, 0));
  return l ? *l : pg::Lsn{};
}

Process start_relay(const std::vector<std::string>& env, const std::string& log_path,
                    const std::vector<std::string>& args) {
  SpawnOptions o;
  o.argv = {hashinsight_binary(), "relay"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = {"DATABASE_URL=" + TestServers::get().database_url(),
           "REDIS_URL=" + TestServers::get().redis_url(), "LOG_FORMAT=text",
           "HI_DATA_DIR=/nonexistent"};
  o.env.insert(o.env.end(), env.begin(), env.end());
  o.output_path = log_path;
  auto p = Process::spawn(o);
  EXPECT_TRUE(p.ok());
  return p.ok() ? std::move(*p) : Process();
}

double peak_rss_mb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

void capture_tables(pg::Connection& owner, const std::vector<std::string>& tables) {
  auto s = cdc::set_capture_tables(owner, "hashinsight_outbox", tables);
  ASSERT_TRUE(s.ok()) << s.error().message;
}

std::string relay_role_url() {
  return "postgresql://hashinsight_relay:" + TestServers::get().relay_password() +
         "@127.0.0.1:" + std::to_string(TestServers::get().pg_port()) + "/hashinsight";
}

void reset_relay_state(pg::Connection& owner, redis::Client& redis) {
  // A relay stopped a moment ago may still hold its walsender: end it, then drop every slot.
  (void)owner.exec(
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active");
  eventually([&] {
    auto r = owner.exec("SELECT count(*) FROM pg_replication_slots WHERE active");
    return r && r->int64(0, 0) == 0;
  });
  (void)owner.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots");
  (void)owner.exec("DELETE FROM relay_settings WHERE name LIKE 'backfill:%'");
  (void)owner.exec("TRUNCATE event_outbox");
  (void)redis.command({"FLUSHALL"});
}

void RelayFixture::SetUp() {
  owner_ = TestServers::get().owner();
  auto r = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(r.ok());
  redis_ = std::move(*r);
  reset_relay_state(owner_, redis_);
  log_ = tmp_.path() + "/relay.log";
  app_ = TestServers::get().app();
}

void RelayFixture::TearDown() {
  if (!relay_.valid() || !relay_.running()) return;
  relay_.signal(SIGTERM);
  auto st = relay_.wait_for(std::chrono::seconds(20));
  EXPECT_TRUE(st.has_value()) << "relay did not stop on SIGTERM";
  EXPECT_EQ(st.value_or(-1), 0) << log_text();
}

std::string RelayFixture::log_text() const {
  std::ifstream in(log_);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace hi::test
