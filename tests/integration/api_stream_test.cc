// GET /api/portfolio/stream against the real parts: `hashinsight api` and `hashinsight worker
// portfolio` as child processes, events published to Redis Streams as the relay publishes them.
// A page sees the current portfolio at once, every commit of the worker as a push carrying
// through_seq, only its own tenant's and user's pushes, and is brought up to date after the API
// lost its subscription to the workers' notices.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "http/event_stream.h"
#include "support/api_fixture.h"
#include "support/consume_helpers.h"
#include "support/relay_helpers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::TestServers;

class ApiStreamTest : public test::ApiFixture {
 protected:
  void SetUp() override {
    ApiFixture::SetUp();
    auto r = redis::Client::connect(TestServers::get().redis_url());
    ASSERT_TRUE(r.ok());
    redis_ = std::move(*r);
    test::reset_relay_state(owner_, redis_);
    test::reset_consumer_state(owner_, redis_);
    app_ = TestServers::get().app();
    worker_log_ = TestServers::get().dir() + "/stream-worker.log";
    worker_.emplace(test::start_worker("portfolio", worker_log_,
                                       {"--retry-backoff-ms", "20", "--poll-ms", "200"}));
  }
  void TearDown() override {
    if (worker_) {
      worker_->signal(SIGTERM);
      (void)worker_->wait_for(std::chrono::seconds(10));
    }
  }

  static http::EventStream open(const std::string& user, const std::string& tenant,
                                const std::string& last_event_id = "") {
    auto url =
        http::parse_url("http://127.0.0.1:" + std::to_string(port_) + "/api/portfolio/stream");
    EXPECT_TRUE(url.ok());
    http::Pairs headers = auth(token(user, tenant, {"portfolio:read"}));
    if (!last_event_id.empty()) headers.emplace_back("Last-Event-ID", last_event_id);
    auto s = http::EventStream::open(*url, headers);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return std::move(*s);
  }
  // The next portfolio event within `wait`, or none.
  static std::optional<http::Event> next(
      http::EventStream& s, std::chrono::milliseconds wait = std::chrono::seconds(15)) {
    auto e = s.next(wait);
    EXPECT_TRUE(e.ok()) << (e.ok() ? "" : e.error().message);
    if (!e.ok() || !*e) return std::nullopt;
    EXPECT_EQ((*e)->event, "portfolio");
    return **e;
  }
  // A change the worker commits: `rows` more miners for the user and one event for it.
  test::TestEvent commit(const std::string& tenant, const std::string& user, int rows) {
    test::give_miners(owner_, tenant, user, rows);
    auto events = test::outbox_events(app_, tenant, user, 1);
    test::publish(redis_, events);
    return events.at(0);
  }
  std::int64_t units_in_sql(const std::string& user) {
    auto r = owner_.exec(
        "SELECT coalesce(sum(quantity), 0) FROM user_miners WHERE user_id = $1::bigint AND "
        "status = 'active'",
        {user});
    return r.ok() ? r->int64(0, 0) : -1;
  }

  redis::Client redis_;
  pg::Connection app_;
  std::string worker_log_;
  std::optional<Process> worker_;
};

TEST_F(ApiStreamTest, SendsTheCurrentPortfolioAtOnceThenEveryCommitOfItsOwnUserOnly) {
  auto alice = open("101", "1");
  auto first = next(alice);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->id, "0");  // nothing computed yet: the empty portfolio
  EXPECT_EQ(json::parse(first->data)["units"], 0);
  auto frank = open("201", "2");  // another tenant
  ASSERT_TRUE(next(frank));
  auto bob = open("102", "1");  // another user of the same tenant
  ASSERT_TRUE(next(bob));

  const auto ev = commit("1", "101", 2);
  auto pushed = next(alice);
  ASSERT_TRUE(pushed) << test::file_text(worker_log_);
  const json body = json::parse(pushed->data);
  EXPECT_GE(std::stoll(pushed->id), ev.seq);
  EXPECT_EQ(body["through_seq"], std::stoll(pushed->id));
  EXPECT_EQ(body["user_id"], "101");
  EXPECT_EQ(body["units"], units_in_sql("101"));  // give_miners: quantities 1 + 2
  EXPECT_EQ(body["units"], 3);
  // The same JSON as GET /api/portfolio.
  EXPECT_EQ(body_of(get("/api/portfolio", token("101", "1", {"portfolio:read"}))), body);

  // Neither the other tenant nor the other user got it ...
  EXPECT_FALSE(next(frank, std::chrono::milliseconds(1500)));
  EXPECT_FALSE(next(bob, std::chrono::milliseconds(200)));
  // ... while they do get their own (the positive control).
  const auto own = commit("2", "201", 1);
  auto frank_push = next(frank);
  ASSERT_TRUE(frank_push);
  EXPECT_GE(std::stoll(frank_push->id), own.seq);
  EXPECT_EQ(json::parse(frank_push->data)["user_id"], "201");
  EXPECT_FALSE(next(alice, std::chrono::milliseconds(500)));
}

TEST_F(ApiStreamTest, ResumesFromLastEventIdAndKeepsIdleStreamsAliveWithHeartbeats) {
  const auto ev = commit("1", "101", 1);
  auto s = open("101", "1");
  auto current = next(s);
  ASSERT_TRUE(current);
  if (std::stoll(current->id) < ev.seq) current = next(s);  // the worker's commit came after
  ASSERT_TRUE(current);
  ASSERT_EQ(std::stoll(current->id), ev.seq);

  // A page that has seen the current portfolio gets nothing new on reconnecting ...
  auto up_to_date = open("101", "1", current->id);
  EXPECT_FALSE(next(up_to_date, std::chrono::milliseconds(1200)));
  // ... but heartbeats (STREAM_HEARTBEAT_MS=500 in the fixture).
  EXPECT_GE(up_to_date.comments(), 1u);
  // One that is behind gets the current portfolio at once.
  auto behind = open("101", "1", std::to_string(ev.seq - 1));
  auto caught_up = next(behind, std::chrono::seconds(3));
  ASSERT_TRUE(caught_up);
  EXPECT_EQ(caught_up->id, current->id);
}

TEST_F(ApiStreamTest, AChangeWhoseNoticeWasLostArrivesWhenTheApiResubscribes) {
  const auto ev = commit("1", "103", 1);
  auto s = open("103", "1");
  std::optional<http::Event> seen = next(s);
  ASSERT_TRUE(seen);
  while (std::stoll(seen->id) < ev.seq) {
    seen = next(s);
    ASSERT_TRUE(seen);
  }
  // A commit whose notice nobody heard: the row changes and no notice is published.
  ASSERT_TRUE(owner_
                  .exec("UPDATE user_portfolio SET through_seq = through_seq + 5, units = units "
                        "+ 7 WHERE user_id = 103")
                  .ok());
  EXPECT_FALSE(next(s, std::chrono::milliseconds(500)));
  // The API's subscription drops (as when Redis restarts); on resubscribing it brings every
  // open stream up to date.
  auto killed = redis_.command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed.ok());
  ASSERT_GE(killed->integer, 1) << "the API holds a subscription";
  auto pushed = next(s);
  ASSERT_TRUE(pushed) << log_text();
  EXPECT_EQ(std::stoll(pushed->id), ev.seq + 5);
  EXPECT_EQ(json::parse(pushed->data)["units"], units_in_sql("103") + 7);
}

TEST_F(ApiStreamTest, RefusesWithoutTheScope) {
  auto url = http::parse_url("http://127.0.0.1:" + std::to_string(port_) + "/api/portfolio/stream");
  ASSERT_TRUE(url.ok());
  auto s = http::EventStream::open(*url, auth(token("101", "1", {"calc:read"})));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("403"), std::string::npos) << s.error().message;
}

// The page and its scripts are public and built into the binary; each file is the one in web/
// (Chart.js: the one npm installed there).
TEST_F(ApiStreamTest, ServesTheDashboardFilesWithoutAToken) {
  const std::string web = HI_WEB_DIR;
  const std::pair<std::string, std::string> files[] = {
      {"/analytics/main", web + "/index.html"},
      {"/analytics/assets/app.js", web + "/app.js"},
      {"/analytics/assets/style.css", web + "/style.css"},
      {"/analytics/assets/chart.umd.js", web + "/node_modules/chart.js/dist/chart.umd.js"}};
  for (const auto& [path, file] : files) {
    auto r = get(path);
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.body, test::file_text(file)) << path;
    EXPECT_NE(r.header("content-type")
                  .value_or("")
                  .find(path.ends_with(".css")   ? "text/css"
                        : path.ends_with("main") ? "text/html"
                                                 : "javascript"),
              std::string::npos)
        << path;
  }
  EXPECT_EQ(get("/analytics/assets/missing.js").status, 404);
  EXPECT_EQ(get("/analytics/assets/index.html").status, 404);
}

}  // namespace
}  // namespace hi
