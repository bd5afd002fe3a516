#include "mining/json.h"

namespace hi::mining {
namespace {

nlohmann::json optional_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json to_json(const Profitability& r) {
  return {
      {"algorithm", algorithm_name(r.algorithm)},
      {"effective_hashrate_ths", r.effective_hashrate_ths},
      {"running_fraction", r.running_fraction},
      {"energy_kwh_per_day", r.energy_kwh_per_day},
      {"btc_per_day_difficulty", r.btc_per_day_difficulty},
      {"btc_per_day_network_share", optional_json(r.btc_per_day_network_share)},
      {"algorithm_divergence_fraction", optional_json(r.algorithm_divergence_fraction)},
      {"gross_revenue_btc_per_day", r.gross_revenue_btc_per_day},
      {"pool_fee_btc_per_day", r.pool_fee_btc_per_day},
      {"revenue_btc_per_day", r.revenue_btc_per_day},
      {"revenue_usd_per_day", r.revenue_usd_per_day},
      {"electricity_cost_usd_per_day", r.electricity_cost_usd_per_day},
      {"hosting_fee_usd_per_day", r.hosting_fee_usd_per_day},
      {"cost_usd_per_day", r.cost_usd_per_day},
      {"cost_btc_per_day", r.cost_btc_per_day},
      {"profit_usd_per_day", r.profit_usd_per_day},
      {"profit_btc_per_day", r.profit_btc_per_day},
      {"hashprice_usd_per_th_day", r.hashprice_usd_per_th_day},
      {"break_even_electricity_usd_per_kwh", optional_json(r.break_even_electricity_usd_per_kwh)},
      {"break_even_btc_price_usd", optional_json(r.break_even_btc_price_usd)},
      {"roi_days", optional_json(r.roi_days)},
      {"roi_days_with_decay", optional_json(r.roi_days_with_decay)}};
}

nlohmann::json to_json(const NetworkConditions& network, const OperatingParams& ops) {
  return {{"btc_price_usd", network.btc_price_usd},
          {"difficulty", network.difficulty},
          {"network_hashrate_ehs", network.network_hashrate_ehs},
          {"block_reward_btc", network.block_reward_btc},
          {"fees_per_block_btc", network.fees_per_block_btc},
          {"electricity_usd_per_kwh", ops.electricity_usd_per_kwh},
          {"pool_fee_fraction", ops.pool_fee_fraction},
          {"hosting_fee_usd_per_unit_day", ops.hosting_fee_usd_per_unit_day},
          {"hashrate_decay_per_month", ops.hashrate_decay_per_month},
          {"age_months", ops.age_months},
          {"uptime_fraction", ops.uptime_fraction},
          {"curtailment_fraction", ops.curtailment_fraction},
          {"capex_usd", optional_json(ops.capex_usd)},
          {"algorithm", algorithm_name(ops.algorithm)}};
}

}  // namespace hi::mining
