#include "api/service.h"

#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>

#include "api/internal/support.h"
#include "api/web_assets.h"
#include "core/ids.h"
#include "core/strings.h"
#include "core/time.h"
#include "core/version.h"
#include "pg/transaction.h"
#include "schema/outbox.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;
using internal::db_failure;
using nlohmann::json;

std::string sha256_hex(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return hex_encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

// The bearer token of the request, or empty.
std::string_view bearer(const http::Request& r) {
  const auto h = r.header("authorization");
  if (!h) return {};
  constexpr std::string_view kPrefix = "Bearer ";
  if (h->size() <= kPrefix.size() ||
      !std::equal(kPrefix.begin(), kPrefix.end(), h->begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    return {};
  }
  return h->substr(kPrefix.size());
}

// A number a status hash holds, or `fallback` when it holds something else.
std::int64_t to_int(std::string_view text, std::int64_t fallback = 0) {
  std::int64_t v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  return ec == std::errc() && p == text.data() + text.size() ? v : fallback;
}

constexpr std::string_view kSessionCookie = "hi_session";

// The cache check: below this hit rate, over at least this many reads, it is degraded.
constexpr double kCacheHitRateHealthy = 0.5;
constexpr std::int64_t kCacheLookupsToJudge = 100;

// The value of cookie `name` in a Cookie header ("a=1; hi_session=abc"), or empty.
std::string_view cookie(const http::Request& r, std::string_view name) {
  const auto h = r.header("cookie");
  if (!h) return {};
  std::string_view rest = *h;
  while (!rest.empty()) {
    const auto end = rest.find(';');
    std::string_view item = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.size() > name.size() && item.substr(0, name.size()) == name &&
        item[name.size()] == '=') {
      return item.substr(name.size() + 1);
    }
  }
  return {};
}

bool is_session_id(std::string_view id) {
  return id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// What POST and GET /api/session answer: who the token speaks for, never the token.
Response session_answer(const Principal& who, int status) {
  return Response::json({{"user_id", who.user_id},
                         {"tenant_id", who.tenant_id},
                         {"scopes", who.scopes},
                         {"expires_at", who.expires_at}},
                        status);
}

bool is_sane_key(std::string_view key) {
  return !key.empty() && key.size() <= 255 &&
         std::all_of(key.begin(), key.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

}  // namespace

Service::Service(ServiceOptions options, Metrics& metrics, Logger log)
    : options_(std::move(options)),
      metrics_(metrics),
      log_(std::move(log)),
      pool_(pg::Pool::Options{options_.database_url, options_.db_role,
                              static_cast<int>(options_.db_connections), options_.db_wait}) {
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options_.db_connections); ++i) {
    redis_slots_.push_back(std::make_unique<RedisSlot>());
  }
  for (const char* cache : {"portfolio", "forecast"}) {
    auto result = [&](const char* r) {
      return &metrics_.counter("hashinsight_api_cache_total", "Cached reads by cache and result",
                               {{"cache", cache}, {"result", r}});
    };
    cache_counters_[cache] = {
        result("fresh"), result("stale"), result("miss"),
        &metrics_.counter("hashinsight_api_cache_refreshes_total",
                          "Background refreshes of stale entries", {{"cache", cache}})};
  }
  refresher_ = std::thread([this] { refresh_loop(); });
  if (!options_.redis_url.empty()) {
    LiveHub::Options live;
    live.redis_url = options_.redis_url;
    live.heartbeat = options_.stream_heartbeat;
    live_ = std::make_unique<LiveHub>(
        live,
        [this](const std::string& tenant,
               const std::vector<std::string>& users) -> Result<std::vector<PortfolioView>> {
          auto lease = pool_.acquire();
          if (!lease) return lease.error();
          pg::Transaction tx(**lease);
          if (auto s = tx.begin(tenant); !s) return s.error();
          auto views = internal::portfolio_views(**lease, users);
          if (!views) return views.error();
          if (auto s = tx.commit(); !s) return s.error();
          return views;
        },
        metrics_, Logger("api.live"));
  }
}

Response Service::open_stream(http::Request& request) {
  Admission in = admit(request, "portfolio:read");
  if (!in.who) return std::move(in.refusal);
  if (!live_) return Response::fail(ErrorCode::kUnavailable, "live updates need Redis");
  // EventSource sends the id of the last event it saw when it reconnects.
  std::int64_t last = -1;
  if (auto h = request.header("last-event-id")) {
    std::int64_t v = 0;
    const auto* end = h->data() + h->size();
    if (std::from_chars(h->data(), end, v).ptr == end && v >= 0) last = v;
  }
  Response r = Response::streaming(live_->open(in.who->tenant_id, in.who->user_id, last));
  for (auto& h : in.headers) r.headers.push_back(std::move(h));
  return r;
}

Service::~Service() {
  {
    std::lock_guard lock(refresh_mu_);
    refresh_stop_ = true;
  }
  refresh_cv_.notify_all();
  refresher_.join();
}

const std::vector<std::tuple<std::string, std::string, std::string>>& Service::route_scopes() {
  static const std::vector<std::tuple<std::string, std::string, std::string>> kRoutes = {
      {"POST", "/api/miners", "miners:write"},
      {"POST", "/api/miners/bulk", "miners:write"},
      {"PATCH", "/api/miners/:id/status", "miners:write"},
      {"GET", "/api/miners", "portfolio:read"},
      {"GET", "/api/miner-models", ""},
      {"GET", "/api/portfolio", "portfolio:read"},
      {"GET", "/api/portfolio/projection", "portfolio:read"},
      {"GET", "/api/intelligence/forecast", "intel:read"},
      {"POST", "/api/calculate", "calc:read"},
      {"POST", "/api/intelligence/optimize/curtailment", "intel:read"},
      {"POST", "/api/treasury/execute", "treasury:trade"},
      {"POST", "/api/crm/customers", "crm:write"},
      {"POST", "/api/hosting/miners", "miners:write"},
      {"GET", "/api/hosting/miners", "portfolio:read"},
      {"PUT", "/api/treasury/exchange-keys/:exchange", "treasury:trade"},
      {"GET", "/api/treasury/exchange-keys/:exchange", "treasury:trade"},
      {"GET", "/alive", "-"},
      {"GET", "/ready", "-"},
      {"GET", "/health", "-"},
      {"GET", "/api/health", "-"},
      {"GET", "/metrics", "-"},
      {"GET", "/api/portfolio/stream", "portfolio:read"},
      {"GET", "/analytics/main", "-"},
      {"GET", "/analytics/assets/:file", "-"},
      {"POST", "/api/session", ""},
      {"GET", "/api/session", ""},
      {"DELETE", "/api/session", ""},
  };
  return kRoutes;
}

Result<redis::Reply> Service::on_redis(
    const std::function<Result<redis::Reply>(redis::Client&)>& call) {
  // Each thread keeps the slot it was first given (round robin): hashing thread ids would put
  // threads whose ids share a stride (page-aligned addresses) on one connection.
  static std::atomic<std::size_t> next_slot{0};
  thread_local const std::size_t thread_slot = next_slot.fetch_add(1, std::memory_order_relaxed);
  RedisSlot& slot = *redis_slots_[thread_slot % redis_slots_.size()];
  std::lock_guard lock(slot.mu);
  if (!slot.client) {
    auto c = redis::Client::connect(options_.redis_url, std::chrono::milliseconds(1000));
    if (!c) return c.error();
    slot.client = std::move(*c);
  }
  auto r = call(*slot.client);
  if (!r) slot.client.reset();  // reconnect on the next call
  return r;
}

Result<redis::Reply> Service::redis_command(const std::vector<std::string>& argv) {
  return on_redis([&](redis::Client& c) { return c.command(argv); });
}

std::string Service::request_token(const http::Request& request) {
  if (const auto b = bearer(request); !b.empty()) return std::string(b);
  const auto id = cookie(request, kSessionCookie);
  if (!is_session_id(id)) return {};
  auto r = redis_command({"GET", "hi:session:" + std::string(id)});
  return r && r->type == redis::Reply::Type::kString ? r->str : std::string();
}

// Exchanges the request's Bearer token for a session cookie that expires with it.
Response Service::create_session(http::Request& request) {
  const std::string_view token = bearer(request);
  if (token.empty()) {
    return Response::fail(ErrorCode::kUnauthorized, "an Authorization: Bearer token is required");
  }
  const std::int64_t now = std::time(nullptr);
  auto who = tokens_.verify(options_.tokens, token, now);
  if (!who) return Response::fail(ErrorCode::kUnauthorized, who.error().message);
  const std::string id = random_hex(32);
  const std::int64_t ttl = std::max<std::int64_t>(1, who->expires_at - now);
  auto set =
      redis_command({"SET", "hi:session:" + id, std::string(token), "EX", std::to_string(ttl)});
  if (!set || set->is_error()) {
    return Response::fail(ErrorCode::kUnavailable, "sessions are unavailable (Redis)");
  }
  Response r = session_answer(*who, 201);
  r.headers.emplace_back("Set-Cookie",
                         std::string(kSessionCookie) + "=" + id +
                             "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" + std::to_string(ttl));
  return r;
}

Response Service::delete_session(http::Request& request) {
  const std::string token = request_token(request);
  if (token.empty() || !tokens_.verify(options_.tokens, token, std::time(nullptr))) {
    return Response::fail(ErrorCode::kUnauthorized, "no session or token to end");
  }
  const auto id = cookie(request, kSessionCookie);
  if (is_session_id(id)) (void)redis_command({"DEL", "hi:session:" + std::string(id)});
  Response r;
  r.status = 204;
  r.content_type.clear();
  r.headers.emplace_back("Set-Cookie", std::string(kSessionCookie) +
                                           "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
  return r;
}

Response Service::guarded(http::Request& request, const std::string& scope, bool write,
                          const Work& work) {
  Admission in = admit(request, scope);
  if (!in.who) return std::move(in.refusal);
  Response response = run_guarded(request, *in.who, write, work);
  for (auto& h : in.headers) response.headers.push_back(std::move(h));
  return response;
}

Response Service::run_guarded(http::Request& request, const Principal& principal, bool write,
                              const Work& work) {
  const Principal* who = &principal;
  std::string key;
  if (write) {
    if (auto k = request.header("idempotency-key")) {
      if (!is_sane_key(*k)) {
        return Response::fail(ErrorCode::kBadRequest,
                              "Idempotency-Key must be 1 to 255 printable characters",
                              "Idempotency-Key");
      }
      key = std::string(*k);
    }
  }
  // A duplicate of a key this process is writing waits for it here, holding no connection.
  const std::string gate = key.empty() ? "" : who->tenant_id + "/" + who->user_id + "/" + key;
  if (!gate.empty()) {
    std::unique_lock lock(keys_mu_);
    if (!keys_freed_.wait_for(lock, options_.idempotency_wait,
                              [&] { return !keys_running_.contains(gate); })) {
      return Response::fail(ErrorCode::kConflict,
                            "a request with this Idempotency-Key is still running");
    }
    keys_running_.insert(gate);
  }
  struct Release {
    Service* s;
    const std::string& gate;
    ~Release() {
      if (gate.empty()) return;
      std::lock_guard lock(s->keys_mu_);
      s->keys_running_.erase(gate);
      s->keys_freed_.notify_all();
    }
  } release{this, gate};

  auto lease = pool_.acquire();
  if (!lease) {
    log_.warn("no database connection", {{"error", lease.error().message}});
    Response r = Response::fail(ErrorCode::kUnavailable, "the database is busy or unreachable");
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  pg::Connection& db = **lease;
  // BEGIN rides with the first statement; without an Idempotency-Key (whose response is
  // stored after the work), COMMIT may ride with the last write.
  pg::Transaction tx(db);
  if (auto s = tx.begin(who->tenant_id, pg::Transaction::Start::kWithFirstStatement); !s) {
    return db_failure(s.error());
  }
  Call call{request, *who, db, key.empty() ? &tx : nullptr};
  Response response = key.empty() ? work(call) : run_idempotent(call, key, work);
  if (response.status >= 400 || response.error) return response;  // rolled back with tx
  if (!tx.active()) return response;                              // committed with the last write
  if (auto s = tx.commit(); !s) return db_failure(s.error());
  return response;
}

// Within the request's transaction: claims the key (the unique row waits for a concurrent
// claimer in another process), replays a finished response, refuses another body under the
// same key, and stores the new response with the write.
Response Service::run_idempotent(Call& call, const std::string& key, const Work& work) {
  const std::string hash =
      sha256_hex(call.request.method + " " + call.request.route + "\n" + call.request.body);
  const pg::Params scope = {call.who.tenant_id, call.who.user_id, key};
  if (auto r = call.db.exec("SET LOCAL lock_timeout = '10s'"); !r) return db_failure(r.error());
  if (auto r = call.db.exec(
          "DELETE FROM api_idempotency_records WHERE tenant_id = $1 AND user_id = $2 AND "
          "idem_key = $3 AND expires_at < now()",
          scope);
      !r) {
    return db_failure(r.error());
  }
  auto claimed = call.db.exec(
      "INSERT INTO api_idempotency_records (tenant_id, user_id, idem_key, request_hash) "
      "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
      {call.who.tenant_id, call.who.user_id, key, hash});
  if (!claimed) {
    if (claimed.error().message.find("55P03") != std::string::npos) {
      return Response::fail(ErrorCode::kConflict,
                            "a request with this Idempotency-Key is still running");
    }
    return db_failure(claimed.error());
  }
  if (claimed->empty()) {
    auto stored = call.db.exec(
        "SELECT request_hash, state, response_status, response_body::text "
        "FROM api_idempotency_records WHERE tenant_id = $1 AND user_id = $2 AND idem_key = $3",
        scope);
    if (!stored) return db_failure(stored.error());
    if (stored->empty() || stored->text(0, 1) != "done") {
      return Response::fail(ErrorCode::kConflict,
                            "a request with this Idempotency-Key is still running");
    }
    if (stored->text(0, 0) != hash) {
      return Response::fail(ErrorCode::kUnprocessable,
                            "this Idempotency-Key was used with another request",
                            "Idempotency-Key");
    }
    Response replay;
    replay.status = static_cast<int>(stored->int64(0, 2));
    replay.body = std::string(stored->text(0, 3));
    replay.headers.emplace_back("Idempotent-Replayed", "true");
    return replay;
  }
  Response response = work(call);
  if (response.status >= 400 || response.error) return response;  // the claim rolls back
  auto saved = call.db.exec(
      "UPDATE api_idempotency_records SET state = 'done', response_status = $4, "
      "response_body = $5::jsonb WHERE tenant_id = $1 AND user_id = $2 AND idem_key = $3 "
      "RETURNING response_body::text",
      {call.who.tenant_id, call.who.user_id, key, std::to_string(response.status), response.body});
  if (!saved) return db_failure(saved.error());
  // The first answer is byte for byte what replays will send.
  response.body = std::string(saved->text(0, 0));
  return response;
}

void Service::add_routes(http::Router& router) {
  // Health: no token (load balancers, `up`).
  router.add(
      "GET", "/alive",
      [](http::Request&) {
        return Response::json({{"status", "alive"}});
      },
      http::Execution::kInline);
  router.add("GET", "/ready", [this](http::Request&) { return health(false); });
  router.add("GET", "/health", [this](http::Request&) { return health(true); });
  router.add("GET", "/api/health", [this](http::Request&) { return health(true); });
  router.add(
      "GET", "/metrics",
      [this](http::Request&) {
        return Response::text(metrics_.render(), "text/plain; version=0.0.4");
      },
      http::Execution::kInline);

  router.add("POST", "/api/session", [this](http::Request& r) { return create_session(r); });
  // Who the token or the session cookie speaks for: what a reloaded page, which holds only the
  // HttpOnly cookie, learns its tenant and scopes from.
  router.add("GET", "/api/session", [this](http::Request& r) {
    Admission in = admit(r, "");
    if (!in.who) return std::move(in.refusal);
    Response answer = session_answer(*in.who, 200);
    for (auto& h : in.headers) answer.headers.push_back(std::move(h));
    return answer;
  });
  router.add("DELETE", "/api/session", [this](http::Request& r) { return delete_session(r); });

  router.add("GET", "/api/portfolio/stream", [this](http::Request& r) { return open_stream(r); });
  add_dashboard_routes(router, options_.web_dir);

  add_miner_routes(router);
  add_intelligence_routes(router);
  add_business_routes(router);
  add_secret_routes(router);
}

// /ready (full = false): the database and Redis answer. /health: every check of CONTRACTS'
// health JSON that this part can see, each healthy / degraded / unhealthy.
Response Service::health(bool full) {
  json checks = json::object();
  std::string overall = "healthy";
  auto worsen = [&](const std::string& s) {
    if (s == "unhealthy" || (s == "degraded" && overall == "healthy")) overall = s;
  };
  // Database.
  {
    const auto t0 = std::chrono::steady_clock::now();
    auto lease = pool_.acquire();
    json db;
    if (!lease) {
      db = {{"status", "unhealthy"}, {"error", lease.error().message}};
    } else if (auto r = (*lease)->exec("SELECT 1"); !r) {
      db = {{"status", "unhealthy"}, {"error", r.error().message}};
    } else {
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      db = {{"status", ms < options_.database_ms_degraded ? "healthy" : "degraded"},
            {"response_time_ms", std::round(ms * 100) / 100}};
      if (full) {
        if (auto d = (*lease)->exec("SELECT coalesce(sum(parked), 0)::bigint FROM hi_dlq_stats()");
            d && !d->empty()) {
          const std::int64_t parked = d->int64(0, 0);
          checks["dlq"] = {{"status", parked < options_.dlq_degraded ? "healthy" : "degraded"},
                           {"count", parked}};
          worsen(checks["dlq"]["status"]);
        }
        if (auto f = (*lease)->exec("SELECT hi_forecast_freshness_seconds()"); f && !f->empty()) {
          // No forecast at all yet (no user has miners): nothing is stale.
          const bool none = f->is_null(0, 0);
          const double age = none ? 0 : f->float64(0, 0);
          checks["forecast"] = {
              {"status", age < static_cast<double>(options_.forecast_age_degraded_s) ? "healthy"
                                                                                     : "degraded"},
              {"freshness_sec", none ? json(nullptr) : json(std::round(age))}};
          worsen(checks["forecast"]["status"]);
        }
      }
    }
    checks["database"] = db;
    worsen(db["status"]);
  }
  // Redis (and the statuses the relay and the consumer groups publish there).
  {
    const auto t0 = std::chrono::steady_clock::now();
    json rd;
    auto pong = redis_command({"PING"});
    const bool redis_up = pong && pong->str == "PONG";
    if (!redis_up) {
      rd = {{"status", "unhealthy"}, {"error", pong ? pong->str : pong.error().message}};
    } else {
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      rd = {{"status", "healthy"}, {"response_time_ms", std::round(ms * 100) / 100}};
    }
    checks["redis"] = rd;
    worsen(rd["status"]);
    if (full && redis_up) {
      auto relay = redis_command({"HGETALL", "hi:status:relay"});
      json rl = {{"status", "unhealthy"}, {"error", "the relay publishes no status"}};
      if (relay && relay->elements.size() >= 2) {
        json fields = json::object();
        for (std::size_t i = 0; i + 1 < relay->elements.size(); i += 2) {
          fields[relay->elements[i].str] = relay->elements[i + 1].str;
        }
        const bool streaming = fields.value("streaming", "0") == "1";
        const bool degraded_bus = fields.value("bus_degraded", "0") == "1";
        const std::string last_ack = fields.value("last_ack_at", "");
        json ack_age = nullptr;
        if (auto at = parse_rfc3339_us(last_ack); at) {
          ack_age = std::max<std::int64_t>(0, (unix_now_us() - *at) / 1000);
        }
        // The slot's wal_status (pg_replication_slots): "unreserved" WAL goes at the next
        // checkpoint (max_slot_wal_keep_size is reached); "lost" WAL is gone, and changes with it.
        const std::string wal_status = fields.value("wal_status", "");
        // WAL the slot holds and the relay has not confirmed: a relay falling behind.
        const std::int64_t lag_bytes = to_int(fields.value("lag_bytes", "0"));
        const bool behind = lag_bytes >= options_.relay_lag_degraded_bytes;
        rl = {{"status", !streaming || wal_status == "lost"                     ? "unhealthy"
                         : degraded_bus || wal_status == "unreserved" || behind ? "degraded"
                                                                                : "healthy"},
              {"lag_bytes", lag_bytes},
              {"wal_status", wal_status},
              {"last_ack_age_ms", ack_age},
              {"durable", fields.value("durable", "0") == "1"},
              {"in_flight", to_int(fields.value("in_flight", "0"))},
              {"last_ack_at", fields.value("last_ack_at", "")},
              {"confirmed_commit_at", fields.value("confirmed_commit_at", "")}};
      }
      checks["relay"] = rl;
      worsen(rl["status"]);
      json groups = json::object();
      // SCAN, not KEYS: a big keyspace must not stall the server for a health check.
      std::vector<std::string> keys;
      std::string cursor = "0";
      do {
        auto page =
            redis_command({"SCAN", cursor, "MATCH", "hi:status:consumer:*", "COUNT", "1000"});
        if (!page || page->elements.size() < 2) break;
        cursor = page->elements[0].str;
        for (const auto& k : page->elements[1].elements) keys.push_back(k.str);
      } while (cursor != "0");
      for (const auto& key : keys) {
        auto lag = redis_command({"HGET", key, "lag"});
        if (!lag || lag->type != redis::Reply::Type::kString) continue;
        const std::int64_t n = to_int(lag->str, -1);
        const std::string status =
            n >= 0 && n < options_.consumer_lag_degraded ? "healthy" : "degraded";
        groups[key.substr(std::string("hi:status:consumer:").size())] = {{"status", status},
                                                                         {"lag", n}};
        worsen(status);
      }
      checks["consumers"] = groups;
      // Sinks (hashinsight sink): each destination's lag behind the source. A status older
      // than 10 s means the sink is stuck (its destination refuses it) or gone.
      keys.clear();
      cursor = "0";
      do {
        auto page = redis_command({"SCAN", cursor, "MATCH", "hi:status:sink:*", "COUNT", "1000"});
        if (!page || page->elements.size() < 2) break;
        cursor = page->elements[0].str;
        for (const auto& k : page->elements[1].elements) keys.push_back(k.str);
      } while (cursor != "0");
      json sinks = json::object();
      const std::int64_t now_ms = unix_now_us() / 1000;
      for (const auto& key : keys) {
        auto h = redis_command({"HGETALL", key});
        if (!h) continue;
        std::map<std::string, std::string> f;
        for (std::size_t i = 0; i + 1 < h->elements.size(); i += 2) {
          f[h->elements[i].str] = h->elements[i + 1].str;
        }
        const double lag = std::strtod(f["lag_seconds"].c_str(), nullptr);
        const std::int64_t age = now_ms - to_int(f["updated_at_ms"], 0);
        const std::string status = age > 10000                          ? "degraded"
                                   : lag < options_.sink_lag_degraded_s ? "healthy"
                                                                        : "degraded";
        sinks[key.substr(std::string("hi:status:sink:").size())] = {
            {"status", status},
            {"lag_seconds", std::round(lag * 1000) / 1000},
            {"backlog", to_int(f["backlog"], -1)},
            {"parked", to_int(f["parked"], 0)},
            {"status_age_ms", age}};
        worsen(status);
      }
      checks["sinks"] = sinks;
    }
  }
  // The bus: what the relay publishes to and the workers read from.
  if (options_.bus) {
    std::lock_guard lock(bus_mu_);
    const auto t0 = std::chrono::steady_clock::now();
    Status up = unavailable("bus: no probe");
    if (!bus_probe_) {
      auto p = bus::make_probe(*options_.bus);
      if (p)
        bus_probe_ = std::move(*p);
      else
        up = p.error();
    }
    if (bus_probe_) up = bus_probe_->ping(std::chrono::milliseconds(1000));
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    json b = {{"status", up ? "healthy" : "unhealthy"},
              {"kind", std::string(bus::to_string(options_.bus->kind))},
              {"response_time_ms", std::round(ms * 100) / 100}};
    if (!up) b["error"] = up.error().message;
    checks["bus"] = b;
    worsen(b["status"]);
  }
  // The read cache: degraded when, after enough reads to tell, most of them miss.
  if (full) {
    const std::int64_t lookups = cache_lookups_.load(std::memory_order_relaxed);
    const double rate =
        lookups == 0 ? 0 : static_cast<double>(cache_hits_.load()) / static_cast<double>(lookups);
    checks["cache"] = {
        {"status",
         lookups < kCacheLookupsToJudge || rate >= kCacheHitRateHealthy ? "healthy" : "degraded"},
        {"hit_rate", lookups == 0 ? json(nullptr) : json(std::round(rate * 1000) / 1000)},
        {"lookups", lookups}};
    worsen(checks["cache"]["status"]);
  }
  // The outbox backlog: events committed and not yet on the bus (CDC: after the relay's last
  // confirmed transaction; poll mode: rows not marked processed).
  if (full && checks["database"]["status"] != "unhealthy") {
    auto lease = pool_.acquire();
    const std::string through =
        checks.contains("relay") ? checks["relay"].value("confirmed_commit_at", "") : "";
    if (lease) {
      auto b = (*lease)->exec(
          "SELECT backlog, oldest::text FROM hi_outbox_backlog(NULLIF($1, '')::timestamptz)",
          {through});
      if (b && !b->empty()) {
        const std::int64_t backlog = b->int64(0, 0);
        checks["outbox"] = {
            {"status", backlog < options_.outbox_backlog_degraded ? "healthy" : "degraded"},
            {"backlog", backlog},
            {"oldest", b->is_null(0, 1) ? json(nullptr) : json(std::string(b->text(0, 1)))}};
        worsen(checks["outbox"]["status"]);
      }
    }
  }
  if (!full) {
    const bool ready = checks["database"]["status"] != "unhealthy" &&
                       checks["redis"]["status"] != "unhealthy" &&
                       (!checks.contains("bus") || checks["bus"]["status"] != "unhealthy");
    return Response::json({{"status", ready ? "ready" : "not_ready"}, {"checks", checks}},
                          ready ? 200 : 503);
  }
  return Response::json({{"status", overall},
                         {"version", kVersion},
                         {"checks", checks},
                         {"time", format_rfc3339_us(unix_now_us())}},
                        overall == "unhealthy" ? 503 : 200);
}

}  // namespace hi::api
