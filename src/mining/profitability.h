// Mining profitability: what a miner earns, costs and returns per day.
//
// Two revenue algorithms, both always reported so that their divergence is visible:
//
//   1. difficulty based:    BTC/day = hashrate[H/s] x 86400 x reward / (difficulty x 2^32)
//      (a block needs difficulty x 2^32 hashes on average; 86400 seconds per day)
//   2. network-share based: BTC/day = hashrate / network_hashrate x 144 x reward
//      (the miner's share of the network times 144 blocks per day)
//
// where reward = block subsidy (3.125 BTC since the April 2024 halving) + average fees per block.
// They agree exactly when network_hashrate = difficulty x 2^32 / 600; the network hashrate
// published by explorers is an estimate, hence the divergence. Money figures use one of them
// (`OperatingParams::algorithm`, difficulty based by default, since difficulty is exact).
//
// Cost/day = power[W] x 24 / 1000 x electricity[USD/kWh] (+ hosting). Pool fees are taken from
// revenue. All functions are pure and thread-safe; invalid input (negative, NaN, infinite or out of
// range values) yields an invalid_argument Error naming the field, never a NaN in the output.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "core/result.h"

namespace hi::mining {

inline constexpr double kBlockSubsidyBtc = 3.125;  // since the halving of April 2024
inline constexpr double kBlocksPerDay = 144;       // one block per 600 s
inline constexpr double kSecondsPerDay = 86400;
inline constexpr double kTwoPow32 = 4294967296.0;     // expected hashes per unit of difficulty
inline constexpr double kDaysPerMonth = 365.25 / 12;  // 30.4375, for the monthly hashrate decay
inline constexpr double kHashesPerTh = 1e12;
inline constexpr double kHashesPerEh = 1e18;

// Validation limits. They reject typos and unit mistakes (W entered as kW, a price in cents), not
// merely unlikely values.
inline constexpr double kMaxBtcPriceUsd = 1e8;
inline constexpr double kMaxDifficulty = 1e20;         // ~1.5e14 in 2025
inline constexpr double kMaxNetworkHashrateEhs = 1e7;  // ~1e3 EH/s in 2025
inline constexpr double kMaxElectricityUsdPerKwh = 10;
inline constexpr double kMaxUnitHashrateThs = 1e5;  // per unit; the largest ASICs are ~500
inline constexpr double kMaxUnitPowerW = 1e6;       // per unit
inline constexpr std::int64_t kMaxUnits = 100'000'000;
inline constexpr double kMaxBlockRewardBtc = 50;
inline constexpr double kMaxFeesPerBlockBtc = 100;
inline constexpr double kMaxCapexUsd = 1e13;
inline constexpr double kMaxHostingFeeUsdPerUnitDay = 1e4;
inline constexpr double kMaxAgeMonths = 600;
// ROI with decay is searched day by day up to this horizon; beyond it there is "no payback".
inline constexpr int kMaxRoiHorizonDays = 3650;

enum class RevenueAlgorithm {
  kDifficulty,    // algorithm 1: needs difficulty
  kNetworkShare,  // algorithm 2: needs network hashrate
};

std::string_view algorithm_name(RevenueAlgorithm algorithm);  // "difficulty", "network_share"

// The state of the network and the market.
struct NetworkConditions {
  double btc_price_usd = 0;         // > 0
  double difficulty = 0;            // > 0, always required
  double network_hashrate_ehs = 0;  // EH/s (1e18 H/s); 0 = unknown (algorithm 2 then not computed)
  double block_reward_btc = kBlockSubsidyBtc;  // subsidy per block, > 0
  double fees_per_block_btc = 0;               // average transaction fees per block, >= 0
};

// What is mining: `units` identical machines.
struct MinerSetup {
  double hashrate_ths = 0;  // per unit, as new, TH/s, >= 0
  double power_w = 0;       // per unit, W, >= 0 (power does not decay)
  std::int64_t units = 1;   // >= 1
};

// How it is operated and paid for.
struct OperatingParams {
  double electricity_usd_per_kwh = 0;       // 0..10
  double pool_fee_fraction = 0;             // share of gross revenue kept by the pool, 0..<1
  double hosting_fee_usd_per_unit_day = 0;  // flat fee per unit per day, >= 0
  double hashrate_decay_per_month = 0;      // fraction lost per month, compounding, 0..<1
  double age_months = 0;                    // age of the machines today: hashrate x (1-decay)^age
  double uptime_fraction = 1;               // share of the day the machines can run, 0..1
  double curtailment_fraction = 0;          // share of that time switched off on purpose, 0..1
  std::optional<double> capex_usd;          // total purchase cost of all units; none = no ROI
  RevenueAlgorithm algorithm = RevenueAlgorithm::kDifficulty;
};

// Per-day figures for all units together. "Running" = uptime x (1 - curtailment): revenue and
// electricity scale with it, the hosting fee does not.
struct Profitability {
  RevenueAlgorithm algorithm = RevenueAlgorithm::kDifficulty;  // the one used for money figures
  double effective_hashrate_ths = 0;  // units x hashrate x (1 - decay)^age_months
  double running_fraction = 0;        // uptime x (1 - curtailment)
  double energy_kwh_per_day = 0;      // units x power x 24 / 1000 x running_fraction

  // Gross BTC/day (before the pool fee) of the effective hashrate while running, both algorithms.
  double btc_per_day_difficulty = 0;
  std::optional<double> btc_per_day_network_share;  // none when the network hashrate is unknown
  // (network_share - difficulty) / difficulty; none when either side is missing or zero.
  std::optional<double> algorithm_divergence_fraction;

  double gross_revenue_btc_per_day = 0;  // of `algorithm`
  double pool_fee_btc_per_day = 0;
  double revenue_btc_per_day = 0;  // net of the pool fee
  double revenue_usd_per_day = 0;
  double electricity_cost_usd_per_day = 0;
  double hosting_fee_usd_per_day = 0;
  double cost_usd_per_day = 0;  // electricity + hosting
  double cost_btc_per_day = 0;  // cost_usd / btc price
  double profit_usd_per_day = 0;
  double profit_btc_per_day = 0;
  // Net revenue per TH/s of effective hashrate per day ("hashprice"); 0 without hashrate.
  double hashprice_usd_per_th_day = 0;

  // The electricity price at which profit is zero: (revenue - hosting) / energy, clamped at 0
  // (0 means unprofitable even with free power). None when no energy is used.
  std::optional<double> break_even_electricity_usd_per_kwh;
  // The BTC price at which profit is zero: cost_usd / revenue_btc. None without revenue.
  std::optional<double> break_even_btc_price_usd;
  // capex / profit_usd_per_day; none without capex or when profit <= 0.
  std::optional<double> roi_days;
  // Days until the cumulative profit covers capex while the hashrate keeps decaying day by day
  // (hashrate x (1-decay)^(age + d / 30.4375)); none when not reached within kMaxRoiHorizonDays.
  // Equals roi_days when there is no decay (and roi_days <= kMaxRoiHorizonDays).
  std::optional<double> roi_days_with_decay;
};

// The full calculation. Errors: invalid_argument naming the offending field; also when
// `algorithm` is kNetworkShare and the network hashrate is unknown.
Result<Profitability> compute_profitability(const MinerSetup& miner,
                                            const NetworkConditions& network,
                                            const OperatingParams& ops);

// Validates NetworkConditions on its own (used by portfolio and curtailment as well).
Status validate_network(const NetworkConditions& network);

// The bare formulas, unchecked (callers validate). Hashrates in H/s; rewards in BTC per block.
double btc_per_day_by_difficulty(double hashrate_hs, double difficulty, double reward_btc);
double btc_per_day_by_network_share(double hashrate_hs, double network_hashrate_hs,
                                    double reward_btc);
double electricity_cost_usd_per_day(double power_w, double electricity_usd_per_kwh);

// Gross BTC/day of `hashrate_ths` running all day under `network` with `algorithm`, unchecked:
// the network must have passed validate_network and, for kNetworkShare, a known hashrate.
double gross_btc_per_day(double hashrate_ths, const NetworkConditions& network,
                         RevenueAlgorithm algorithm);

}  // namespace hi::mining
