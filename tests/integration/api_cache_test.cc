// The API's second part as a client sees it: the stale-while-revalidate cache of
// GET /api/portfolio (entries and compare-and-set in consume/cache.h), the plan's request rate
// (GCRA in Redis) and its unit limit. Expected values come from the raw rows and hand arithmetic.
#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "redis/client.h"
#include "support/api_fixture.h"

namespace hi {
namespace {

using nlohmann::json;
using test::TestServers;

class ApiCacheTest : public test::ApiFixture {
 protected:
  void SetUp() override {
    ApiFixture::SetUp();
    auto r = redis::Client::connect(TestServers::get().redis_url());
    ASSERT_TRUE(r.ok());
    redis_ = std::move(*r);
  }
  // A portfolio row as the worker would have written it.
  void portfolio_row(const std::string& tenant, const std::string& user, int units,
                     std::int64_t through_seq) {
    ASSERT_TRUE(owner_
                    .exec("INSERT INTO user_portfolio (tenant_id, user_id, units, through_seq) "
                          "VALUES ($1, $2, $3, $4)",
                          {tenant, user, std::to_string(units), std::to_string(through_seq)})
                    .ok());
  }
  // The value of a counter in the API's /metrics (0 when absent).
  static double metric(const std::string& line_prefix) {
    const std::string text = get("/metrics").body;
    const auto at = text.find(line_prefix);
    if (at == std::string::npos) return 0;
    return std::stod(text.substr(at + line_prefix.size() + 1));
  }
  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  redis::Client redis_;
};

// A stale entry is answered at once to every concurrent reader and refreshed exactly once.
TEST_F(ApiCacheTest, AStaleEntryIsServedAtOnceAndRefreshedOnce) {
  portfolio_row("1", "103", 7, 5);
  // Stored 700 s ago: older than the 600 s TTL, so stale (Redis keeps it for 1,200 s).
  const std::string stale = R"({"through_seq":5,"stored_at":)" +
                            std::to_string(now_ms() - 700'000) + R"(,"body":{"marker":"old"}})";
  ASSERT_TRUE(redis_.command({"SET", "user_portfolio:103", stale, "PX", "500000"}).ok());
  const std::string refreshes = R"(hashinsight_api_cache_refreshes_total{cache="portfolio"})";
  const double before = metric(refreshes);
  const std::string t = token("103", "1", {"portfolio:read"});
  std::atomic<int> old_bodies{0}, new_bodies{0}, misses{0}, failures{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 50; ++i) {
    readers.emplace_back([&] {
      auto r = get("/api/portfolio", t);
      if (r.status != 200) ++failures;
      if (r.header("x-cache").value_or("") == "miss") ++misses;
      const json b = body_of(r);
      if (b.value("marker", "") == "old") ++old_bodies;
      if (b.value("units", -1) == 7) ++new_bodies;
    });
  }
  for (auto& th : readers) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(misses.load(), 0) << "nobody waited for the database";
  EXPECT_GT(old_bodies.load(), 0);
  EXPECT_EQ(old_bodies.load() + new_bodies.load(), 50);
  // The refresh lands: the entry now holds the row (units 7 at through_seq 5), fresh.
  ASSERT_TRUE(test::eventually([&] {
    auto v = redis_.command({"GET", "user_portfolio:103"});
    if (!v.ok()) return false;
    const json e = json::parse(v->str, nullptr, false);
    return e.is_object() && e.contains("body") && e["body"].value("units", -1) == 7;
  })) << redis_.command({"GET", "user_portfolio:103"})->str
      << "\n"
      << log_text();
  EXPECT_EQ(metric(refreshes) - before, 1) << "one refresh for 50 stale reads";
  auto after = get("/api/portfolio", t);
  EXPECT_EQ(after.header("x-cache").value_or(""), "fresh");
  EXPECT_EQ(body_of(after)["units"], 7);
}

// A fill computed from an older row than the worker's tombstone stands for does not replace
// the tombstone; one at least as new does.
TEST_F(ApiCacheTest, AFillThatLostTheRaceToAnInvalidationIsNotStored) {
  portfolio_row("1", "104", 3, 5);
  const std::string t = token("104", "1", {"portfolio:read"});
  const std::string newer = R"({"through_seq":9,"invalidated":true})";
  ASSERT_TRUE(redis_.command({"SET", "user_portfolio:104", newer, "PX", "500000"}).ok());
  auto r = get("/api/portfolio", t);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-cache").value_or(""), "miss");
  EXPECT_EQ(body_of(r)["through_seq"], 5);
  EXPECT_EQ(redis_.command({"GET", "user_portfolio:104"})->str, newer);
  // The worker's row catches up (through_seq 9): the next fill is stored.
  ASSERT_TRUE(owner_.exec("UPDATE user_portfolio SET through_seq = 9 WHERE user_id = 104").ok());
  auto again = get("/api/portfolio", t);
  EXPECT_EQ(again.header("x-cache").value_or(""), "miss");
  const auto stored = redis_.command({"GET", "user_portfolio:104"})->str;
  EXPECT_NE(stored.find(R"("through_seq":9,"stored_at")"), std::string::npos) << stored;
  EXPECT_EQ(get("/api/portfolio", t).header("x-cache").value_or(""), "fresh");
}

// A plan of 5 requests a minute: a burst of 5, then 429 until one more is due (60 / 5 = 12 s).
TEST_F(ApiCacheTest, ThePlansRequestRateIsEnforcedWithItsHeaders) {
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO subscription_plans (id, name, max_miners, "
                        "requests_per_minute) VALUES (91, 'test-5rpm', NULL, 5) "
                        "ON CONFLICT (id) DO NOTHING")
                  .ok());
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO user_subscriptions (tenant_id, user_id, plan_id) VALUES "
                        "(2, 202, 91) ON CONFLICT (tenant_id, user_id) DO UPDATE SET plan_id = 91")
                  .ok());
  ASSERT_TRUE(redis_.command({"DEL", "rl:2:202"}).ok());
  const std::string t = token("202", "2", {"portfolio:read"});
  for (int i = 0; i < 5; ++i) {
    auto r = get("/api/miners", t);
    ASSERT_EQ(r.status, 200) << i << " " << r.body;
    EXPECT_EQ(r.header("ratelimit-limit").value_or(""), "5");
    EXPECT_EQ(r.header("ratelimit-remaining").value_or(""), std::to_string(4 - i)) << i;
  }
  auto refused = get("/api/miners", t);
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(body_of(refused)["error"]["code"], "rate_limited");
  EXPECT_EQ(refused.header("ratelimit-remaining").value_or(""), "0");
  // The next request is due 12 s after the first (rounded up to whole seconds).
  const int retry = std::stoi(std::string(refused.header("retry-after").value_or("0")));
  EXPECT_GE(retry, 11);
  EXPECT_LE(retry, 12);
  // An unlimited plan (enterprise, user 101) carries no limit.
  auto free_rein = get("/api/miners", token("101", "1", {"portfolio:read"}));
  EXPECT_EQ(free_rein.status, 200);
  EXPECT_FALSE(free_rein.header("ratelimit-limit").has_value());
}

// A plan of 3 units: adds beyond it are 409 naming the plan, and write nothing.
TEST_F(ApiCacheTest, ThePlansMinerUnitsAreALimit) {
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO subscription_plans (id, name, max_miners, "
                        "requests_per_minute) VALUES (92, 'test-3units', 3, NULL) "
                        "ON CONFLICT (id) DO NOTHING")
                  .ok());
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO user_subscriptions (tenant_id, user_id, plan_id) VALUES "
                        "(2, 203, 92) ON CONFLICT (tenant_id, user_id) DO UPDATE SET plan_id = 92")
                  .ok());
  const std::string t = token("203", "2", {"miners:write"});
  auto first = call("POST", "/api/miners", R"({"model_id": 1, "quantity": 2})", auth(t));
  ASSERT_EQ(first.status, 201) << first.body;
  const auto events = count("event_outbox");
  for (const std::string body :
       {R"({"model_id": 1, "quantity": 2})",
        R"({"miners": [{"model_id": 1, "quantity": 1}, {"model_id": 2, "quantity": 1}]})"}) {
    const bool bulk = body.find("miners") != std::string::npos;
    auto over = call("POST", bulk ? "/api/miners/bulk" : "/api/miners", body, auth(t));
    EXPECT_EQ(over.status, 409) << over.body;
    EXPECT_NE(body_of(over)["error"]["message"].get<std::string>().find("test-3units"),
              std::string::npos)
        << over.body;
  }
  auto units = owner_.exec("SELECT sum(quantity) FROM user_miners WHERE user_id = 203");
  ASSERT_TRUE(units.ok());
  EXPECT_EQ(units->int64(0, 0), 2);
  EXPECT_EQ(count("event_outbox"), events);
  // Exactly up to the limit is allowed: 2 + 1 = 3.
  EXPECT_EQ(call("POST", "/api/miners", R"({"model_id": 1, "quantity": 1})", auth(t)).status, 201);
}

}  // namespace
}  // namespace hi
