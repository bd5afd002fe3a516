// The intel, crm and audit workers against real PostgreSQL and Redis (crm: a local HTTP
// receiver; audit: the relay's table capture).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/consume_helpers.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::eventually;
using test::TestServers;

// A local webhook receiver: records each request; answers 500 to events whose id is in
// `fail_ids`, 204 otherwise.
class Receiver {
 public:
  struct Request {
    std::map<std::string, std::string> headers;  // lowercase names
    std::string body;
  };
  Receiver() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 64);
    thread_ = std::thread([this] { loop(); });
  }
  ~Receiver() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hooks/crm"; }
  void fail(const std::string& id) {
    std::lock_guard l(mu_);
    fail_ids_.insert(id);
  }
  std::vector<Request> requests() {
    std::lock_guard l(mu_);
    return requests_;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string in;
      char buf[4096];
      std::size_t need = std::string::npos;
      while (need == std::string::npos || in.size() < need) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
        const auto end = in.find("\r\n\r\n");
        if (end != std::string::npos && need == std::string::npos) {
          const auto cl = in.find("Content-Length: ");
          need = end + 4 + (cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16)));
        }
      }
      Request r;
      const auto end = in.find("\r\n\r\n");
      std::size_t pos = in.find("\r\n") + 2;
      while (pos < end) {
        const auto eol = in.find("\r\n", pos);
        const std::string line = in.substr(pos, eol - pos);
        const auto colon = line.find(": ");
        std::string name = line.substr(0, colon);
        for (auto& ch : name) ch = static_cast<char>(std::tolower(ch));
        r.headers[name] = line.substr(colon + 2);
        pos = eol + 2;
      }
      r.body = in.substr(end + 4);
      bool fail;
      {
        std::lock_guard l(mu_);
        fail = fail_ids_.contains(r.headers["idempotency-key"]);
        requests_.push_back(r);
      }
      const std::string resp =
          fail ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
               : "HTTP/1.1 204 No Content\r\n\r\n";
      ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  int fd_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::set<std::string> fail_ids_;  // guarded by mu_
  std::vector<Request> requests_;   // guarded by mu_
};

class WorkersTest : public test::ConsumerFixture {
 protected:
  // The relay capturing user_miners, streaming, and the audit worker reading its topic.
  void start_relay_and_audit() {
    const std::string tables = "RELAY_CAPTURE_TABLES=public.user_miners";
    test::capture_tables(owner_, {"public.user_miners"});
    const std::size_t relay_index = procs_.size();
    procs_.push_back(test::start_relay({tables}, log(relay_index)));
    ASSERT_TRUE(eventually([&] {
      return test::file_text(log(relay_index)).find("streaming") != std::string::npos;
    })) << test::file_text(log(relay_index));
    worker("audit", {}, {tables});
  }
};

TEST_F(WorkersTest, IntelRefreshesForecastRowsAndInvalidatesTheCache) {
  test::give_miners(owner_, "1", "101", 2);
  test::give_miners(owner_, "1", "102", 1);
  ASSERT_TRUE(redis_.command({"SET", "forecast:101", "stale"}).ok());
  auto events = test::outbox_events(app_, "1", "101", 2);
  auto ops = test::outbox_events(app_, "1", "102", 1, "ops.schedule_created");
  events.insert(events.end(), ops.begin(), ops.end());
  test::publish(redis_, events);
  worker("intel");
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, "intel-group") == 3; }))
      << test::file_text(log(0));
  EXPECT_EQ(scalar("SELECT count(*) FROM forecast_daily WHERE tenant_id = 1 AND user_id IS NULL "
                   "AND metric = 'btc_price_usd'"),
            7);
  EXPECT_EQ(scalar("SELECT count(*) FROM forecast_daily WHERE tenant_id = 1 AND user_id IS NULL "
                   "AND metric = 'difficulty' AND model LIKE '%log%'"),
            7);
  for (const char* u : {"101", "102"}) {
    EXPECT_EQ(scalar("SELECT count(*) FROM forecast_daily WHERE user_id = $1 AND metric = "
                     "'profit_usd_day' AND lower_95 <= value AND value <= upper_95",
                     {u}),
              7)
        << u;
  }
  // A tombstone at the rows' fitted_at (microseconds) replaced the cached entry.
  EXPECT_EQ(
      redis_.command({"GET", "forecast:101"})->str,
      "{\"through_seq\":" +
          std::to_string(scalar("SELECT (extract(epoch FROM max(fitted_at)) * 1000000)::bigint "
                                "FROM forecast_daily WHERE user_id = 101")) +
          ",\"invalidated\":true}");
  // Another event refreshes (upserts), never duplicates, the rows.
  test::publish(redis_, test::outbox_events(app_, "1", "101", 1));
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, "intel-group") == 4; }));
  EXPECT_EQ(scalar("SELECT count(*) FROM forecast_daily WHERE user_id = 101"), 7);
}

TEST_F(WorkersTest, CrmDeliversEachEventToTheWebhookAndParksWhatItRejects) {
  Receiver receiver;
  auto events = test::outbox_events(app_, "1", "103", 3, "crm.customer_created");
  receiver.fail(events[1].id);
  test::publish(redis_, events);
  test::publish(redis_, {events[0]});  // a redelivery: not delivered again
  worker("crm", {"--webhook-url", receiver.url(), "--max-attempts", "3", "--batch-size", "1"});
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, "crm-sync-group") == 2; }))
      << test::file_text(log(0));
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT retry_count FROM event_dlq WHERE event_id = $1", {events[1].id}) == 3;
  })) << test::file_text(log(0));
  std::map<std::string, int> per_id;
  for (const auto& r : receiver.requests()) {
    ++per_id[r.headers.at("idempotency-key")];
    EXPECT_EQ(r.headers.at("x-event-kind"), "crm.customer_created");
    EXPECT_EQ(json::parse(r.body)["id"], r.headers.at("idempotency-key"));
  }
  EXPECT_EQ(per_id[events[0].id], 1);
  EXPECT_EQ(per_id[events[1].id], 3);  // the attempts
  EXPECT_EQ(per_id[events[2].id], 1);
}

TEST_F(WorkersTest, AuditRecordsEveryCapturedChangeOnceAndAnswersQueries) {
  const std::size_t relay_index = procs_.size();
  ASSERT_NO_FATAL_FAILURE(start_relay_and_audit());
  auto id = owner_.exec(
      "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) VALUES (2, 201, 3, 4) "
      "RETURNING id");
  ASSERT_TRUE(id.ok());
  const std::string miner(id->text(0, 0));
  ASSERT_TRUE(owner_.exec("UPDATE user_miners SET quantity = 5 WHERE id = $1", {miner}).ok());
  ASSERT_TRUE(owner_.exec("DELETE FROM user_miners WHERE id = $1", {miner}).ok());
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM change_audit_log WHERE row_key @> $1::jsonb",
                  {"{\"id\":" + miner + "}"}) == 3;
  })) << test::file_text(log(relay_index + 1));
  // A redelivered change adds nothing.
  auto entries = test::read_stream(redis_, "cdc.public.user_miners");
  ASSERT_EQ(entries.size(), 3u);
  std::vector<std::string> argv = {"XADD",  "cdc.public.user_miners", "*", "key", entries[1].key,
                                   "value", entries[1].value};
  for (const auto& [k, v] : entries[1].headers) {
    argv.push_back(k);
    argv.push_back(v);
  }
  ASSERT_TRUE(redis_.command(argv).ok());
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, "audit-group") == 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(scalar("SELECT count(*) FROM change_audit_log"), 3);

  auto q = test::run_cli(
      {"audit", "query", "--table", "user_miners", "--key", "{\"id\":" + miner + "}"});
  ASSERT_EQ(q.status, 0) << q.output;
  std::vector<json> rows;
  std::stringstream lines(q.output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] == '{') rows.push_back(json::parse(line));
  }
  ASSERT_EQ(rows.size(), 3u) << q.output;
  EXPECT_EQ(rows[0]["op"], "insert");
  EXPECT_EQ(rows[0]["tenant_id"], 2);
  EXPECT_EQ(rows[0]["table"], "public.user_miners");
  EXPECT_EQ(rows[0]["after"]["quantity"], 4);
  EXPECT_EQ(rows[1]["op"], "update");
  EXPECT_EQ(rows[1]["after"]["quantity"], 5);
  EXPECT_NE(
      std::find(rows[1]["changed_columns"].begin(), rows[1]["changed_columns"].end(), "quantity"),
      rows[1]["changed_columns"].end());
  EXPECT_EQ(rows[2]["op"], "delete");
  EXPECT_EQ(rows[0]["event_id"], test::header(entries[0], "id"));
  EXPECT_FALSE(rows[0]["lsn"].get<std::string>().empty());
  EXPECT_FALSE(rows[0]["commit_ts"].is_null());
  EXPECT_EQ(rows[0]["correlation_id"], rows[0]["lsn"]);
  // Time range: nothing before the epoch's next day... and everything since an hour ago.
  auto none = test::run_cli(
      {"audit", "query", "--table", "user_miners", "--until", "2000-01-01T00:00:00Z"});
  EXPECT_EQ(none.output.find('{'), std::string::npos) << none.output;
}

// A snapshot's rows (op "r") are recorded once each, as operation 'snapshot', with their tenant.
TEST_F(WorkersTest, AuditRecordsSnapshotRowsAsSnapshots) {
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) "
                        "SELECT 2, 201, 1 + g % 5, g FROM generate_series(1, 25) g")
                  .ok());
  const std::int64_t rows = scalar("SELECT count(*) FROM user_miners");
  const std::size_t relay_index = procs_.size();
  ASSERT_NO_FATAL_FAILURE(start_relay_and_audit());
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO relay_snapshots (table_name, chunk_size) VALUES "
                        "('public.user_miners', 10)")
                  .ok());
  ASSERT_TRUE(eventually([&] {
    return scalar("SELECT count(*) FROM change_audit_log WHERE operation = 'snapshot'") == rows;
  })) << test::file_text(log(relay_index))
      << test::file_text(log(relay_index + 1));
  // Each row once, under its own tenant, with every column as changed (like an insert).
  EXPECT_EQ(scalar("SELECT count(DISTINCT row_key) FROM change_audit_log WHERE operation = "
                   "'snapshot'"),
            rows);
  EXPECT_EQ(scalar("SELECT count(*) FROM change_audit_log a JOIN user_miners m ON a.row_key = "
                   "jsonb_build_object('id', m.id) WHERE a.operation = 'snapshot' AND "
                   "a.tenant_id = m.tenant_id AND 'quantity' = ANY (a.changed_columns)"),
            rows);
}

}  // namespace
}  // namespace hi
