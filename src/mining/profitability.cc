#include "mining/profitability.h"

#include <algorithm>
#include <cmath>

#include "mining/internal/validate.h"

namespace hi::mining {
namespace {

using internal::check_positive;
using internal::check_range;

Status validate_miner(const MinerSetup& m) {
  if (Status s = check_range("hashrate_ths", m.hashrate_ths, 0, kMaxUnitHashrateThs); !s) return s;
  if (Status s = check_range("power_w", m.power_w, 0, kMaxUnitPowerW); !s) return s;
  if (m.units < 1 || m.units > kMaxUnits) {
    return invalid_argument("units must be between 1 and " + std::to_string(kMaxUnits) + ", got " +
                            std::to_string(m.units));
  }
  return ok_status();
}

Status validate_ops(const OperatingParams& o) {
  if (Status s = check_range("electricity_usd_per_kwh", o.electricity_usd_per_kwh, 0,
                             kMaxElectricityUsdPerKwh);
      !s)
    return s;
  // A 100 % pool fee would leave nothing to compute a break-even from.
  if (Status s = check_range("pool_fee_fraction", o.pool_fee_fraction, 0, 0.99); !s) return s;
  if (Status s = check_range("hosting_fee_usd_per_unit_day", o.hosting_fee_usd_per_unit_day, 0,
                             kMaxHostingFeeUsdPerUnitDay);
      !s)
    return s;
  if (Status s = check_range("hashrate_decay_per_month", o.hashrate_decay_per_month, 0, 0.99); !s)
    return s;
  if (Status s = check_range("age_months", o.age_months, 0, kMaxAgeMonths); !s) return s;
  if (Status s = check_range("uptime_fraction", o.uptime_fraction, 0, 1); !s) return s;
  if (Status s = check_range("curtailment_fraction", o.curtailment_fraction, 0, 1); !s) return s;
  if (o.capex_usd) {
    if (Status s = check_range("capex_usd", *o.capex_usd, 0, kMaxCapexUsd); !s) return s;
  }
  return ok_status();
}

// Day-by-day payback under decay: day d earns with hashrate h0 x (1-decay)^(age + d/30.4375).
// Revenue is linear in hashrate, so day d's revenue is the day-0 revenue times the decay factor
// relative to today; costs stay flat.
std::optional<double> roi_with_decay(double capex, double revenue_usd_day0, double cost_usd,
                                     double decay_per_month) {
  if (capex <= 0) return 0.0;
  const double daily_factor = std::pow(1.0 - decay_per_month, 1.0 / kDaysPerMonth);
  double cumulative = 0;
  double factor = 1;
  for (int day = 0; day < kMaxRoiHorizonDays; ++day) {
    const double profit = revenue_usd_day0 * factor - cost_usd;
    if (profit <= 0) return std::nullopt;  // decay only makes later days worse
    if (cumulative + profit >= capex) return day + (capex - cumulative) / profit;
    cumulative += profit;
    factor *= daily_factor;
  }
  return std::nullopt;
}

}  // namespace

std::string_view algorithm_name(RevenueAlgorithm algorithm) {
  switch (algorithm) {
    case RevenueAlgorithm::kDifficulty:
      return "difficulty";
    case RevenueAlgorithm::kNetworkShare:
      return "network_share";
  }
  return "unknown";
}

double btc_per_day_by_difficulty(double hashrate_hs, double difficulty, double reward_btc) {
  return hashrate_hs * kSecondsPerDay * reward_btc / (difficulty * kTwoPow32);
}

double btc_per_day_by_network_share(double hashrate_hs, double network_hashrate_hs,
                                    double reward_btc) {
  return hashrate_hs / network_hashrate_hs * kBlocksPerDay * reward_btc;
}

double electricity_cost_usd_per_day(double power_w, double electricity_usd_per_kwh) {
  return power_w * 24.0 / 1000.0 * electricity_usd_per_kwh;
}

double gross_btc_per_day(double hashrate_ths, const NetworkConditions& network,
                         RevenueAlgorithm algorithm) {
  const double reward = network.block_reward_btc + network.fees_per_block_btc;
  const double hs = hashrate_ths * kHashesPerTh;
  if (algorithm == RevenueAlgorithm::kNetworkShare) {
    return btc_per_day_by_network_share(hs, network.network_hashrate_ehs * kHashesPerEh, reward);
  }
  return btc_per_day_by_difficulty(hs, network.difficulty, reward);
}

Status validate_network(const NetworkConditions& n) {
  if (Status s = check_positive("btc_price_usd", n.btc_price_usd, kMaxBtcPriceUsd); !s) return s;
  if (Status s = check_positive("difficulty", n.difficulty, kMaxDifficulty); !s) return s;
  if (Status s =
          check_range("network_hashrate_ehs", n.network_hashrate_ehs, 0, kMaxNetworkHashrateEhs);
      !s)
    return s;
  if (Status s = check_positive("block_reward_btc", n.block_reward_btc, kMaxBlockRewardBtc); !s)
    return s;
  if (Status s = check_range("fees_per_block_btc", n.fees_per_block_btc, 0, kMaxFeesPerBlockBtc);
      !s)
    return s;
  return ok_status();
}

Result<Profitability> compute_profitability(const MinerSetup& miner,
                                            const NetworkConditions& network,
                                            const OperatingParams& ops) {
  if (Status s = validate_miner(miner); !s) return s.error();
  if (Status s = validate_network(network); !s) return s.error();
  if (Status s = validate_ops(ops); !s) return s.error();
  const bool share_known = network.network_hashrate_ehs > 0;
  if (ops.algorithm == RevenueAlgorithm::kNetworkShare && !share_known) {
    return invalid_argument(
        "network_hashrate_ehs is required (> 0) for the network_share algorithm");
  }

  Profitability r;
  r.algorithm = ops.algorithm;
  const double units = static_cast<double>(miner.units);
  const double decay_factor = std::pow(1.0 - ops.hashrate_decay_per_month, ops.age_months);
  r.effective_hashrate_ths = units * miner.hashrate_ths * decay_factor;
  r.running_fraction = ops.uptime_fraction * (1.0 - ops.curtailment_fraction);
  r.energy_kwh_per_day = units * miner.power_w * 24.0 / 1000.0 * r.running_fraction;

  r.btc_per_day_difficulty =
      gross_btc_per_day(r.effective_hashrate_ths, network, RevenueAlgorithm::kDifficulty) *
      r.running_fraction;
  if (share_known) {
    r.btc_per_day_network_share =
        gross_btc_per_day(r.effective_hashrate_ths, network, RevenueAlgorithm::kNetworkShare) *
        r.running_fraction;
    if (r.btc_per_day_difficulty > 0) {
      r.algorithm_divergence_fraction =
          (*r.btc_per_day_network_share - r.btc_per_day_difficulty) / r.btc_per_day_difficulty;
    }
  }

  r.gross_revenue_btc_per_day = ops.algorithm == RevenueAlgorithm::kNetworkShare
                                    ? *r.btc_per_day_network_share
                                    : r.btc_per_day_difficulty;
  r.pool_fee_btc_per_day = r.gross_revenue_btc_per_day * ops.pool_fee_fraction;
  r.revenue_btc_per_day = r.gross_revenue_btc_per_day - r.pool_fee_btc_per_day;
  r.revenue_usd_per_day = r.revenue_btc_per_day * network.btc_price_usd;
  r.electricity_cost_usd_per_day = r.energy_kwh_per_day * ops.electricity_usd_per_kwh;
  r.hosting_fee_usd_per_day = units * ops.hosting_fee_usd_per_unit_day;
  r.cost_usd_per_day = r.electricity_cost_usd_per_day + r.hosting_fee_usd_per_day;
  r.cost_btc_per_day = r.cost_usd_per_day / network.btc_price_usd;
  r.profit_usd_per_day = r.revenue_usd_per_day - r.cost_usd_per_day;
  r.profit_btc_per_day = r.revenue_btc_per_day - r.cost_btc_per_day;
  if (r.effective_hashrate_ths > 0) {
    r.hashprice_usd_per_th_day = r.revenue_usd_per_day / r.effective_hashrate_ths;
  }

  if (r.energy_kwh_per_day > 0) {
    r.break_even_electricity_usd_per_kwh =
        std::max(0.0, (r.revenue_usd_per_day - r.hosting_fee_usd_per_day) / r.energy_kwh_per_day);
  }
  if (r.revenue_btc_per_day > 0) {
    r.break_even_btc_price_usd = r.cost_usd_per_day / r.revenue_btc_per_day;
  }
  if (ops.capex_usd && r.profit_usd_per_day > 0) {
    r.roi_days = *ops.capex_usd / r.profit_usd_per_day;
    r.roi_days_with_decay = roi_with_decay(*ops.capex_usd, r.revenue_usd_per_day,
                                           r.cost_usd_per_day, ops.hashrate_decay_per_month);
  }
  return r;
}

}  // namespace hi::mining
