// The intel worker (group intel-group, topics events.miner and events.ops): refreshes the
// forecast_daily rows of the users with new events and invalidates forecast:{uid} (a tombstone
// at the rows' fitted_at, consume/cache.h).
//
// Per tenant batch: the BTC price and difficulty series (last 90 daily values of
// network_snapshots) are forecast 7 days ahead with ARIMA(1,1,1) (mining/forecast.h;
// difficulty in logs) and written as the tenant's global rows (user_id NULL, metrics
// btc_price_usd and difficulty); each user's projected profit per day (metric profit_usd_day)
// values the user's active miners at the forecast price and difficulty, with bounds from the
// pessimistic / optimistic ends of both intervals. The fit is cached while the series is
// unchanged (it depends only on network_snapshots); the series, like the reference data of
// load_inputs(), is read again at most every ReferenceCache::max_age, not per batch, and both
// are loaded before the first batch. Rows are upserted on
// (tenant_id, COALESCE(user_id, 0), metric, day).
//
// Not thread-safe: one per Runtime.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "consume/portfolio_worker.h"
#include "consume/runtime.h"
#include "mining/forecast.h"

namespace hi::consume {

inline constexpr const char* kIntelGroup = "intel-group";

std::string forecast_cache_key(std::string_view user_id);  // forecast:{uid}

// The network series' forecast: BTC price in levels, difficulty in logs, fitted on the last 90
// daily values of network_snapshots.
struct NetworkForecast {
  std::string series_key;       // last day + count + last values: what the fit depends on
  std::string last_day;         // YYYY-MM-DD of the last observation (forecast day 1 is the next)
  std::int64_t checked_ns = 0;  // mono_now_ns() when the series was last compared with the key
  mining::SeriesForecast price;
  mining::SeriesForecast difficulty;
};

// The forecast of today's series: `cache` when it was fitted on the same series, else a new
// fit stored in `cache`. kFailedPrecondition when network_snapshots is empty. With a
// `max_age` above 0, a cache checked against the series less than max_age ago is returned
// without reading the series again (the series is daily; reading it scans every partition).
Result<const NetworkForecast*> fit_network_forecast(
    pg::Connection& conn, std::optional<NetworkForecast>& cache,
    std::chrono::milliseconds max_age = std::chrono::milliseconds(0));

// Upserts the tenant's price and difficulty rows and each of `users`' profit_usd_day rows
// (inside the tenant's transaction); returns their fitted_at in microseconds since the epoch
// (the cache's through_seq, consume/cache.h). kInvalidArgument for a user id that is not a
// number. `reference` as for load_inputs().
Result<std::int64_t> write_forecasts(pg::Connection& conn, const std::string& tenant_id,
                                     const std::vector<std::string>& users,
                                     const NetworkForecast& fit,
                                     ReferenceCache* reference = nullptr);

class IntelHandler final : public Handler {
 public:
  bool reads_state() const override { return true; }
  Status prepare(pg::Connection& conn) override;
  Result<ApplyOutcome> apply(pg::Connection& conn, const TenantBatch& batch) override;
  // DEL forecast:{uid} again for redelivered events' users.
  Result<std::vector<RedisCommand>> after_redelivery(pg::Connection& conn,
                                                     const TenantBatch& batch) override;

 private:
  std::optional<NetworkForecast> cache_;
  ReferenceCache reference_;
};

}  // namespace hi::consume
