#include "consume/intel_worker.h"

#include <nlohmann/json.hpp>

#include "consume/cache.h"
#include "consume/portfolio_worker.h"
#include "core/time.h"

namespace hi::consume {
namespace {

using nlohmann::json;

constexpr const char* kUpsertSql = R"sql(
INSERT INTO forecast_daily (tenant_id, user_id, metric, day, value, lower_95, upper_95, model,
                            fitted_at)
SELECT $1::bigint, r.user_id, r.metric, ($2::date + r.h), r.value, r.lower_95, r.upper_95,
       r.model, now()
  FROM jsonb_to_recordset($3::jsonb) AS r(user_id bigint, metric text, h int, value float8,
                                          lower_95 float8, upper_95 float8, model text)
ON CONFLICT (tenant_id, COALESCE(user_id, 0), metric, day) DO UPDATE SET
  value = EXCLUDED.value, lower_95 = EXCLUDED.lower_95, upper_95 = EXCLUDED.upper_95,
  model = EXCLUDED.model, fitted_at = EXCLUDED.fitted_at
RETURNING (extract(epoch FROM fitted_at) * 1000000)::bigint
)sql";

json row(const std::string& user, const char* metric, int h, double value, double lo, double hi,
         const std::string& model) {
  return {{"user_id", user.empty() ? json(nullptr) : json(std::stoll(user))},
          {"metric", metric},
          {"h", h},
          {"value", value},
          {"lower_95", lo},
          {"upper_95", hi},
          {"model", model}};
}

}  // namespace

std::string forecast_cache_key(std::string_view user_id) {
  return "forecast:" + std::string(user_id);
}

Result<const NetworkForecast*> fit_network_forecast(pg::Connection& conn,
                                                    std::optional<NetworkForecast>& cache,
                                                    std::chrono::milliseconds max_age) {
  const std::int64_t now = mono_now_ns();
  if (cache && max_age.count() > 0 &&
      now - cache->checked_ns < std::chrono::nanoseconds(max_age).count()) {
    return &*cache;
  }
  auto r = conn.exec(
      "SELECT day::text, avg(btc_price_usd), avg(difficulty) FROM network_snapshots "
      "WHERE day > (SELECT max(day) FROM network_snapshots) - 90 GROUP BY day ORDER BY day");
  if (!r) return r.error().wrap("network series");
  if (r->empty()) return failed_precondition("no network_snapshots rows: run `hashinsight seed`");
  std::vector<double> price, difficulty;
  for (int i = 0; i < r->rows(); ++i) {
    price.push_back(r->float64(i, 1));
    difficulty.push_back(r->float64(i, 2));
  }
  const std::string last_day(r->text(r->rows() - 1, 0));
  const std::string key = last_day + "/" + std::to_string(r->rows()) + "/" +
                          std::string(r->text(r->rows() - 1, 1)) + "/" +
                          std::string(r->text(r->rows() - 1, 2));
  if (cache && cache->series_key == key) {
    cache->checked_ns = now;
    return &*cache;
  }
  auto p = mining::forecast_btc_price(price);
  if (!p) return p.error().wrap("btc price forecast");
  auto d = mining::forecast_difficulty(difficulty);
  if (!d) return d.error().wrap("difficulty forecast");
  cache = NetworkForecast{key, last_day, now, std::move(*p), std::move(*d)};
  return &*cache;
}

Result<std::int64_t> write_forecasts(pg::Connection& conn, const std::string& tenant_id,
                                     const std::vector<std::string>& users,
                                     const NetworkForecast& fit, ReferenceCache* reference) {
  for (const auto& u : users) {
    if (!is_decimal_id(u)) return invalid_argument("user_id '" + u + "' is not a user id");
  }
  auto in = load_inputs(conn, users, reference);
  if (!in) return in.error();

  json rows = json::array();
  const auto& pp = fit.price.predictions;
  const auto& dp = fit.difficulty.predictions;
  for (const auto& p : pp) {
    rows.push_back(
        row("", "btc_price_usd", p.horizon_days, p.mean, p.lower_95, p.upper_95, fit.price.model));
  }
  for (const auto& d : dp) {
    rows.push_back(row("", "difficulty", d.horizon_days, d.mean, d.lower_95, d.upper_95,
                       fit.difficulty.model));
  }
  const std::string model =
      "portfolio at " + fit.price.model + " price, " + fit.difficulty.model + " difficulty";
  for (const auto& user : users) {
    for (std::size_t i = 0; i < pp.size() && i < dp.size(); ++i) {
      auto value_at = [&](double price, double difficulty) -> Result<double> {
        mining::NetworkSnapshot s = in->snapshot;
        s.btc_price_usd = price;
        s.difficulty = difficulty;
        auto p = portfolio_of(*in, user, s);
        if (!p) return p.error();
        return p->totals.profit_usd_per_day;
      };
      auto mid = value_at(pp[i].mean, dp[i].mean);
      if (!mid) return mid.error().wrap("tenant " + tenant_id);
      auto low = value_at(std::max(pp[i].lower_95, 1e-9), dp[i].upper_95);
      auto high = value_at(pp[i].upper_95, std::max(dp[i].lower_95, 1.0));
      if (!low || !high) return (!low ? low : high).error();
      rows.push_back(row(user, "profit_usd_day", pp[i].horizon_days, *mid, *low, *high, model));
    }
  }
  auto w = conn.exec(kUpsertSql, {tenant_id, fit.last_day, rows.dump()});
  if (!w) return w.error().wrap("upsert forecast_daily");
  return w->empty() ? std::int64_t{0} : w->int64(0, 0);  // one now() for every row
}

Status IntelHandler::prepare(pg::Connection& conn) {
  if (auto s = prepare_inputs(conn, reference_); !s) return s;
  auto fit = fit_network_forecast(conn, cache_, reference_.max_age);
  if (!fit && fit.error().code != Code::kFailedPrecondition) return fit.error();
  return {};
}

Result<ApplyOutcome> IntelHandler::apply(pg::Connection& conn, const TenantBatch& batch) {
  auto f = fit_network_forecast(conn, cache_, reference_.max_age);
  if (!f) return f.error();
  std::vector<std::string> users;
  for (const auto& u : batch.users) {
    if (!u.user_id.empty()) users.push_back(u.user_id);
  }
  auto version = write_forecasts(conn, batch.tenant_id, users, **f, &reference_);
  if (!version) return version.error();
  ApplyOutcome out;
  for (const auto& user : users) {
    out.after_commit.push_back(
        cache_invalidation(forecast_cache_key(user), *version, kTombstoneTtl));
  }
  return out;
}

Result<std::vector<RedisCommand>> IntelHandler::after_redelivery(pg::Connection& conn,
                                                                 const TenantBatch& batch) {
  std::vector<RedisCommand> out;
  for (const auto& u : batch.users) {
    if (!is_decimal_id(u.user_id)) continue;
    // The tombstone stands for the rows already stored.
    auto r = conn.exec(
        "SELECT coalesce((extract(epoch FROM max(fitted_at)) * 1000000)::bigint, 0) "
        "FROM forecast_daily WHERE user_id = $1::bigint",
        {u.user_id});
    if (!r) return r.error();
    out.push_back(cache_invalidation(forecast_cache_key(u.user_id), r->int64(0, 0), kTombstoneTtl));
  }
  return out;
}

}  // namespace hi::consume
