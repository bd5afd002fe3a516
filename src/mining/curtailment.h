// Curtailment: which miners to switch off in which hour of a day with hourly power prices.
//
// Given 24 hourly electricity prices, groups of identical miners and a limit on curtailment hours,
// choose how many units of each group run in each hour so that the day's profit is maximal:
//
//   maximise   sum_{g,h} x[g,h] * (r[g] - c[g,h])
//   subject to 0 <= x[g,h] <= units[g], x integer                  (units of group g running)
//              sum_h (units[g] - x[g,h]) <= units[g] * max_hours  (unit-hours off per group)
//
// with r[g] = net revenue of one unit for one hour (gross BTC/day / 24 x (1 - pool fee) x price)
// and c[g,h] = power[kW] x price[h] (1 hour). The count of units off in an hour is at most units[g]
// and the total at most units[g] x max_hours, so the plan can always be carried out with no single
// unit off more than max_hours hours (rotate the units that are off).
//
// The limit could also be read site-wide ("curtail during at most max_hours hours of the day"); it
// gives the same optimum: c[g,h] rises with the price for every group, so every group prefers the
// same most expensive hours, and the per-miner optimum only switches off during the max_hours
// most expensive hours anyway (hours_with_curtailment <= max_curtailment_hours; with equal prices
// in several hours the solver may pick different ones of the tied hours for different groups, at
// the same profit).
//
// optimize_curtailment() poses this as an integer program and solves it with GLPK (the production
// path). The problem separates by group, and within a group the best plan is to switch all units
// off in the max_hours most expensive hours where c > r; curtail_greedy() computes that exact
// optimum without a solver and exists to cross-check it.
//
// Thread-safety: both functions are safe to call concurrently (calls into GLPK are serialised).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"
#include "mining/profitability.h"

namespace hi::mining {

inline constexpr int kHoursPerDay = 24;
// Hourly wholesale prices can be negative (you are paid to consume); running then always pays.
inline constexpr double kMinHourlyPriceUsdPerKwh = -10;
inline constexpr std::size_t kMaxCurtailmentGroups = 1000;

// Identical miners that can be switched on and off individually.
struct MinerGroup {
  std::int64_t model_id = 0;  // for the caller; not interpreted
  std::string name;
  std::int64_t units = 0;   // >= 0
  double hashrate_ths = 0;  // per unit, TH/s
  double power_w = 0;       // per unit, W
};

struct CurtailmentRequest {
  std::array<double, kHoursPerDay> hourly_price_usd_per_kwh{};  // hour 0 = 00:00-01:00
  std::vector<MinerGroup> groups;
  int max_curtailment_hours = 0;  // per unit, 0..24
  NetworkConditions network;
  double pool_fee_fraction = 0;
  RevenueAlgorithm algorithm = RevenueAlgorithm::kDifficulty;
};

struct HourPlan {
  int hour = 0;
  double price_usd_per_kwh = 0;
  std::vector<std::int64_t> running_units;  // per group, in request order
  double power_kw = 0;                      // of the running units
  double revenue_usd = 0;
  double cost_usd = 0;
  double profit_usd = 0;
};

struct GroupPlan {
  std::int64_t model_id = 0;
  std::string name;
  std::int64_t units = 0;
  double revenue_usd_per_unit_hour = 0;     // r[g]
  double break_even_price_usd_per_kwh = 0;  // r[g] / kW: above it, running loses money
  std::int64_t unit_hours_off = 0;
  double profit_usd = 0;
};

struct CurtailmentPlan {
  std::vector<HourPlan> schedule;  // 24 entries, hour 0..23
  std::vector<GroupPlan> groups;   // in request order

  double total_profit_usd = 0;     // of the plan
  double baseline_profit_usd = 0;  // everything running all 24 hours
  double profit_gain_usd = 0;      // total - baseline (>= 0)
  double revenue_usd = 0;
  double cost_usd = 0;
  double revenue_forgone_usd = 0;  // revenue not earned while off
  double revenue_forgone_btc = 0;
  double energy_saved_kwh = 0;
  double energy_cost_saved_usd = 0;
  std::int64_t unit_hours_off = 0;
  int hours_with_curtailment = 0;  // hours in which at least one unit is off
  std::string solver;              // "glpk" or "greedy"
};

// The optimal schedule, solved by GLPK. Errors: invalid_argument for bad input; internal when the
// solver fails (never expected: the all-running plan is always feasible).
Result<CurtailmentPlan> optimize_curtailment(const CurtailmentRequest& request);

// The same optimum computed directly (see the header comment). Ties (switching off gains exactly
// nothing) keep the units running and prefer earlier hours.
Result<CurtailmentPlan> curtail_greedy(const CurtailmentRequest& request);

}  // namespace hi::mining
