// The HTTP API's routes (DESIGN "HTTP API", CONTRACTS): authentication, scopes, tenancy,
// idempotency, audit and health around handlers that read and write through PostgreSQL.
//
//   api::Service service(options, metrics, log);
//   http::Router router;
//   service.add_routes(router);
//   auto server = http::Server::start(server_options, std::move(router), log);
//
// Every route but the health ones takes `Authorization: Bearer <token>` (auth.h), or the
// session cookie POST /api/session exchanged for one (an opaque id in Redis that expires with
// the token, HttpOnly, SameSite=Strict: what the page's EventSource sends), and needs the
// scope its table row names; each request's database work is one transaction run as
// hashinsight_app with app.tenant_id from the token, so another tenant's rows are invisible
// (a 404, the same as a missing row). A write inserts its row, its outbox event and its
// audit_logs row in that one transaction; with an Idempotency-Key the response is stored in
// it too and replayed for 24 h (a different body under the same key is 422; a duplicate that
// arrives while the first runs waits for it, up to 10 s, then 409).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "api/auth.h"
#include "bus/bus.h"
#include "consume/intel_worker.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/router.h"
#include "pg/pool.h"
#include "redis/client.h"

namespace hi::api {

struct ServiceOptions {
  std::string database_url;
  std::string db_role = "hashinsight_app";
  std::string redis_url;
  TokenOptions tokens;
  std::size_t db_connections = 8;
  std::chrono::milliseconds db_wait{2000};             // for a pooled connection, then 503
  std::chrono::milliseconds idempotency_wait{10'000};  // for a duplicate's first, then 409
  // The bus /ready and /health probe; none = not checked.
  std::optional<bus::BusOptions> bus;
  // Health thresholds (HEALTH_*; the original specification's): at or above them a check is
  // degraded.
  double database_ms_degraded = 100;
  std::int64_t outbox_backlog_degraded = 1000;
  std::int64_t consumer_lag_degraded = 1000;
  std::int64_t dlq_degraded = 10;
  std::int64_t forecast_age_degraded_s = 172'800;
};

// One request as a handler sees it: who asks, and the transaction it runs in.
struct Call {
  http::Request& request;
  const Principal& who;
  pg::Connection& db;
};

class Service {
 public:
  // `metrics` (not owned) is what /metrics serves: give the server the same registry.
  Service(ServiceOptions options, Metrics& metrics, Logger log);
  ~Service();

  // Every route of this issue, with its scope (the scope matrix tests read them back).
  void add_routes(http::Router& router);

  // The scope each route needs: "" = any valid token, "-" = none (health, metrics).
  static const std::vector<std::tuple<std::string, std::string, std::string>>& route_scopes();

 private:
  using Work = std::function<http::Response(Call&)>;

  // Authenticates, checks `scope`, runs `work` in a tenant transaction (committed when the
  // response is a success), with the Idempotency-Key protocol when `write` and the header is
  // present.
  http::Response guarded(http::Request& request, const std::string& scope, bool write,
                         const Work& work);
  http::Response run_idempotent(Call& call, const std::string& key, const Work& work);

  http::Response health(bool full);

  // The routes by area (miner_routes.cc, intel_routes.cc, business_routes.cc).
  void add_miner_routes(http::Router& router);
  void add_intelligence_routes(http::Router& router);
  void add_business_routes(http::Router& router);
  // The network series' forecast, fitted once per series for every request.
  Result<consume::NetworkForecast> network_forecast(pg::Connection& db);

  // Runs `fn` with a connected Redis client (under redis_mu_); kUnavailable when there is none.
  Result<redis::Reply> redis_command(const std::vector<std::string>& argv);
  // The token a request carries: its Bearer token, else the one its session cookie stands for.
  std::string request_token(const http::Request& request);
  http::Response create_session(http::Request& request);
  http::Response delete_session(http::Request& request);

  ServiceOptions options_;
  Metrics& metrics_;
  Logger log_;
  pg::Pool pool_;
  std::mutex redis_mu_;
  std::optional<redis::Client> redis_;

  // Idempotency keys being written by this process: duplicates wait here, holding no
  // database connection.
  std::mutex keys_mu_;
  std::condition_variable keys_freed_;
  std::set<std::string> keys_running_;

  std::mutex bus_mu_;
  std::unique_ptr<bus::Probe> bus_probe_;

  std::mutex forecast_mu_;
  std::optional<consume::NetworkForecast> forecast_fit_;
};

}  // namespace hi::api
