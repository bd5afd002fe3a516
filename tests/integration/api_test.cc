// The HTTP API as a client sees it: `hashinsight api` as a child process against the test
// servers, driven through the project's HTTP client. Expected values come from SQL over the raw
// tables, never from the API's own answers alone.
#include <gtest/gtest.h>
#include <signal.h>

#include <cctype>
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "api/auth.h"
#include "api/service.h"
#include "core/metrics.h"
#include "http/client.h"
#include "redis/client.h"
#include "schema/seed.h"
#include "support/api_fixture.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;
using test::TestServers;

class ApiTest : public test::ApiFixture {};

// ---------------------------------------------------------------------------------------------

// Generated from the route table: every route has a scope row, and every scoped route refuses
// a missing, a garbage and a wrongly signed token (401) and a token without its scope (403).
TEST_F(ApiTest, EveryRouteHasAScopeAndRefusesWhatItShould) {
  Metrics metrics;
  api::Service service(api::ServiceOptions{}, metrics, Logger("test"));
  http::Router router;
  service.add_routes(router);
  std::map<std::pair<std::string, std::string>, std::string> scopes;
  for (const auto& [method, pattern, scope] : api::Service::route_scopes()) {
    scopes[{method, pattern}] = scope;
  }
  ASSERT_FALSE(router.routes().empty());
  api::TokenOptions other;
  other.secret = "not-the-api-key";
  const std::string forged =
      api::issue_token(other, "101", "1", {"miners:write", "portfolio:read", "intel:read"},
                       std::chrono::hours(1), std::time(nullptr));
  const std::string scopeless = token("101", "1", {"unused:scope"});
  for (const auto& route : router.routes()) {
    const auto it = scopes.find({route.method, route.pattern});
    ASSERT_NE(it, scopes.end()) << route.method << " " << route.pattern << " has no scope row";
    if (it->second == "-") continue;
    std::string path = route.pattern;
    if (auto p = path.find(":id"); p != std::string::npos) path.replace(p, 3, "1");
    const std::string body = route.method == "GET" ? "" : "{}";
    for (const auto& [what, headers] : std::vector<std::pair<std::string, http::Pairs>>{
             {"no token", {}},
             {"garbage", {{"Authorization", "Bearer abc.def.ghi"}}},
             {"wrong key", auth(forged)},
             {"basic", {{"Authorization", "Basic YWxpY2U6cHc="}}}}) {
      auto r = call(route.method, path, body, headers);
      EXPECT_EQ(r.status, 401) << what << ": " << route.method << " " << path << " " << r.body;
      EXPECT_EQ(body_of(r)["error"]["code"], "unauthorized") << r.body;
    }
    auto r = call(route.method, path, body, auth(scopeless));
    if (it->second.empty()) {
      EXPECT_NE(r.status, 401) << route.pattern;
      EXPECT_NE(r.status, 403) << route.pattern;
    } else {
      EXPECT_EQ(r.status, 403) << route.method << " " << path << " " << r.body;
      EXPECT_EQ(body_of(r)["error"]["code"], "forbidden") << r.body;
    }
  }
}

TEST_F(ApiTest, AddingAMinerWritesTheRowItsEventAndItsAuditInOneTransaction) {
  const std::string t = token("101", "1", {"miners:write", "portfolio:read"});
  auto r = call("POST", "/api/miners", R"({"model_id": 1, "quantity": 3})", auth(t));
  ASSERT_EQ(r.status, 201) << r.body;
  const json b = body_of(r);
  ASSERT_TRUE(r.header("x-request-id").has_value());
  // The raw rows say the same.
  auto row = owner_.exec(
      "SELECT m.id, m.model_id, m.quantity, m.status, o.id, o.seq, o.kind, o.entity_id, "
      "o.payload->>'quantity' FROM user_miners m JOIN event_outbox o ON o.entity_id = m.id::text "
      "WHERE m.tenant_id = 1 AND m.user_id = 101");
  ASSERT_TRUE(row.ok());
  ASSERT_EQ(row->rows(), 1);
  EXPECT_EQ(b["id"].get<std::int64_t>(), row->int64(0, 0));
  EXPECT_EQ(row->int64(0, 1), 1);
  EXPECT_EQ(row->int64(0, 2), 3);
  EXPECT_EQ(row->text(0, 3), "active");
  EXPECT_EQ(b["event_id"], std::string(row->text(0, 4)));
  EXPECT_EQ(b["seq"].get<std::int64_t>(), row->int64(0, 5));
  EXPECT_EQ(row->text(0, 6), "miner.added");
  EXPECT_EQ(row->text(0, 8), "3");
  auto audit = owner_.exec(
      "SELECT action, entity_id, request_id, details->'after'->>'quantity', "
      "details->'before' IS NULL OR details->'before' = 'null'::jsonb FROM audit_logs");
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->rows(), 1);
  EXPECT_EQ(audit->text(0, 0), "miner.add");
  EXPECT_EQ(audit->text(0, 1), std::to_string(b["id"].get<std::int64_t>()));
  EXPECT_EQ(audit->text(0, 2), *r.header("x-request-id"));
  EXPECT_EQ(audit->text(0, 3), "3");
  EXPECT_TRUE(audit->boolean(0, 4));
  // And the user sees it.
  auto list = get("/api/miners", t);
  ASSERT_EQ(list.status, 200) << list.body;
  ASSERT_EQ(body_of(list).size(), 1u);
  EXPECT_EQ(body_of(list)[0]["quantity"], 3);
}

TEST_F(ApiTest, BadBodiesAreRefusedNamingTheFieldAndWriteNothing) {
  const std::string t = token("101", "1", {"miners:write"});
  struct Case {
    std::string body;
    int status;
    std::string field;
  };
  std::string nested;
  for (int i = 0; i < 100; ++i) nested += "{\"a\":";
  nested += "1";
  for (int i = 0; i < 100; ++i) nested += "}";
  const std::vector<Case> cases = {
      {R"({"model_id": 1, "quantity": "3"})", 400, "quantity"},
      {R"({"quantity": 3})", 400, "model_id"},
      {R"({"model_id": 999999, "quantity": 3})", 400, "model_id"},
      {R"({"model_id": 1, "quantity": -2})", 400, "quantity"},
      {R"({"model_id": 1, "quantity": 100000000})", 400, "quantity"},
      {R"({"model_id": 1.5, "quantity": 1})", 400, "model_id"},
      {R"({"model_id": 1, "quantity": 1, "status": "stolen"})", 400, "status"},
      {R"({"model_id": 1, "quantity": 1, "owner": "x"})", 400, "owner"},
      {R"({"model_id": 1, "quantity": 1, "electricity_price_usd_kwh": 1e308})", 400,
       "electricity_price_usd_kwh"},
      {R"({"model_id": 1, "quantity": 1)", 400, ""},
      {"[1, 2]", 400, ""},
      {"{\"model_id\": 1, \"quantity\": 1, \"status\": \"\xff\xfe\"}", 400, ""},
      {nested, 400, ""},
      {std::string(2 << 20, ' '), 413, ""},
  };
  const auto miners = count("user_miners"), events = count("event_outbox"),
             audits = count("audit_logs");
  for (const auto& c : cases) {
    auto r = call("POST", "/api/miners", c.body, auth(t));
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 80) << " -> " << r.body;
    const json b = body_of(r);
    ASSERT_TRUE(b.is_object() && b.contains("error")) << r.body;
    EXPECT_FALSE(b["error"].value("message", "").empty());
    EXPECT_EQ(b["error"].value("field", ""), c.field) << c.body.substr(0, 80);
  }
  EXPECT_EQ(count("user_miners"), miners);
  EXPECT_EQ(count("event_outbox"), events);
  EXPECT_EQ(count("audit_logs"), audits);
}

TEST_F(ApiTest, IdempotencyKeyReplaysRefusesAnotherBodyAndSerialisesDuplicates) {
  const std::string t = token("101", "1", {"miners:write"});
  // SQL meta-characters in the key are stored literally.
  const std::string key = "k-1'; DROP TABLE user_miners; --";
  const std::string body = R"({"model_id": 2, "quantity": 1})";
  auto first = call("POST", "/api/miners", body,
                    {{"Authorization", "Bearer " + t}, {"Idempotency-Key", key}});
  ASSERT_EQ(first.status, 201) << first.body;
  auto again = call("POST", "/api/miners", body,
                    {{"Authorization", "Bearer " + t}, {"Idempotency-Key", key}});
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.body, first.body);
  EXPECT_EQ(again.header("idempotent-replayed").value_or(""), "true");
  auto other = call("POST", "/api/miners", R"({"model_id": 2, "quantity": 2})",
                    {{"Authorization", "Bearer " + t}, {"Idempotency-Key", key}});
  EXPECT_EQ(other.status, 422) << other.body;
  EXPECT_EQ(count("user_miners"), 1);
  EXPECT_EQ(count("event_outbox"), 1);
  auto stored = owner_.exec("SELECT idem_key FROM api_idempotency_records");
  ASSERT_TRUE(stored.ok() && stored->rows() == 1);
  EXPECT_EQ(stored->text(0, 0), key);
  // The same key belongs to another user separately.
  auto bob = call("POST", "/api/miners", body,
                  {{"Authorization", "Bearer " + token("102", "1", {"miners:write"})},
                   {"Idempotency-Key", key}});
  EXPECT_EQ(bob.status, 201) << bob.body;
  EXPECT_EQ(count("user_miners"), 2);

  // 20 at once with a new key: one row, one event, 20 identical answers.
  std::vector<http::ClientResponse> answers(20);
  {
    std::vector<std::jthread> clients;
    for (int i = 0; i < 20; ++i) {
      clients.emplace_back([&, i] {
        answers[static_cast<std::size_t>(i)] =
            call("POST", "/api/miners", R"({"model_id": 3, "quantity": 5})",
                 {{"Authorization", "Bearer " + t}, {"Idempotency-Key", "burst-1"}});
      });
    }
  }
  for (const auto& a : answers) {
    EXPECT_EQ(a.status, 201) << a.body;
    EXPECT_EQ(a.body, answers[0].body);
  }
  auto burst = owner_.exec("SELECT count(*) FROM user_miners WHERE model_id = 3");
  EXPECT_EQ(burst->int64(0, 0), 1);
  auto burst_events =
      owner_.exec("SELECT count(*) FROM event_outbox WHERE idempotency_key = 'burst-1'");
  EXPECT_EQ(burst_events->int64(0, 0), 1);
}

TEST_F(ApiTest, AnotherTenantsMinerIsAMissingOne) {
  const std::string alice = token("101", "1", {"miners:write"});
  auto made = call("POST", "/api/miners", R"({"model_id": 1, "quantity": 1})", auth(alice));
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string id = std::to_string(body_of(made)["id"].get<std::int64_t>());
  const std::string status = R"({"status": "maintenance"})";
  auto frank = call("PATCH", "/api/miners/" + id + "/status", status,
                    auth(token("201", "2", {"miners:write"})));
  auto missing = call("PATCH", "/api/miners/987654321/status", status,
                      auth(token("201", "2", {"miners:write"})));
  EXPECT_EQ(frank.status, 404) << frank.body;
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(body_of(frank)["error"]["code"], body_of(missing)["error"]["code"]);
  auto bob = call("PATCH", "/api/miners/" + id + "/status", status,
                  auth(token("102", "1", {"miners:write"})));
  EXPECT_EQ(bob.status, 404) << "another user of the same tenant";
  auto row = owner_.exec("SELECT status FROM user_miners WHERE id = $1", {id});
  EXPECT_EQ(row->text(0, 0), "active");
  // The owner changes it: the event and the audit row carry before and after.
  auto ok = call("PATCH", "/api/miners/" + id + "/status", status, auth(alice));
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto ev = owner_.exec(
      "SELECT payload->>'from', payload->>'to' FROM event_outbox WHERE kind = "
      "'miner.status_changed' AND entity_id = $1",
      {id});
  ASSERT_EQ(ev->rows(), 1);
  EXPECT_EQ(ev->text(0, 0), "active");
  EXPECT_EQ(ev->text(0, 1), "maintenance");
  auto audit = owner_.exec(
      "SELECT details->'before'->>'status', details->'after'->>'status' FROM audit_logs WHERE "
      "action = 'miner.status'");
  ASSERT_EQ(audit->rows(), 1);
  EXPECT_EQ(audit->text(0, 0), "active");
  EXPECT_EQ(audit->text(0, 1), "maintenance");
}

// The page's EventSource cannot send headers: POST /api/session trades the token for an
// HttpOnly, SameSite=Strict cookie that every route accepts, until DELETE or the token's expiry.
TEST_F(ApiTest, ASessionCookieStandsForItsTokenUntilItEnds) {
  const std::string t = token("101", "1", {"portfolio:read"});
  auto made = call("POST", "/api/session", "", auth(t));
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string set = std::string(made.header("set-cookie").value_or(""));
  EXPECT_NE(set.find("HttpOnly"), std::string::npos) << set;
  EXPECT_NE(set.find("SameSite=Strict"), std::string::npos) << set;
  const auto max_age = std::stol(set.substr(set.find("Max-Age=") + 8));
  EXPECT_GT(max_age, 3500);  // the token's hour, less the test's seconds
  EXPECT_LE(max_age, 3600);
  const std::string cookie = set.substr(0, set.find(';'));  // hi_session=<id>
  auto with_cookie = call("GET", "/api/miners", "", {{"Cookie", "theme=dark; " + cookie}});
  EXPECT_EQ(with_cookie.status, 200) << with_cookie.body;
  // The cookie carries the token's scopes, no more.
  auto write =
      call("POST", "/api/miners", R"({"model_id": 1, "quantity": 1})", {{"Cookie", cookie}});
  EXPECT_EQ(write.status, 403) << write.body;
  // A made-up id is nobody.
  auto forged = call("GET", "/api/miners", "", {{"Cookie", "hi_session=" + std::string(64, 'a')}});
  EXPECT_EQ(forged.status, 401);
  auto ended = call("DELETE", "/api/session", "", {{"Cookie", cookie}});
  EXPECT_EQ(ended.status, 204);
  EXPECT_NE(std::string(ended.header("set-cookie").value_or("")).find("Max-Age=0"),
            std::string::npos);
  auto after = call("GET", "/api/miners", "", {{"Cookie", cookie}});
  EXPECT_EQ(after.status, 401) << after.body;
}

// A reloaded page holds only the HttpOnly cookie: GET /api/session says whom it (or a Bearer
// token) speaks for, in POST /api/session's shape, and nobody once the session ended.
TEST_F(ApiTest, GetSessionSaysWhomTheTokenOrTheCookieSpeaksFor) {
  api::TokenOptions issuer;
  issuer.secret = test::kApiJwtSecret;
  const std::int64_t issued_at = std::time(nullptr);
  const std::vector<std::string> scopes = {"portfolio:read", "intel:read"};
  const std::string t =
      api::issue_token(issuer, "103", "1", scopes, std::chrono::hours(2), issued_at);
  const json expected = {
      {"user_id", "103"}, {"tenant_id", "1"}, {"scopes", scopes}, {"expires_at", issued_at + 7200}};

  auto bearer = get("/api/session", t);
  ASSERT_EQ(bearer.status, 200) << bearer.body;
  EXPECT_EQ(body_of(bearer), expected) << bearer.body;
  EXPECT_FALSE(bearer.header("set-cookie").has_value());  // reading makes no session

  auto made = call("POST", "/api/session", "", auth(t));
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string set = std::string(made.header("set-cookie").value_or(""));
  const std::string cookie = set.substr(0, set.find(';'));  // hi_session=<id>
  ASSERT_EQ(cookie.rfind("hi_session=", 0), 0u) << set;
  auto by_cookie = call("GET", "/api/session", "", {{"Cookie", cookie}});
  ASSERT_EQ(by_cookie.status, 200) << by_cookie.body;
  EXPECT_EQ(body_of(by_cookie), expected) << by_cookie.body;

  auto nobody = call("GET", "/api/session");
  EXPECT_EQ(nobody.status, 401) << nobody.body;
  EXPECT_EQ(body_of(nobody)["error"]["code"], "unauthorized") << nobody.body;

  ASSERT_EQ(call("DELETE", "/api/session", "", {{"Cookie", cookie}}).status, 204);
  auto ended = call("GET", "/api/session", "", {{"Cookie", cookie}});
  EXPECT_EQ(ended.status, 401) << ended.body;
  EXPECT_EQ(body_of(ended)["error"]["code"], "unauthorized") << ended.body;
}

// CDC never marks outbox rows processed: the backlog is what was committed after the relay's
// last confirmed transaction, as its status hash says.
TEST_F(ApiTest, TheOutboxBacklogIsWhatTheRelayHasNotConfirmed) {
  auto app = TestServers::get().app();
  test::write_events(app, "101", "miner.added", 2);
  auto cut = owner_.exec(
      "SELECT to_char(max(created_at) AT TIME ZONE 'UTC', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM event_outbox");
  ASSERT_TRUE(cut.ok());
  const std::string confirmed(cut->text(0, 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  test::write_events(app, "101", "miner.added", 3);
  auto redis = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(redis.ok());
  ASSERT_TRUE(redis
                  ->command({"HSET", "hi:status:relay", "mode", "cdc", "streaming", "1",
                             "confirmed_commit_at", confirmed})
                  .ok());
  auto expected =
      owner_.exec("SELECT count(*) FROM event_outbox WHERE created_at > $1", {confirmed});
  auto h = body_of(get("/api/health"));
  (void)redis->command({"DEL", "hi:status:relay"});
  ASSERT_TRUE(h["checks"].contains("outbox")) << h.dump();
  EXPECT_EQ(h["checks"]["outbox"]["backlog"].get<std::int64_t>(), expected->int64(0, 0));
  EXPECT_EQ(expected->int64(0, 0), 3);
  // Without a relay status (poll mode, or nothing confirmed yet): rows not marked processed.
  auto unprocessed = owner_.exec("SELECT count(*) FROM event_outbox WHERE NOT processed");
  h = body_of(get("/api/health"));
  EXPECT_EQ(h["checks"]["outbox"]["backlog"].get<std::int64_t>(), unprocessed->int64(0, 0));
}

// The latest network snapshot, read straight from the table: what every valuation uses.
struct Snapshot {
  double price, difficulty, hashrate_ehs, reward;  // reward = subsidy + fees per block
};
Snapshot latest_snapshot(pg::Connection& owner) {
  auto r = owner.exec(
      "SELECT btc_price_usd, difficulty, network_hashrate_ehs, block_reward_btc + "
      "fees_btc_per_block FROM network_snapshots ORDER BY taken_at DESC LIMIT 1");
  EXPECT_TRUE(r.ok() && r->rows() == 1);
  return {r->float64(0, 0), r->float64(0, 1), r->float64(0, 2), r->float64(0, 3)};
}

TEST_F(ApiTest, BulkImportWritesEveryRowAndOneEvent) {
  const std::string t = token("101", "1", {"miners:write"});
  auto r = call("POST", "/api/miners/bulk",
                R"({"miners": [{"model_id": 1, "quantity": 2}, {"model_id": 2, "quantity": 5,
                    "status": "inactive"}, {"model_id": 1, "quantity": 7,
                    "electricity_price_usd_kwh": 0.04}]})",
                auth(t));
  ASSERT_EQ(r.status, 201) << r.body;
  const json b = body_of(r);
  EXPECT_EQ(b["count"], 3);
  ASSERT_EQ(b["ids"].size(), 3u);
  auto rows = owner_.exec(
      "SELECT count(*), sum(quantity), count(*) FILTER (WHERE status = 'inactive'), "
      "min(id), max(id) FROM user_miners WHERE tenant_id = 1 AND user_id = 101");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->int64(0, 0), 3);
  EXPECT_EQ(rows->int64(0, 1), 2 + 5 + 7);
  EXPECT_EQ(rows->int64(0, 2), 1);
  EXPECT_EQ(b["ids"][0].get<std::int64_t>(), rows->int64(0, 3));
  EXPECT_EQ(b["ids"][2].get<std::int64_t>(), rows->int64(0, 4));
  // ONE event for the import, carrying the count, and one audit row.
  auto ev = owner_.exec("SELECT kind, payload->>'count', payload->>'units', seq FROM event_outbox");
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->rows(), 1);
  EXPECT_EQ(ev->text(0, 0), "miner.bulk_imported");
  EXPECT_EQ(ev->text(0, 1), "3");
  EXPECT_EQ(ev->text(0, 2), "14");
  EXPECT_EQ(b["seq"].get<std::int64_t>(), ev->int64(0, 3));
  EXPECT_EQ(count("audit_logs"), 1);

  // One bad row refuses the whole import, naming the row and the field.
  const auto miners = count("user_miners"), events = count("event_outbox");
  struct Case {
    std::string body, field;
  };
  std::string too_many = R"({"miners": [)";
  for (int i = 0; i < 10'001; ++i) too_many += std::string(i ? "," : "") + "{}";
  too_many += "]}";
  for (const auto& c : std::vector<Case>{
           {R"({"miners": [{"model_id": 1, "quantity": 1}, {"model_id": 1, "quantity": 0}]})",
            "miners[1].quantity"},
           {R"({"miners": [{"model_id": 1, "quantity": 1}, {"model_id": 1, "quantity": 1},
               {"model_id": 999999, "quantity": 1}]})",
            "miners[2].model_id"},
           {R"({"miners": [{"model_id": 1, "quantity": 1, "colour": "red"}]})", "miners[0].colour"},
           {R"({"miners": [7]})", "miners[0]"},
           {R"({"miners": []})", "miners"},
           {R"({"miners": {"model_id": 1}})", "miners"},
           {too_many, "miners"}}) {
    auto bad = call("POST", "/api/miners/bulk", c.body, auth(t));
    EXPECT_EQ(bad.status, 400) << bad.body;
    EXPECT_EQ(body_of(bad)["error"].value("field", ""), c.field) << bad.body;
  }
  EXPECT_EQ(count("user_miners"), miners);
  EXPECT_EQ(count("event_outbox"), events);
}

TEST_F(ApiTest, TheProjectionValuesActiveMinersWithDecayingHashrate) {
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, "
                        "electricity_price_usd_kwh, status) VALUES (1, 101, 1, 10, 0.05, "
                        "'active'), (1, 101, 2, 99, 0.05, 'sold')")
                  .ok());
  auto m = owner_.exec("SELECT hashrate_ths, power_w FROM miner_models WHERE id = 1");
  ASSERT_TRUE(m.ok());
  const double ths = m->float64(0, 0), watts = m->float64(0, 1);
  const Snapshot s = latest_snapshot(owner_);
  // By hand: BTC/day = H/s x 86400 x reward / (difficulty x 2^32); cost = kW x 24 h x price.
  const double revenue0 =
      10 * ths * 1e12 * 86400 * s.reward / (s.difficulty * 4294967296.0) * s.price;
  const double cost = 10 * watts / 1000 * 24 * 0.05;

  const std::string t = token("101", "1", {"portfolio:read"});
  auto r = get("/api/portfolio/projection?days=30&decay_per_month=0.02", t);
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = body_of(r);
  ASSERT_EQ(b["points"].size(), 30u);
  double total = 0;
  for (int d : {0, 15, 29}) {
    const json& p = b["points"][d];
    const double factor = std::pow(0.98, d / 30.4375);  // 30.4375 days a month
    EXPECT_NEAR(p["revenue_usd_day"].get<double>(), revenue0 * factor, 1e-9 * revenue0) << d;
    EXPECT_NEAR(p["cost_usd_day"].get<double>(), cost, 1e-9 * cost) << d;
    EXPECT_NEAR(p["hashrate_ths"].get<double>(), 10 * ths * factor, 1e-9 * ths) << d;
  }
  for (const auto& p : b["points"]) total += p["profit_usd_day"].get<double>();
  EXPECT_NEAR(b["total_profit_usd"].get<double>(), total, 1e-6 * std::abs(total) + 1e-9);
  EXPECT_NEAR(b["points"][29]["cumulative_profit_usd"].get<double>(), total,
              1e-6 * std::abs(total) + 1e-9);
  for (const std::string q : {"days=0", "days=366", "days=abc", "days=2.5", "decay_per_month=-1"}) {
    auto bad = get("/api/portfolio/projection?" + q, t);
    EXPECT_EQ(bad.status, 400) << q << " " << bad.body;
  }
}

TEST_F(ApiTest, TheForecastIsComputedOnFirstReadStoredAndThenRead) {
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, status) "
                        "VALUES (1, 102, 1, 4, 'active')")
                  .ok());
  const std::string t = token("102", "1", {"intel:read"});
  auto first = get("/api/intelligence/forecast", t);
  ASSERT_EQ(first.status, 200) << first.body;
  const json a = body_of(first);
  EXPECT_TRUE(a["computed"].get<bool>());
  for (const char* metric : {"btc_price_usd", "difficulty", "profit_usd_day"}) {
    ASSERT_EQ(a["series"][metric]["points"].size(), 7u) << metric;
  }
  // Stored: the tenant's price and difficulty rows and this user's profit rows, for the seven
  // days after the last observation.
  auto rows = owner_.exec(
      "SELECT count(*) FILTER (WHERE user_id IS NULL), count(*) FILTER (WHERE user_id = 102), "
      "min(day)::text, (SELECT (max(day) + 1)::text FROM network_snapshots) "
      "FROM forecast_daily WHERE tenant_id = 1");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->int64(0, 0), 14);
  EXPECT_EQ(rows->int64(0, 1), 7);
  EXPECT_EQ(rows->text(0, 2), rows->text(0, 3));
  EXPECT_EQ(a["series"]["btc_price_usd"]["points"][0]["day"], std::string(rows->text(0, 3)));
  auto v = owner_.exec(
      "SELECT value FROM forecast_daily WHERE tenant_id = 1 AND user_id = 102 ORDER BY day");
  ASSERT_TRUE(v.ok());
  for (int i = 0; i < 7; ++i) {
    EXPECT_DOUBLE_EQ(a["series"]["profit_usd_day"]["points"][i]["value"].get<double>(),
                     v->float64(i, 0));
  }
  // fitted_at: the newest fit, RFC 3339 UTC with microseconds.
  auto fitted = owner_.exec(
      "SELECT to_char(max(fitted_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
      "FROM forecast_daily WHERE tenant_id = 1 AND (user_id IS NULL OR user_id = 102)");
  ASSERT_TRUE(fitted.ok());
  EXPECT_EQ(a["fitted_at"], std::string(fitted->text(0, 0))) << first.body;
  // The interval brackets the point forecast.
  for (const auto& p : a["series"]["btc_price_usd"]["points"]) {
    EXPECT_LE(p["lower_95"].get<double>(), p["value"].get<double>());
    EXPECT_GE(p["upper_95"].get<double>(), p["value"].get<double>());
  }
  // Read again: the cached answer (fresh), the same bytes.
  auto second = get("/api/intelligence/forecast", t);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.header("x-cache").value_or(""), "fresh");
  EXPECT_EQ(second.body, first.body);
  // Without the cache entry: read from the stored rows, not computed again.
  ASSERT_TRUE(redis::Client::connect(TestServers::get().redis_url())
                  ->command({"DEL", "forecast:102"})
                  .ok());
  auto third = get("/api/intelligence/forecast", t);
  ASSERT_EQ(third.status, 200) << third.body;
  EXPECT_EQ(third.header("x-cache").value_or(""), "miss");
  EXPECT_FALSE(body_of(third)["computed"].get<bool>());
  EXPECT_EQ(body_of(third)["series"], a["series"]);
  EXPECT_EQ(body_of(third)["fitted_at"], a["fitted_at"]);
}

TEST_F(ApiTest, CalculateGivesBothAlgorithmsAndTheirDivergenceAndWritesNothing) {
  const std::string t = token("101", "1", {"calc:read"});
  const auto events = count("event_outbox"), audits = count("audit_logs");
  auto r = call("POST", "/api/calculate",
                R"({"hashrate_ths": 100, "power_w": 3000, "units": 2,
                    "electricity_usd_per_kwh": 0.05, "btc_price_usd": 60000,
                    "difficulty": 1e14, "network_hashrate_ehs": 700,
                    "block_reward_btc": 3.125, "fees_per_block_btc": 0})",
                auth(t));
  ASSERT_EQ(r.status, 200) << r.body;
  const json res = body_of(r)["result"];
  // By hand: 200e12 H/s x 86400 s x 3.125 / (1e14 x 2^32) and 200e12 / 700e18 x 144 x 3.125.
  const double by_difficulty = 200e12 * 86400 * 3.125 / (1e14 * 4294967296.0);
  const double by_share = 200e12 / 700e18 * 144 * 3.125;
  EXPECT_NEAR(res["btc_per_day_difficulty"].get<double>(), by_difficulty, 1e-15);
  EXPECT_NEAR(res["btc_per_day_network_share"].get<double>(), by_share, 1e-15);
  EXPECT_NEAR(res["algorithm_divergence_fraction"].get<double>(),
              (by_share - by_difficulty) / by_difficulty, 1e-12);
  EXPECT_NEAR(res["cost_usd_per_day"].get<double>(), 2 * 3.0 * 24 * 0.05, 1e-9);  // 7.2 USD
  EXPECT_NEAR(res["revenue_usd_per_day"].get<double>(), by_difficulty * 60000, 1e-9);

  // A catalogue model with the network taken from the latest snapshot.
  auto m = call("POST", "/api/calculate", R"({"model_id": 1, "units": 3})", auth(t));
  ASSERT_EQ(m.status, 200) << m.body;
  const Snapshot s = latest_snapshot(owner_);
  EXPECT_DOUBLE_EQ(body_of(m)["inputs"]["btc_price_usd"].get<double>(), s.price);
  EXPECT_DOUBLE_EQ(body_of(m)["inputs"]["difficulty"].get<double>(), s.difficulty);
  for (const auto& [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"units": 1})", "model_id"},
           {R"({"model_id": 1, "hashrate_ths": 5})", "model_id"},
           {R"({"model_id": 1, "pool_fee_fraction": 1.5})", "pool_fee_fraction"},
           {R"({"model_id": 1, "algorithm": "guess"})", "algorithm"},
           {R"({"model_id": 424242})", "model_id"}}) {
    auto bad = call("POST", "/api/calculate", body, auth(t));
    EXPECT_EQ(bad.status, 400) << body << " " << bad.body;
    EXPECT_EQ(body_of(bad)["error"].value("field", ""), field) << body;
  }
  EXPECT_EQ(count("event_outbox"), events);
  EXPECT_EQ(count("audit_logs"), audits);
}

TEST_F(ApiTest, CurtailmentStoresTheScheduleAndEmitsItsEvent) {
  ASSERT_TRUE(owner_
                  .exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, status) "
                        "VALUES (1, 101, 1, 10, 'active')")
                  .ok());
  auto m = owner_.exec("SELECT hashrate_ths, power_w FROM miner_models WHERE id = 1");
  ASSERT_TRUE(m.ok());
  const double ths = m->float64(0, 0), kw = m->float64(0, 1) / 1000;
  const Snapshot s = latest_snapshot(owner_);
  // Four hours cost 5 USD/kWh, far above any miner's break-even; the rest cost 0.03.
  json prices = json::array();
  for (int h = 0; h < 24; ++h) prices.push_back(h >= 17 && h < 21 ? 5.0 : 0.03);
  const json req = {
      {"max_curtailment_hours", 4}, {"day", "2030-01-02"}, {"hourly_prices_usd_per_kwh", prices}};
  const std::string t = token("101", "1", {"intel:read"});
  http::Pairs h = auth(t);
  h.emplace_back("Idempotency-Key", "curtail-1");
  auto r = call("POST", "/api/intelligence/optimize/curtailment", req.dump(), h);
  ASSERT_EQ(r.status, 201) << r.body;
  const json b = body_of(r);
  // By hand: one unit earns r per hour; in the four dear hours it costs kW x 5 to run.
  const double r_unit =
      ths * 1e12 * 86400 * s.reward / (s.difficulty * 4294967296.0) / 24 * s.price;
  const double gain = 10 * 4 * (kw * 5.0 - r_unit);
  ASSERT_GT(gain, 0);
  EXPECT_EQ(b["plan"]["unit_hours_off"], 40);
  EXPECT_EQ(b["plan"]["hours_with_curtailment"], 4);
  EXPECT_NEAR(b["plan"]["profit_gain_usd"].get<double>(), gain, 1e-6 * gain);
  for (int hour : {17, 18, 19, 20}) EXPECT_EQ(b["plan"]["schedule"][hour]["running_units"][0], 0);
  EXPECT_EQ(b["plan"]["schedule"][3]["running_units"][0], 10);
  auto row = owner_.exec(
      "SELECT o.id, o.day::text, o.profit_usd, e.kind, e.payload->>'schedule_id', e.seq "
      "FROM ops_schedule o JOIN event_outbox e ON e.entity_id = o.id::text WHERE o.user_id = 101");
  ASSERT_TRUE(row.ok());
  ASSERT_EQ(row->rows(), 1);
  EXPECT_EQ(b["id"].get<std::int64_t>(), row->int64(0, 0));
  EXPECT_EQ(row->text(0, 1), "2030-01-02");
  EXPECT_NEAR(row->float64(0, 2), b["plan"]["total_profit_usd"].get<double>(), 1e-9);
  EXPECT_EQ(row->text(0, 3), "ops.schedule_created");
  EXPECT_EQ(row->text(0, 4), std::to_string(row->int64(0, 0)));
  EXPECT_EQ(count("audit_logs"), 1);
  // Idempotent: the same key replays, nothing more is written.
  auto again = call("POST", "/api/intelligence/optimize/curtailment", req.dump(), h);
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.body, r.body);
  EXPECT_EQ(count("event_outbox"), 1);
  for (const auto& [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"max_curtailment_hours": 25})", "max_curtailment_hours"},
           {R"({"max_curtailment_hours": 2, "day": "2030-02-30"})", "day"},
           {R"({"max_curtailment_hours": 2, "hourly_prices_usd_per_kwh": [1, 2]})",
            "hourly_prices_usd_per_kwh"}}) {
    auto bad = call("POST", "/api/intelligence/optimize/curtailment", body, auth(t));
    EXPECT_EQ(bad.status, 400) << body << " " << bad.body;
    EXPECT_EQ(body_of(bad)["error"].value("field", ""), field) << body;
  }
  EXPECT_EQ(count("ops_schedule"), 1);
}

TEST_F(ApiTest, TreasuryTradesAndCrmCustomersEmitTheirEvents) {
  const std::string t = token("101", "1", {"treasury:trade", "crm:write"});
  auto trade = call("POST", "/api/treasury/execute",
                    R"({"side": "buy", "amount_btc": 0.5, "price_usd": 60000})", auth(t));
  ASSERT_EQ(trade.status, 201) << trade.body;
  auto customer =
      call("POST", "/api/crm/customers",
           R"({"name": "O'Brien Mining; DROP TABLE x", "email": "ops@obrien.example"})", auth(t));
  ASSERT_EQ(customer.status, 201) << customer.body;
  auto rows = owner_.exec(
      "SELECT (SELECT amount_btc::text || ' ' || price_usd::text || ' ' || side FROM "
      "treasury_trades), (SELECT name FROM crm_customers), "
      "(SELECT (payload->>'notional_usd')::numeric = 30000 FROM event_outbox "
      "WHERE kind = 'treasury.trade_executed'), "
      "(SELECT payload->>'name' FROM event_outbox WHERE kind = 'crm.customer_created')");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->text(0, 0), "0.50000000 60000.00 buy");
  EXPECT_EQ(rows->text(0, 1), "O'Brien Mining; DROP TABLE x");
  EXPECT_TRUE(rows->boolean(0, 2));  // notional 0.5 x 60,000
  EXPECT_EQ(rows->text(0, 3), "O'Brien Mining; DROP TABLE x");
  EXPECT_EQ(count("audit_logs"), 2);
  for (const auto& [route, body, field] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"/api/treasury/execute", R"({"side": "short", "amount_btc": 1})", "side"},
           {"/api/treasury/execute", R"({"side": "sell", "amount_btc": -1})", "amount_btc"},
           {"/api/treasury/execute", R"({"side": "sell"})", "amount_btc"},
           {"/api/crm/customers", R"({"name": ""})", "name"},
           {"/api/crm/customers", R"({"name": "x", "email": "not-an-address"})", "email"}}) {
    auto bad = call("POST", route, body, auth(t));
    EXPECT_EQ(bad.status, 400) << body << " " << bad.body;
    EXPECT_EQ(body_of(bad)["error"].value("field", ""), field) << body;
  }
  EXPECT_EQ(count("event_outbox"), 2);
}

TEST_F(ApiTest, HealthAndMetricsAnswerWithoutAToken) {
  auto alive = get("/alive");
  EXPECT_EQ(alive.status, 200);
  auto ready = get("/ready");
  EXPECT_EQ(ready.status, 200) << ready.body;
  auto health = get("/api/health");
  EXPECT_NE(health.status, 0);
  const json h = body_of(health);
  EXPECT_EQ(h["checks"]["database"]["status"], "healthy") << health.body;
  EXPECT_EQ(h["checks"]["redis"]["status"], "healthy") << health.body;
  EXPECT_TRUE(h["checks"].contains("relay")) << health.body;
  // The bus (Redis Streams here) answers; the shapes are CONTRACTS' "Health JSON".
  EXPECT_EQ(h["checks"]["bus"]["status"], "healthy") << health.body;
  EXPECT_EQ(h["checks"]["bus"]["kind"], "redis") << health.body;
  EXPECT_TRUE(h["checks"]["bus"]["response_time_ms"].is_number()) << health.body;
  EXPECT_TRUE(h["checks"]["dlq"]["count"].is_number()) << health.body;
  EXPECT_TRUE(h["checks"]["forecast"].contains("freshness_sec")) << health.body;
  EXPECT_FALSE(h.value("version", "").empty()) << health.body;
  EXPECT_TRUE(body_of(ready)["checks"].contains("bus")) << ready.body;
  (void)get("/api/miner-models", token("105", "1", {"calc:read"}));
  auto metrics = get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("hashinsight_http_requests_total"), std::string::npos);
  EXPECT_NE(metrics.body.find("/api/miner-models"), std::string::npos);
}

// The relay's check follows its slot: WAL the slot may lose at the next checkpoint, or too much
// WAL held, degrades it; WAL already lost makes it unhealthy (the relay publishes the slot's
// wal_status and lag_bytes; set here).
TEST_F(ApiTest, RelayHealthFollowsTheSlotsWalStatusAndLag) {
  auto redis = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(redis.ok()) << redis.error().message;
  for (const auto& [wal_status, want] :
       std::vector<std::pair<std::string, std::string>>{{"reserved", "healthy"},
                                                        {"extended", "healthy"},
                                                        {"unreserved", "degraded"},
                                                        {"lost", "unhealthy"}}) {
    ASSERT_TRUE(redis
                    ->command({"HSET", "hi:status:relay", "streaming", "1", "bus_degraded", "0",
                               "wal_status", wal_status, "lag_bytes", "0"})
                    .ok());
    const json h = body_of(get("/api/health"));
    EXPECT_EQ(h["checks"]["relay"]["wal_status"], wal_status);
    EXPECT_EQ(h["checks"]["relay"]["status"], want) << wal_status;
  }
  // A slot holding WAL the relay has not confirmed: degraded from HEALTH_RELAY_LAG_BYTES, by
  // default 64 MiB (67,108,864 bytes).
  for (const auto& [lag, want] : std::vector<std::pair<std::string, std::string>>{
           {"67108863", "healthy"}, {"67108864", "degraded"}}) {
    ASSERT_TRUE(redis
                    ->command({"HSET", "hi:status:relay", "streaming", "1", "bus_degraded", "0",
                               "wal_status", "reserved", "lag_bytes", lag})
                    .ok());
    const json h = body_of(get("/api/health"));
    EXPECT_EQ(h["checks"]["relay"]["lag_bytes"], std::stoll(lag));
    EXPECT_EQ(h["checks"]["relay"]["status"], want) << lag;
  }
  (void)redis->command({"DEL", "hi:status:relay"});
}

// Splits a shell command line into words: '...' literal, "..." with $NAME expanded from `vars`.
std::vector<std::string> shell_words(const std::string& line,
                                     const std::map<std::string, std::string>& vars) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(std::exchange(word, {}));
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const auto end = line.find('\'', i + 1);
      word += line.substr(i + 1, end - i - 1);
      i = end;
    } else if (c == '"' || c == '$') {
      const auto end = c == '"' ? line.find('"', i + 1) : i;
      const std::string inner = c == '"' ? line.substr(i + 1, end - i - 1) : "";
      if (c == '$') {  // a bare $NAME
        std::size_t j = i + 1;
        while (j < line.size() && (std::isalnum(line[j]) || line[j] == '_')) ++j;
        word += vars.at(line.substr(i + 1, j - i - 1));
        i = j - 1;
        continue;
      }
      for (std::size_t k = 0; k < inner.size(); ++k) {
        if (inner[k] != '$') {
          word += inner[k];
          continue;
        }
        std::size_t j = k + 1;
        while (j < inner.size() && (std::isalnum(inner[j]) || inner[j] == '_')) ++j;
        word += vars.at(inner.substr(k + 1, j - k - 1));
        k = j - 1;
      }
      i = end;
    } else {
      word += c;
    }
  }
  if (in_word) words.push_back(word);
  return words;
}

// Every `# expect N` + curl example of docs/api.md, run against the live server.
TEST_F(ApiTest, EveryExampleOfTheApiDocsAnswersAsDocumented) {
  std::ifstream in(std::string(HI_DOCS_DIR) + "/api.md");
  ASSERT_TRUE(in) << "docs/api.md missing";
  std::map<std::string, std::string> vars = {
      {"API", "http://127.0.0.1:" + std::to_string(port_)},
      {"TOKEN", token("101", "1",
                      {"miners:write", "portfolio:read", "intel:read", "calc:read",
                       "treasury:trade", "crm:write"})},
      {"VIEWER", token("105", "1", {"portfolio:read"})},
      {"MINER_ID", "0"}};
  std::string line;
  int expected = 0, examples = 0;
  while (std::getline(in, line)) {
    if (line.starts_with("# expect ")) {
      expected = std::stoi(line.substr(9));
      continue;
    }
    if (!line.starts_with("curl ") || expected == 0) continue;
    const auto words = shell_words(line, vars);
    http::ClientRequest r;
    r.method = "GET";
    std::string url;
    for (std::size_t i = 1; i < words.size(); ++i) {
      if (words[i] == "-s") continue;
      if (words[i] == "-X") {
        r.method = words[++i];
      } else if (words[i] == "-H") {
        const std::string& h = words[++i];
        const auto colon = h.find(':');
        r.headers.emplace_back(h.substr(0, colon), h.substr(h.find_first_not_of(' ', colon + 1)));
      } else if (words[i] == "-d") {
        r.body = words[++i];
        if (r.method == "GET") r.method = "POST";
      } else {
        url = words[i];
      }
    }
    auto parsed = http::parse_url(url);
    ASSERT_TRUE(parsed.ok()) << line;
    r.url = *parsed;
    auto res = http::fetch(r);
    ASSERT_TRUE(res.ok()) << line;
    EXPECT_EQ(res->status, expected) << line << "\n" << res->body;
    // The id of the first miner added is what the PATCH examples use.
    if (r.method == "POST" && res->status == 201 && vars["MINER_ID"] == "0") {
      vars["MINER_ID"] = std::to_string(body_of(*res)["id"].get<std::int64_t>());
    }
    ++examples;
    expected = 0;
  }
  EXPECT_GE(examples, 10);
}

}  // namespace
}  // namespace hi
