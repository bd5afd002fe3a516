// Admission (authentication, scope, the plan's request rate) and the plan's unit limit.
//
// The rate limit is GCRA (the generic cell rate algorithm, as in ATM networks and most API
// gateways) run inside Redis as one Lua script, so every API process shares one budget per user
// and a check is one round trip: a user may send `requests_per_minute` requests in a burst,
// then one every 60 / requests_per_minute seconds. The script keeps one key per user, the
// "theoretical arrival time" of the next request, expiring when the budget is full again.
#include <ctime>

#include "api/internal/support.h"
#include "api/service.h"
#include "core/time.h"
#include "pg/transaction.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;

// KEYS[1] the user's key; ARGV[1] requests per period, ARGV[2] the period in ms. Returns
// {allowed (0/1), remaining, retry_after_ms, reset_ms}.
const redis::Script kRateLimitScript(R"lua(
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.max(1, math.ceil(next_tat - now)))
return {1, math.floor((now - allow_at) / interval), 0, math.ceil(next_tat - now)}
)lua");

// The limiter and, when asked, a GET of `read` in one round trip. The cached value is read
// beside the script, not by it: Lua interns every string a script touches, hashing each of its
// bytes, and a portfolio of a few kilobytes read inside the script cost Redis more than the
// rest of the request (a third of both cores at 12,000 GET/s). A refused request's read is
// dropped.
Result<redis::Reply> limit_and_read(redis::Client& c, const std::string& user_key,
                                    const std::string& limit, const std::string& period,
                                    const std::string& read, redis::Reply* value) {
  const std::string_view eval[] = {"EVALSHA", kRateLimitScript.sha1(), "1", user_key, limit,
                                   period};
  c.append(eval);
  if (!read.empty()) {
    const std::string_view get[] = {"GET", read};
    c.append(get);
  }
  auto replies = c.flush();
  if (!replies) return replies.error();
  if (!read.empty()) *value = std::move(replies->back());
  redis::Reply verdict = std::move(replies->front());
  if (verdict.is_error() && verdict.str.starts_with("NOSCRIPT")) {
    return c.eval(kRateLimitScript, {user_key}, {limit, period});  // loads it for the next time
  }
  return verdict;
}

constexpr std::int64_t kPeriodMs = 60'000;

// The plan id of user $1: their current subscription's, else the free plan's.
#define HI_PLAN_ID_OF_USER                                                                      \
  "coalesce((SELECT plan_id FROM user_subscriptions WHERE user_id = $1::bigint AND "            \
  "(expires_at IS NULL OR expires_at > now())), (SELECT id FROM subscription_plans WHERE name " \
  "= 'free'))"

}  // namespace

Service::Admission Service::admit(http::Request& request, const std::string& scope,
                                  KeyOf read_key) {
  Admission a;
  const std::string token = request_token(request);
  if (token.empty()) {
    a.refusal = Response::fail(ErrorCode::kUnauthorized,
                               "an Authorization: Bearer token or a session cookie is required");
    return a;
  }
  auto who = tokens_.verify(options_.tokens, token, std::time(nullptr));
  if (!who) {
    a.refusal = Response::fail(ErrorCode::kUnauthorized, who.error().message);
    return a;
  }
  if (!scope.empty() && !who->has_scope(scope)) {
    a.refusal = Response::fail(ErrorCode::kForbidden, "this route needs the scope " + scope);
    return a;
  }
  auto plan = plan_of(*who);
  if (!plan) {
    log_.warn("plan lookup failed", {{"error", plan.error().message}});
    a.refusal = Response::fail(ErrorCode::kUnavailable, "the database is busy or unreachable");
    a.refusal.headers.emplace_back("Retry-After", "1");
    return a;
  }
  const std::string key = read_key != nullptr ? read_key(who->user_id) : std::string();
  if (!plan->requests_per_minute) {
    if (read_key != nullptr) {
      if (auto r = redis_command({"GET", key}); r && !r->is_error()) a.read = std::move(*r);
    }
    a.who = std::move(*who);
    return a;
  }
  const std::int64_t limit = *plan->requests_per_minute;
  const std::string user_key = "rl:" + who->tenant_id + ":" + who->user_id;
  const std::string limit_text = std::to_string(limit);
  const std::string period_text = std::to_string(kPeriodMs);
  redis::Reply value;
  auto r = on_redis([&](redis::Client& c) {
    return limit_and_read(c, user_key, limit_text, period_text, key, &value);
  });
  if (!r || r->is_error() || r->elements.size() != 4) {
    // The limiter is down with Redis: fail closed, like every other Redis-backed check.
    log_.warn("rate limiter failed", {{"error", !r ? r.error().message : r->str}});
    a.refusal = Response::fail(ErrorCode::kUnavailable, "the rate limiter is unavailable");
    a.refusal.headers.emplace_back("Retry-After", "1");
    return a;
  }
  const bool allowed = r->elements[0].integer == 1;
  const std::int64_t remaining = r->elements[1].integer;
  const std::int64_t retry_ms = r->elements[2].integer;
  const std::int64_t reset_ms = r->elements[3].integer;
  a.headers = {{"RateLimit-Limit", limit_text},
               {"RateLimit-Remaining", std::to_string(std::max<std::int64_t>(0, remaining))},
               {"RateLimit-Reset", std::to_string((reset_ms + 999) / 1000)},
               {"RateLimit-Policy", limit_text + ";w=60"}};
  if (!allowed) {
    a.refusal = Response::fail(ErrorCode::kRateLimited, "plan " + plan->name + " allows " +
                                                            limit_text + " requests a minute");
    a.refusal.headers = a.headers;
    a.refusal.headers.emplace_back("Retry-After", std::to_string((retry_ms + 999) / 1000));
    return a;
  }
  if (read_key != nullptr && !value.is_error()) a.read = std::move(value);
  a.who = std::move(*who);
  return a;
}

// The user's current subscription's plan, else the free plan; read at most every
// plan_cache_ttl per user.
Result<Service::Plan> Service::plan_of(const Principal& who) {
  const std::string id = who.tenant_id + "/" + who.user_id;
  const std::int64_t now = mono_now_ns();
  {
    std::lock_guard lock(plans_mu_);
    if (auto it = plans_.find(id);
        it != plans_.end() &&
        now - it->second.loaded_ns < std::chrono::nanoseconds(options_.plan_cache_ttl).count()) {
      return it->second;
    }
  }
  auto lease = pool_.acquire();
  if (!lease) return lease.error();
  pg::Transaction tx(**lease);
  if (auto s = tx.begin(who.tenant_id); !s) return s.error();
  auto r = (*lease)->exec(
      "SELECT name, max_miners, requests_per_minute FROM subscription_plans WHERE id "
      "= " HI_PLAN_ID_OF_USER,
      {who.user_id});
  if (!r) return r.error();
  if (auto s = tx.commit(); !s) return s.error();
  Plan plan;
  plan.loaded_ns = now;
  if (r->empty()) {
    plan.name = "none";  // no plan at all: unlimited
  } else {
    plan.name = std::string(r->text(0, 0));
    if (!r->is_null(0, 1)) plan.max_units = r->int64(0, 1);
    if (!r->is_null(0, 2)) plan.requests_per_minute = r->int64(0, 2);
  }
  std::lock_guard lock(plans_mu_);
  plans_[id] = plan;
  return plan;
}

std::optional<Response> Service::check_units(Call& c, std::int64_t units) {
  // An unlimited plan (as last read, within plan_cache_ttl) costs the write nothing: no lock, no
  // sum over the user's rows.
  auto cached_plan = plan_of(c.who);
  if (!cached_plan) return internal::db_failure(cached_plan.error());
  if (!cached_plan->max_units) return std::nullopt;
  // A limited one is read again in the write's transaction, with the user's adds serialised.
  auto r = c.db.exec(
      "SELECT p.name, p.max_miners, (SELECT coalesce(sum(quantity), 0) FROM user_miners "
      "WHERE user_id = $1::bigint) FROM (SELECT 1 FROM users WHERE id = $1::bigint FOR UPDATE) u "
      "LEFT JOIN subscription_plans p ON p.id = " HI_PLAN_ID_OF_USER,
      {c.who.user_id});
  if (!r) return internal::db_failure(r.error());
  if (r->empty() || r->is_null(0, 1)) return std::nullopt;  // unlimited
  const std::int64_t max = r->int64(0, 1);
  const std::int64_t held = r->int64(0, 2);
  if (held + units <= max) return std::nullopt;
  return Response::fail(ErrorCode::kConflict,
                        "plan " + std::string(r->text(0, 0)) + " allows " + std::to_string(max) +
                            " miner units; you hold " + std::to_string(held) + " and add " +
                            std::to_string(units),
                        "quantity");
}

}  // namespace hi::api
