#include "mining/portfolio.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace hi::mining {
namespace {

std::vector<PortfolioModel> models() {
  return {to_portfolio_model(*find_model("antminer-s21")),                // id 17, 200 TH/s, 3500 W
          to_portfolio_model(*find_model("antminer-s19-pro")),            // id 6, 110 TH/s, 3250 W
          to_portfolio_model(*find_model("whatsminer-m30s-plus-plus"))};  // id 29
}

NetworkSnapshot snapshot() { return {50000, 1e14, 0}; }

TEST(MiningPortfolio, HandComputedTotalsAndBreakdown) {
  // Difficulty 1e14, BTC 50,000 USD, user price 0.06 USD/kWh, no pool fee.
  // One TH/s earns 1e12 x 86400 x 3.125 / (1e14 x 2^32) = 6.28642737865448e-7 BTC/day.
  //
  // S19 Pro (id 6): rows B (3 units at an override of 0.03) and C (1 unit at the user's 0.06)
  //   BTC  = 4 x 110 x 6.28642737865448e-7 = 2.766028046607971e-4 BTC/day
  //   USD  = x 50000 = 13.830140233039856
  //   cost = 3 x 78 kWh x 0.03 + 1 x 78 kWh x 0.06 = 7.02 + 4.68 = 11.70
  //   profit = 2.130140233039856
  // S21 (id 17): row A (2 units at 0.06)
  //   BTC  = 2 x 200 x 6.28642737865448e-7 = 2.514570951461792e-4 BTC/day
  //   USD  = 12.57285475730896; cost = 2 x 84 kWh x 0.06 = 10.08; profit = 2.49285475730896
  // Rows D ("inactive") and E ("maintenance") do not count.
  // Totals: revenue 26.402994990348816, cost 21.78, profit 4.622994990348816 USD/day;
  //         6 units, 840 TH/s, 3 x 3.25 + 3.25 + 2 x 3.5 = 20 kW.
  const std::vector<UserMiner> miners = {
      {17, 2, std::nullopt, "active"},      // A
      {6, 3, 0.03, "active"},               // B
      {6, 1, std::nullopt, "active"},       // C
      {29, 5, std::nullopt, "inactive"},    // D
      {17, 4, std::nullopt, "maintenance"}  // E
  };
  const auto m = models();
  Result<Portfolio> r = recalculate_portfolio(miners, m, snapshot(), 0.06);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->counted_rows, 3);
  EXPECT_EQ(r->skipped_rows, 2);

  ASSERT_EQ(r->by_model.size(), 2u);
  const ModelBreakdown& s19 = r->by_model[0];  // ordered by model id: 6 before 17
  EXPECT_EQ(s19.model_id, 6);
  EXPECT_EQ(s19.model_name, "Antminer S19 Pro");
  EXPECT_EQ(s19.figures.units, 4);
  EXPECT_DOUBLE_EQ(s19.figures.hashrate_ths, 440);
  EXPECT_DOUBLE_EQ(s19.figures.power_kw, 13);
  EXPECT_NEAR(s19.figures.revenue_btc_per_day, 2.766028046607971e-4, 1e-16);
  EXPECT_NEAR(s19.figures.revenue_usd_per_day, 13.830140233039856, 1e-9);
  EXPECT_NEAR(s19.figures.cost_usd_per_day, 11.70, 1e-9);
  EXPECT_NEAR(s19.figures.profit_usd_per_day, 2.130140233039856, 1e-9);
  EXPECT_NEAR(s19.figures.cost_btc_per_day, 11.70 / 50000, 1e-15);

  const ModelBreakdown& s21 = r->by_model[1];
  EXPECT_EQ(s21.model_id, 17);
  EXPECT_EQ(s21.figures.units, 2);
  EXPECT_DOUBLE_EQ(s21.figures.hashrate_ths, 400);
  EXPECT_DOUBLE_EQ(s21.figures.power_kw, 7);
  EXPECT_NEAR(s21.figures.revenue_usd_per_day, 12.57285475730896, 1e-9);
  EXPECT_NEAR(s21.figures.cost_usd_per_day, 10.08, 1e-9);
  EXPECT_NEAR(s21.figures.profit_usd_per_day, 2.49285475730896, 1e-9);

  const PortfolioFigures& t = r->totals;
  EXPECT_EQ(t.units, 6);
  EXPECT_DOUBLE_EQ(t.hashrate_ths, 840);
  EXPECT_DOUBLE_EQ(t.power_kw, 20);
  EXPECT_NEAR(t.revenue_usd_per_day, 26.40, 0.005);
  EXPECT_NEAR(t.revenue_usd_per_day, 26.402994990348816, 1e-9);
  EXPECT_NEAR(t.cost_usd_per_day, 21.78, 1e-9);
  EXPECT_NEAR(t.profit_usd_per_day, 4.622994990348816, 1e-9);
  EXPECT_NEAR(t.revenue_btc_per_day, 840 * 6.28642737865448e-7, 1e-16);
  EXPECT_NEAR(t.profit_btc_per_day, t.revenue_btc_per_day - 21.78 / 50000, 1e-15);
}

TEST(MiningPortfolio, OrderingDoesNotDependOnRowOrder) {
  std::vector<UserMiner> miners = {{29, 1, std::nullopt, "active"},
                                   {6, 2, std::nullopt, "active"},
                                   {17, 3, std::nullopt, "active"}};
  const auto m = models();
  Result<Portfolio> a = recalculate_portfolio(miners, m, snapshot(), 0.05);
  std::reverse(miners.begin(), miners.end());
  Result<Portfolio> b = recalculate_portfolio(miners, m, snapshot(), 0.05);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->by_model.size(), 3u);
  EXPECT_EQ(a->by_model[0].model_id, 6);
  EXPECT_EQ(a->by_model[1].model_id, 17);
  EXPECT_EQ(a->by_model[2].model_id, 29);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a->by_model[i].model_id, b->by_model[i].model_id);
    EXPECT_DOUBLE_EQ(a->by_model[i].figures.profit_usd_per_day,
                     b->by_model[i].figures.profit_usd_per_day);
  }
}

TEST(MiningPortfolio, EmptyAndAllInactiveGiveZeroTotals) {
  const auto m = models();
  Result<Portfolio> empty = recalculate_portfolio({}, m, snapshot(), 0.05);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->by_model.empty());
  EXPECT_EQ(empty->totals.units, 0);
  EXPECT_EQ(empty->totals.profit_usd_per_day, 0);

  const std::vector<UserMiner> off = {{6, 2, std::nullopt, "Active"},  // case matters
                                      {6, 2, std::nullopt, "inactive"},
                                      {999, 2, std::nullopt, "retired"}};  // unknown but skipped
  Result<Portfolio> r = recalculate_portfolio(off, m, snapshot(), 0.05);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->skipped_rows, 3);
  EXPECT_TRUE(r->by_model.empty());
}

TEST(MiningPortfolio, ZeroQuantityCountsButAddsNothing) {
  const std::vector<UserMiner> miners = {{6, 0, std::nullopt, "active"}};
  const auto m = models();
  Result<Portfolio> r = recalculate_portfolio(miners, m, snapshot(), 0.05);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->counted_rows, 1);
  EXPECT_TRUE(r->by_model.empty());
}

TEST(MiningPortfolio, Errors) {
  const auto m = models();
  const std::vector<UserMiner> unknown = {{999, 1, std::nullopt, "active"}};
  Result<Portfolio> r = recalculate_portfolio(unknown, m, snapshot(), 0.05);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kNotFound);
  EXPECT_NE(r.error().message.find("999"), std::string::npos);

  const std::vector<UserMiner> negative = {{6, -1, std::nullopt, "active"}};
  EXPECT_EQ(recalculate_portfolio(negative, m, snapshot(), 0.05).error().code,
            Code::kInvalidArgument);

  const std::vector<UserMiner> nan_override = {
      {6, 1, std::numeric_limits<double>::quiet_NaN(), "active"}};
  r = recalculate_portfolio(nan_override, m, snapshot(), 0.05);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("electricity_usd_per_kwh"), std::string::npos);

  const std::vector<UserMiner> ok = {{6, 1, std::nullopt, "active"}};
  EXPECT_FALSE(recalculate_portfolio(ok, m, snapshot(), -0.01).ok());
  EXPECT_FALSE(recalculate_portfolio(ok, m, {50000, 0, 0}, 0.05).ok());  // zero difficulty
  r = recalculate_portfolio(ok, m, {std::nan(""), 1e14, 0}, 0.05);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("network snapshot: btc_price_usd"), std::string::npos);

  std::vector<PortfolioModel> dup = m;
  dup.push_back(dup.front());
  EXPECT_EQ(recalculate_portfolio(ok, dup, snapshot(), 0.05).error().code, Code::kInvalidArgument);

  std::vector<PortfolioModel> broken = m;
  broken[1].hashrate_ths = -110;  // the S19 Pro row
  r = recalculate_portfolio(ok, broken, snapshot(), 0.05);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("hashrate_ths"), std::string::npos);
}

TEST(MiningPortfolio, MatchesProfitabilityOfTheSameMiners) {
  // One active row is exactly compute_profitability() of that row.
  PortfolioOptions opts;
  opts.pool_fee_fraction = 0.015;
  const std::vector<UserMiner> miners = {{17, 7, 0.045, "active"}};
  const auto m = models();
  Result<Portfolio> r = recalculate_portfolio(miners, m, {65000, 1.1e14, 800}, 0.07, opts);
  ASSERT_TRUE(r.ok());
  OperatingParams ops;
  ops.electricity_usd_per_kwh = 0.045;
  ops.pool_fee_fraction = 0.015;
  NetworkConditions n{65000, 1.1e14, 800};
  Result<Profitability> p = compute_profitability({200, 3500, 7}, n, ops);
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ(r->totals.profit_usd_per_day, p->profit_usd_per_day);
  EXPECT_DOUBLE_EQ(r->totals.revenue_btc_per_day, p->revenue_btc_per_day);
}

}  // namespace
}  // namespace hi::mining
