// Property tests: invariants checked over many generated inputs (fixed seeds, so deterministic).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "mining/catalog.h"
#include "mining/curtailment.h"
#include "mining/profitability.h"

namespace hi::mining {
namespace {

constexpr int kCases = 2000;

// Random but valid inputs over realistic ranges.
struct Generator {
  std::mt19937_64 rng;
  explicit Generator(std::uint64_t seed) : rng(seed) {}

  double uniform(double lo, double hi) { return std::uniform_real_distribution<>(lo, hi)(rng); }
  std::int64_t integer(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  }

  MinerSetup miner() { return {uniform(0, 500), uniform(0, 8000), integer(1, 1000)}; }

  NetworkConditions network() {
    NetworkConditions n;
    n.btc_price_usd = uniform(1000, 250000);
    n.difficulty = uniform(1e12, 5e14);
    n.network_hashrate_ehs = integer(0, 3) == 0 ? 0 : uniform(50, 2000);
    n.fees_per_block_btc = uniform(0, 1);
    return n;
  }

  OperatingParams ops() {
    OperatingParams o;
    o.electricity_usd_per_kwh = uniform(0, 0.5);
    o.pool_fee_fraction = uniform(0, 0.05);
    o.hosting_fee_usd_per_unit_day = uniform(0, 5);
    o.hashrate_decay_per_month = uniform(0, 0.05);
    o.age_months = uniform(0, 48);
    o.uptime_fraction = uniform(0.5, 1);
    o.curtailment_fraction = uniform(0, 0.5);
    o.capex_usd = uniform(0, 1e6);
    return o;
  }
};

Profitability must(Result<Profitability> r) {
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
  return r.ok() ? *r : Profitability{};
}

TEST(MiningProperties, MoreHashrateNeverLowersRevenue) {
  Generator gen(1);
  for (int i = 0; i < kCases; ++i) {
    MinerSetup m = gen.miner();
    const NetworkConditions n = gen.network();
    const OperatingParams o = gen.ops();
    const Profitability base = must(compute_profitability(m, n, o));
    m.hashrate_ths += gen.uniform(0, 100);
    const Profitability more = must(compute_profitability(m, n, o));
    ASSERT_GE(more.revenue_usd_per_day, base.revenue_usd_per_day) << "case " << i;
    ASSERT_GE(more.revenue_btc_per_day, base.revenue_btc_per_day) << "case " << i;
    ASSERT_GE(more.profit_usd_per_day, base.profit_usd_per_day) << "case " << i;
  }
}

TEST(MiningProperties, HigherElectricityPriceNeverRaisesProfit) {
  Generator gen(2);
  for (int i = 0; i < kCases; ++i) {
    const MinerSetup m = gen.miner();
    const NetworkConditions n = gen.network();
    OperatingParams o = gen.ops();
    const Profitability base = must(compute_profitability(m, n, o));
    o.electricity_usd_per_kwh += gen.uniform(0, 0.5);
    const Profitability dearer = must(compute_profitability(m, n, o));
    ASSERT_LE(dearer.profit_usd_per_day, base.profit_usd_per_day) << "case " << i;
    ASSERT_LE(dearer.profit_btc_per_day, base.profit_btc_per_day) << "case " << i;
    ASSERT_EQ(dearer.revenue_usd_per_day, base.revenue_usd_per_day) << "case " << i;
  }
}

TEST(MiningProperties, HigherDifficultyNeverRaisesRevenue) {
  Generator gen(3);
  for (int i = 0; i < kCases; ++i) {
    const MinerSetup m = gen.miner();
    NetworkConditions n = gen.network();
    const OperatingParams o = gen.ops();
    const Profitability base = must(compute_profitability(m, n, o));
    n.difficulty *= gen.uniform(1, 2);
    const Profitability harder = must(compute_profitability(m, n, o));
    ASSERT_LE(harder.revenue_usd_per_day, base.revenue_usd_per_day) << "case " << i;
  }
}

TEST(MiningProperties, OutputsAreFiniteAndConsistent) {
  Generator gen(4);
  for (int i = 0; i < kCases; ++i) {
    const Profitability p = must(compute_profitability(gen.miner(), gen.network(), gen.ops()));
    for (double v : {p.revenue_usd_per_day, p.cost_usd_per_day, p.profit_usd_per_day,
                     p.revenue_btc_per_day, p.cost_btc_per_day, p.profit_btc_per_day,
                     p.hashprice_usd_per_th_day, p.energy_kwh_per_day}) {
      ASSERT_TRUE(std::isfinite(v)) << "case " << i;
    }
    ASSERT_NEAR(p.profit_usd_per_day, p.revenue_usd_per_day - p.cost_usd_per_day,
                1e-9 * (1 + std::abs(p.revenue_usd_per_day)));
    ASSERT_GE(p.revenue_usd_per_day, 0);
    ASSERT_GE(p.cost_usd_per_day, 0);
    if (p.roi_days) {
      ASSERT_GT(p.profit_usd_per_day, 0);
      ASSERT_TRUE(std::isfinite(*p.roi_days));
    }
    if (p.roi_days_with_decay && p.roi_days) {
      // Decay can only delay the payback.
      ASSERT_GE(*p.roi_days_with_decay, *p.roi_days * (1 - 1e-9)) << "case " << i;
    }
    if (p.break_even_electricity_usd_per_kwh) {
      ASSERT_GE(*p.break_even_electricity_usd_per_kwh, 0);
    }
  }
}

TEST(MiningProperties, BreakEvenPriceGivesZeroProfit) {
  Generator gen(5);
  for (int i = 0; i < 500; ++i) {
    const MinerSetup m{gen.uniform(50, 500), gen.uniform(1000, 6000), gen.integer(1, 100)};
    const NetworkConditions n = gen.network();
    OperatingParams o = gen.ops();
    o.hosting_fee_usd_per_unit_day = 0;
    const Profitability p = must(compute_profitability(m, n, o));
    ASSERT_TRUE(p.break_even_electricity_usd_per_kwh.has_value());
    if (*p.break_even_electricity_usd_per_kwh > kMaxElectricityUsdPerKwh) continue;
    o.electricity_usd_per_kwh = *p.break_even_electricity_usd_per_kwh;
    const Profitability at = must(compute_profitability(m, n, o));
    ASSERT_NEAR(at.profit_usd_per_day, 0, 1e-9 * at.revenue_usd_per_day) << "case " << i;
  }
}

TEST(MiningProperties, AlgorithmsAgreeWhenTheNetworkHashrateMatchesDifficulty) {
  Generator gen(6);
  for (int i = 0; i < 500; ++i) {
    NetworkConditions n = gen.network();
    n.network_hashrate_ehs = n.difficulty * kTwoPow32 / 600 / kHashesPerEh;
    const Profitability p = must(compute_profitability(gen.miner(), n, gen.ops()));
    if (!p.algorithm_divergence_fraction) continue;  // zero hashrate
    ASSERT_NEAR(*p.algorithm_divergence_fraction, 0, 1e-12) << "case " << i;
  }
}

TEST(MiningProperties, EveryCatalogModelComputes) {
  NetworkConditions n;
  n.btc_price_usd = 95000;
  n.difficulty = 1.1e14;
  n.network_hashrate_ehs = 800;
  OperatingParams o;
  o.electricity_usd_per_kwh = 0.06;
  for (const MinerModel& model : catalog()) {
    o.capex_usd = model.typical_price_usd;
    const Profitability p =
        must(compute_profitability({model.hashrate_ths, model.power_w, 1}, n, o));
    EXPECT_GT(p.revenue_usd_per_day, 0) << model.slug;
  }
}

// Curtailment: the GLPK optimum equals the exact greedy optimum, the plan respects the limit,
// never does worse than running everything, and more allowed hours never lower the profit.
TEST(MiningProperties, CurtailmentSolverMatchesExactGreedy) {
  Generator gen(7);
  for (int i = 0; i < 150; ++i) {
    SCOPED_TRACE(testing::Message() << "case " << i);
    CurtailmentRequest req;
    for (double& p : req.hourly_price_usd_per_kwh) {
      p = gen.integer(0, 9) == 0 ? gen.uniform(-0.05, 0) : gen.uniform(0, 0.4);
    }
    const auto groups = gen.integer(0, 5);
    for (std::int64_t g = 0; g < groups; ++g) {
      req.groups.push_back(
          {g, "g", gen.integer(0, 300), gen.uniform(10, 500), gen.uniform(500, 6000)});
    }
    req.max_curtailment_hours = static_cast<int>(gen.integer(0, 24));
    req.network.btc_price_usd = gen.uniform(20000, 150000);
    req.network.difficulty = gen.uniform(5e13, 2e14);
    req.pool_fee_fraction = gen.uniform(0, 0.03);

    Result<CurtailmentPlan> lp = optimize_curtailment(req);
    Result<CurtailmentPlan> greedy = curtail_greedy(req);
    ASSERT_TRUE(lp.ok() && greedy.ok());
    const double scale = 1 + std::abs(greedy->baseline_profit_usd);
    ASSERT_NEAR(lp->total_profit_usd, greedy->total_profit_usd, 1e-9 * scale);
    ASSERT_GE(lp->profit_gain_usd, -1e-9 * scale);
    ASSERT_LE(greedy->hours_with_curtailment, req.max_curtailment_hours);
    for (std::size_t g = 0; g < req.groups.size(); ++g) {
      ASSERT_LE(lp->groups[g].unit_hours_off, req.groups[g].units * req.max_curtailment_hours);
    }
    if (req.max_curtailment_hours < 24) {
      CurtailmentRequest more = req;
      ++more.max_curtailment_hours;
      Result<CurtailmentPlan> lp_more = optimize_curtailment(more);
      ASSERT_TRUE(lp_more.ok());
      ASSERT_GE(lp_more->total_profit_usd, lp->total_profit_usd - 1e-9 * scale);
    }
  }
}

TEST(MiningProperties, CurtailmentProfitFallsWithPrice) {
  Generator gen(8);
  for (int i = 0; i < 100; ++i) {
    CurtailmentRequest req;
    for (double& p : req.hourly_price_usd_per_kwh) p = gen.uniform(0, 0.3);
    req.groups.push_back(
        {1, "a", gen.integer(1, 50), gen.uniform(50, 300), gen.uniform(2000, 5000)});
    req.max_curtailment_hours = static_cast<int>(gen.integer(0, 24));
    req.network.btc_price_usd = 60000;
    req.network.difficulty = 1e14;
    Result<CurtailmentPlan> base = optimize_curtailment(req);
    const auto h = static_cast<std::size_t>(gen.integer(0, 23));
    req.hourly_price_usd_per_kwh[h] += gen.uniform(0, 0.5);
    Result<CurtailmentPlan> dearer = optimize_curtailment(req);
    ASSERT_TRUE(base.ok() && dearer.ok());
    ASSERT_LE(dearer->total_profit_usd, base->total_profit_usd + 1e-9) << "case " << i;
  }
}

}  // namespace
}  // namespace hi::mining
