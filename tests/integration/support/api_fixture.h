// The API as a client sees it, for the API's integration tests: `hashinsight api` as a child
// process (one per test binary) against the test servers, a token issuer, and calls through the
// project's HTTP client.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/auth.h"
#include "http/client.h"
#include "schema/seed.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi::test {

constexpr const char* kApiJwtSecret = "api-test-secret";

// `hashinsight api` as a child process against the test servers (started once per binary),
// with helpers to call it as a client would. SetUp empties the tables the API writes.
class ApiFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto owner = TestServers::get().owner();
    ASSERT_TRUE(schema::seed(owner, Logger("test")).ok());
    port_ = free_port();
    log_ = new std::string(TestServers::get().dir() + "/api.log");
    SpawnOptions o;
    o.argv = {hashinsight_binary(), "api"};
    o.env = {"DATABASE_URL=" + TestServers::get().database_url(),
             "REDIS_URL=" + TestServers::get().redis_url(),
             std::string("JWT_SECRET=") + kApiJwtSecret, "HTTP_PORT=" + std::to_string(port_),
             "API_WORKERS=4", "STREAM_HEARTBEAT_MS=500",
             // A data directory of its own: the master keys of stored secrets live there.
             "HI_DATA_DIR=" + data_dir(), "LOG_FORMAT=text"};
    o.output_path = *log_;
    auto p = Process::spawn(o);
    ASSERT_TRUE(p.ok());
    api_ = new Process(std::move(*p));
    auto alive = http::parse_url("http://127.0.0.1:" + std::to_string(port_) + "/alive");
    ASSERT_TRUE(alive.ok());
    http::ClientRequest probe;
    probe.url = *alive;
    ASSERT_TRUE(eventually([&] {
      auto r = http::fetch(probe);  // refused until the server listens
      return r.ok() && r->status == 200;
    })) << log_text();
  }
  static void TearDownTestSuite() {
    if (api_ == nullptr) return;
    api_->signal(SIGTERM);
    EXPECT_EQ(api_->wait_for(std::chrono::seconds(20)).value_or(-1), 0) << log_text();
    delete api_;
    api_ = nullptr;
  }
  void SetUp() override {
    owner_ = TestServers::get().owner();
    ASSERT_TRUE(owner_
                    .exec("TRUNCATE user_miners, event_outbox, audit_logs, "
                          "api_idempotency_records, user_event_seq, treasury_trades, "
                          "crm_customers, ops_schedule, forecast_daily, user_portfolio, miners, "
                          "exchange_keys")
                    .ok());
  }

  static std::string data_dir() {
    const std::string dir = TestServers::get().dir() + "/api-data";
    std::filesystem::create_directories(dir);
    return dir;
  }
  static std::string log_text() {
    std::ifstream in(*log_);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  static http::ClientResponse call(const std::string& method, const std::string& path,
                                   const std::string& body = "", http::Pairs headers = {}) {
    auto url = http::parse_url("http://127.0.0.1:" + std::to_string(port_) + path);
    EXPECT_TRUE(url.ok());
    http::ClientRequest r;
    r.method = method;
    r.url = *url;
    r.body = body;
    r.headers = std::move(headers);
    r.timeout = std::chrono::seconds(20);
    auto res = http::fetch(r);
    EXPECT_TRUE(res.ok()) << (res.ok() ? "" : res.error().message);
    return res.ok() ? *res : http::ClientResponse{};
  }
  static http::ClientResponse get(const std::string& path, const std::string& token = "") {
    return call("GET", path, "", token.empty() ? http::Pairs{} : auth(token));
  }
  static http::Pairs auth(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
  }
  static std::string token(const std::string& user, const std::string& tenant,
                           std::vector<std::string> scopes) {
    api::TokenOptions o;
    o.secret = kApiJwtSecret;
    return api::issue_token(o, user, tenant, scopes, std::chrono::hours(1), std::time(nullptr));
  }
  std::int64_t count(const std::string& table) {
    auto r = owner_.exec("SELECT count(*) FROM " + table);
    return r.ok() ? r->int64(0, 0) : -1;
  }
  static nlohmann::json body_of(const http::ClientResponse& r) {
    return nlohmann::json::parse(r.body, nullptr, false);
  }

  static inline int port_ = 0;
  static inline Process* api_ = nullptr;
  static inline std::string* log_ = nullptr;
  pg::Connection owner_;
};

}  // namespace hi::test
