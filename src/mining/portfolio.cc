#include "mining/portfolio.h"

#include <map>
#include <unordered_map>

#include "mining/internal/validate.h"

namespace hi::mining {
namespace {

void add(PortfolioFigures& into, const PortfolioFigures& f) {
  into.units += f.units;
  into.hashrate_ths += f.hashrate_ths;
  into.power_kw += f.power_kw;
  into.revenue_usd_per_day += f.revenue_usd_per_day;
  into.cost_usd_per_day += f.cost_usd_per_day;
  into.profit_usd_per_day += f.profit_usd_per_day;
  into.revenue_btc_per_day += f.revenue_btc_per_day;
  into.cost_btc_per_day += f.cost_btc_per_day;
  into.profit_btc_per_day += f.profit_btc_per_day;
}

}  // namespace

PortfolioModel to_portfolio_model(const MinerModel& model) {
  return PortfolioModel{model.id, std::string(model.name), model.hashrate_ths, model.power_w};
}

Result<Portfolio> recalculate_portfolio(std::span<const UserMiner> miners,
                                        std::span<const PortfolioModel> models,
                                        const NetworkSnapshot& snapshot,
                                        double user_electricity_usd_per_kwh,
                                        const PortfolioOptions& options) {
  const NetworkConditions network{snapshot.btc_price_usd, snapshot.difficulty,
                                  snapshot.network_hashrate_ehs, options.block_reward_btc,
                                  options.fees_per_block_btc};
  if (Status s = validate_network(network); !s) return s.error().wrap("network snapshot");
  if (Status s = internal::check_range("user electricity_usd_per_kwh", user_electricity_usd_per_kwh,
                                       0, kMaxElectricityUsdPerKwh);
      !s)
    return s.error();

  std::unordered_map<std::int64_t, const PortfolioModel*> by_id;
  for (const PortfolioModel& m : models) {
    if (!by_id.emplace(m.id, &m).second) {
      return invalid_argument("miner model id " + std::to_string(m.id) + " is listed twice");
    }
  }

  Portfolio out;
  // std::map: the breakdown comes out ordered by model id.
  std::map<std::int64_t, ModelBreakdown> breakdown;
  for (std::size_t i = 0; i < miners.size(); ++i) {
    const UserMiner& row = miners[i];
    const std::string where = "user miner #" + std::to_string(i);
    if (row.status != kActiveStatus) {
      ++out.skipped_rows;
      continue;
    }
    ++out.counted_rows;
    if (row.quantity < 0 || row.quantity > kMaxUnits) {
      return invalid_argument(where + ": quantity must be between 0 and " +
                              std::to_string(kMaxUnits) + ", got " + std::to_string(row.quantity));
    }
    const auto it = by_id.find(row.miner_model_id);
    if (it == by_id.end()) {
      return not_found(where + ": unknown miner model id " + std::to_string(row.miner_model_id));
    }
    const PortfolioModel& model = *it->second;
    if (row.quantity == 0) continue;

    const double price = row.electricity_usd_per_kwh.value_or(user_electricity_usd_per_kwh);
    OperatingParams ops;
    ops.electricity_usd_per_kwh = price;
    ops.pool_fee_fraction = options.pool_fee_fraction;
    ops.algorithm = options.algorithm;
    Result<Profitability> p = compute_profitability(
        MinerSetup{model.hashrate_ths, model.power_w, row.quantity}, network, ops);
    if (!p) return p.error().wrap(where + " (model " + std::to_string(model.id) + ")");

    PortfolioFigures f;
    f.units = row.quantity;
    f.hashrate_ths = p->effective_hashrate_ths;
    f.power_kw = static_cast<double>(row.quantity) * model.power_w / 1000.0;
    f.revenue_usd_per_day = p->revenue_usd_per_day;
    f.cost_usd_per_day = p->cost_usd_per_day;
    f.profit_usd_per_day = p->profit_usd_per_day;
    f.revenue_btc_per_day = p->revenue_btc_per_day;
    f.cost_btc_per_day = p->cost_btc_per_day;
    f.profit_btc_per_day = p->profit_btc_per_day;

    ModelBreakdown& line = breakdown[model.id];
    line.model_id = model.id;
    line.model_name = model.name;
    add(line.figures, f);
  }

  out.by_model.reserve(breakdown.size());
  for (auto& [id, line] : breakdown) {
    add(out.totals, line.figures);
    out.by_model.push_back(std::move(line));
  }
  return out;
}

}  // namespace hi::mining
