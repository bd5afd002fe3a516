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

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "api/auth.h"
#include "api/live.h"
#include "bus/bus.h"
#include "consume/intel_worker.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/router.h"
#include "pg/pool.h"
#include "redis/client.h"
#include "vault/vault.h"

namespace hi::pg {
class Transaction;
}  // namespace hi::pg

namespace hi::api {

struct ServiceOptions {
  std::string database_url;
  std::string db_role = "hashinsight_app";
  std::string redis_url;
  TokenOptions tokens;
  std::size_t db_connections = 8;
  std::chrono::milliseconds db_wait{2000};             // for a pooled connection, then 503
  std::chrono::milliseconds idempotency_wait{10'000};  // for a duplicate's first, then 409
  // Where the master keys of stored secrets live (DIR/secrets); empty = the secret routes
  // answer 503.
  std::string secrets_dir;
  // The bus /ready and /health probe; none = not checked.
  std::optional<bus::BusOptions> bus;
  // Health thresholds (HEALTH_*; the original specification's): at or above them a check is
  // degraded.
  double database_ms_degraded = 100;
  std::int64_t outbox_backlog_degraded = 1000;
  std::int64_t consumer_lag_degraded = 1000;
  // A slot holding this much WAL behind the server: the relay falls behind (the relay warns in
  // its log from RELAY_LAG_WARN_BYTES, by default the same).
  std::int64_t relay_lag_degraded_bytes = 64 << 20;
  // A sink further behind its source than this is degraded.
  double sink_lag_degraded_s = 60;
  std::int64_t dlq_degraded = 10;
  std::int64_t forecast_age_degraded_s = 172'800;
  // The read-through cache (CACHE_*_TTL_S): an entry younger than this is fresh; older, it is
  // served stale and refreshed once in the background; it expires at twice this.
  std::chrono::seconds portfolio_cache_ttl{600};
  std::chrono::seconds forecast_cache_ttl{1800};
  // How long a user's plan (limits) is reused before it is read again.
  std::chrono::seconds plan_cache_ttl{60};
  // GET /api/portfolio/stream (live.h): the heartbeat comment's period.
  std::chrono::milliseconds stream_heartbeat{15'000};
  // The dashboard's files are read from here instead of the embedded copy (web_assets.h).
  std::string web_dir;
};

// One request as a handler sees it: who asks, and the transaction it runs in.
struct Call {
  http::Request& request;
  const Principal& who;
  pg::Connection& db;
  // The request's transaction, when a write whose answer follows at once may end it with its
  // last statements' round trip (internal::record_write with `last`); null otherwise.
  pg::Transaction* commit_early = nullptr;
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

  // What a user's subscription allows (limits.cc); none = unlimited.
  struct Plan {
    std::string name;
    std::optional<std::int64_t> max_units;
    std::optional<std::int64_t> requests_per_minute;
    std::int64_t loaded_ns = 0;
  };
  // An authenticated, authorised request within its plan's rate, or the refusal; `headers`
  // (RateLimit-*) go on whatever the request answers.
  struct Admission {
    std::optional<Principal> who;
    http::Response refusal;
    std::vector<std::pair<std::string, std::string>> headers;
    // The value at admit()'s `read_key`, read in the limiter's round trip; unset when Redis
    // could not be read (or no key was asked for).
    std::optional<redis::Reply> read;
  };
  using KeyOf = std::string (*)(std::string_view user_id);
  // With `read_key`, also reads (GET) the caller's key in the same Redis round trip as the rate
  // limit: a cached read costs one round trip.
  Admission admit(http::Request& request, const std::string& scope, KeyOf read_key = nullptr);
  Result<Plan> plan_of(const Principal& who);
  // Within a write's transaction: 409 when adding `units` would exceed the plan's max_miners
  // (units = sum of quantities); serialises a user's adds on the users row. Nothing to check
  // for a plan without a unit limit (a limit added to it applies within plan_cache_ttl).
  std::optional<http::Response> check_units(Call& call, std::int64_t units);

  // A cached GET (cache.cc, consume/cache.h): the entry at `key` when fresh; when stale, it too,
  // refreshed once in the background; when missing, `fill` in a tenant transaction, stored.
  struct Filled {
    std::string body;  // the JSON answer
    std::int64_t through_seq = 0;
  };
  using Fill = std::function<Result<Filled>(Call&)>;
  http::Response cached(http::Request& request, const std::string& scope, const std::string& cache,
                        KeyOf key_of, std::chrono::seconds ttl, Fill fill);
  // Runs `fill` for `who` in a tenant transaction and stores it (compare-and-set).
  Result<Filled> fill_entry(const Principal& who, const std::string& key, std::chrono::seconds ttl,
                            const Fill& fill, http::Request* request);
  void refresh_loop();

  // Authenticates, checks `scope`, runs `work` in a tenant transaction (committed when the
  // response is a success), with the Idempotency-Key protocol when `write` and the header is
  // present.
  http::Response guarded(http::Request& request, const std::string& scope, bool write,
                         const Work& work);
  http::Response run_guarded(http::Request& request, const Principal& who, bool write,
                             const Work& work);
  http::Response run_idempotent(Call& call, const std::string& key, const Work& work);

  http::Response health(bool full);

  // The routes by area (miner_routes.cc, intel_routes.cc, business_routes.cc).
  void add_miner_routes(http::Router& router);
  void add_intelligence_routes(http::Router& router);
  void add_business_routes(http::Router& router);
  void add_secret_routes(http::Router& router);  // secret_routes.cc
  // The network series' forecast, fitted once per series for every request.
  Result<consume::NetworkForecast> network_forecast(pg::Connection& db);

  // `call` with this thread's Redis connection (redis_slots_), connecting when needed.
  Result<redis::Reply> on_redis(const std::function<Result<redis::Reply>(redis::Client&)>& call);
  // One command on this thread's Redis connection.
  Result<redis::Reply> redis_command(const std::vector<std::string>& argv);
  // The token a request carries: its Bearer token, else the one its session cookie stands for.
  std::string request_token(const http::Request& request);
  http::Response create_session(http::Request& request);
  http::Response delete_session(http::Request& request);

  ServiceOptions options_;
  Metrics& metrics_;
  Logger log_;
  pg::Pool pool_;
  TokenCache tokens_;  // options_.tokens' verified tokens

  // Idempotency keys being written by this process: duplicates wait here, holding no
  // database connection.
  std::mutex keys_mu_;
  std::condition_variable keys_freed_;
  std::set<std::string> keys_running_;

  std::mutex bus_mu_;
  std::unique_ptr<bus::Probe> bus_probe_;

  // Users' plans (limits.cc), reused for plan_cache_ttl.
  std::mutex plans_mu_;
  std::unordered_map<std::string, Plan> plans_;  // by tenant/user

  // Redis connections: one per slot, a thread uses the slot its id hashes to.
  struct RedisSlot {
    std::mutex mu;
    std::optional<redis::Client> client;
  };
  std::vector<std::unique_ptr<RedisSlot>> redis_slots_;

  // Background refreshes of stale entries: a bounded queue, one thread, one refresh per key.
  std::mutex refresh_mu_;
  std::condition_variable refresh_cv_;
  std::deque<std::pair<std::string, std::function<void()>>> refresh_queue_;  // key, job
  std::set<std::string> refreshing_;
  bool refresh_stop_ = false;
  // hashinsight_api_cache_total by cache and result, and the refreshes, resolved once: the
  // read path does not look metrics up (read-only after construction).
  struct CacheCounters {
    prometheus::Counter* fresh = nullptr;
    prometheus::Counter* stale = nullptr;
    prometheus::Counter* miss = nullptr;
    prometheus::Counter* refreshes = nullptr;
  };
  std::map<std::string, CacheCounters, std::less<>> cache_counters_;
  std::atomic<std::int64_t> cache_hits_{0};
  std::atomic<std::int64_t> cache_lookups_{0};
  std::thread refresher_;

  // The master keys (opened on first use; thread-safe once open).
  std::mutex key_ring_mu_;
  std::unique_ptr<vault::KeyRing> key_ring_;  // guarded by key_ring_mu_
  // key_ring_, opened (creating version 1 if need be) on the first call that succeeds; an error
  // when options_.secrets_dir is empty or cannot be opened (secret_routes.cc).
  Result<const vault::KeyRing*> key_ring();

  std::mutex forecast_mu_;
  std::optional<consume::NetworkForecast> forecast_fit_;

  // Live pushes; none without Redis. Last: stopped before what its reads use.
  std::unique_ptr<LiveHub> live_;
  // GET /api/portfolio/stream.
  http::Response open_stream(http::Request& request);
};

}  // namespace hi::api
