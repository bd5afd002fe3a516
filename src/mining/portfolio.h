// Portfolio recalculation: a user's miners, valued against the latest network snapshot.
//
// Input mirrors the tables the portfolio worker reads: the user's `user_miners` rows, the
// `miner_models` they reference, the latest `network_snapshots` row and the user's electricity
// price. Only rows whose status is exactly "active" count; each counted row is valued with
// compute_profitability() at its own electricity price (its override, else the user's price) and
// the rows are summed per model and overall. The breakdown is ordered by model id, so the same
// input always gives the same output. Pure and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"
#include "mining/catalog.h"
#include "mining/profitability.h"

namespace hi::mining {

// A `miner_models` row: what one unit of the model does.
struct PortfolioModel {
  std::int64_t id = 0;
  std::string name;
  double hashrate_ths = 0;  // per unit, TH/s
  double power_w = 0;       // per unit, W
};

// The catalogue entry as a PortfolioModel (the seed inserts the catalogue with the same ids).
PortfolioModel to_portfolio_model(const MinerModel& model);

// A `user_miners` row.
struct UserMiner {
  std::int64_t miner_model_id = 0;
  std::int64_t quantity = 0;                      // >= 0; 0 contributes nothing
  std::optional<double> electricity_usd_per_kwh;  // override of the user's price for this row
  std::string status;  // only "active" counts ("inactive", "maintenance", ... are skipped)
};

// The latest `network_snapshots` row.
struct NetworkSnapshot {
  double btc_price_usd = 0;
  double difficulty = 0;
  double network_hashrate_ehs = 0;  // EH/s; 0 = unknown
};

struct PortfolioOptions {
  double pool_fee_fraction = 0;
  double block_reward_btc = kBlockSubsidyBtc;
  double fees_per_block_btc = 0;
  RevenueAlgorithm algorithm = RevenueAlgorithm::kDifficulty;
};

// Sums over the counted rows, per day.
struct PortfolioFigures {
  std::int64_t units = 0;
  double hashrate_ths = 0;         // total
  double power_kw = 0;             // total
  double revenue_usd_per_day = 0;  // net of the pool fee
  double cost_usd_per_day = 0;     // electricity
  double profit_usd_per_day = 0;
  double revenue_btc_per_day = 0;
  double cost_btc_per_day = 0;
  double profit_btc_per_day = 0;
};

struct ModelBreakdown {
  std::int64_t model_id = 0;
  std::string model_name;
  PortfolioFigures figures;
};

struct Portfolio {
  PortfolioFigures totals;
  std::vector<ModelBreakdown> by_model;  // ascending model_id, models with counted units only
  int counted_rows = 0;                  // active rows
  int skipped_rows = 0;                  // rows whose status is not "active"
};

inline constexpr std::string_view kActiveStatus = "active";

// Errors: invalid_argument for bad prices, quantities or model specs, duplicate model ids;
// not_found when an active row references a model id that is not in `models`.
Result<Portfolio> recalculate_portfolio(std::span<const UserMiner> miners,
                                        std::span<const PortfolioModel> models,
                                        const NetworkSnapshot& snapshot,
                                        double user_electricity_usd_per_kwh,
                                        const PortfolioOptions& options = {});

}  // namespace hi::mining
