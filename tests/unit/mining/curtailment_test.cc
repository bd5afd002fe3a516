#include "mining/curtailment.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace hi::mining {
namespace {

// Hours 0-5 0.03, 6-15 0.05, 16 0.20, 17 0.25, 18 0.30, 19 0.22, 20 0.10, 21-23 0.04 USD/kWh.
std::array<double, kHoursPerDay> evening_peak_prices() {
  std::array<double, kHoursPerDay> p{};
  for (int h = 0; h < 24; ++h) {
    const auto i = static_cast<std::size_t>(h);
    p[i] = h < 6 ? 0.03 : h < 16 ? 0.05 : h > 20 ? 0.04 : 0.0;
  }
  p[16] = 0.20;
  p[17] = 0.25;
  p[18] = 0.30;
  p[19] = 0.22;
  p[20] = 0.10;
  return p;
}

CurtailmentRequest s19_request(int max_hours) {
  CurtailmentRequest req;
  req.hourly_price_usd_per_kwh = evening_peak_prices();
  req.groups = {{6, "Antminer S19 Pro", 10, 110, 3250}};
  req.max_curtailment_hours = max_hours;
  req.network.btc_price_usd = 60000;
  req.network.difficulty = 1e14;
  return req;
}

TEST(MiningCurtailment, KnownOptimumSolvedByGlpk) {
  // 10 x S19 Pro (110 TH/s, 3.25 kW), difficulty 1e14, BTC 60,000 USD, no pool fee.
  //   r = 6.915070116519928e-5 BTC/day / 24 x 60000 = 0.17287675291299822 USD per unit-hour
  //   break-even price = r / 3.25 kW = 0.0531928 USD/kWh: hours 16-20 lose money.
  //   With at most 3 hours off, the optimum is off in the 3 dearest: 18 (0.30), 17 (0.25),
  //   19 (0.22); 16 (0.20) and 20 (0.10) keep running.
  //   Baseline (all 24 h): per unit 24 r - 3.25 x sum(prices) = 4.149042069911957 - 3.25 x 1.87
  //     = -1.928457930088043; x 10 = -19.28457930088043 USD
  //   Saving per unit: 3.25 x (0.25 + 0.30 + 0.22) - 3 r = 2.5025 - 0.5186302587389947
  //     = 1.9838697412610053; x 10 = 19.838697412610053 USD
  //   Optimum = -19.28457930088043 + 19.838697412610053 = 0.554118111729623 USD
  //   Energy saved = 10 x 3 h x 3.25 kW = 97.5 kWh, costing 25.025 USD;
  //   revenue forgone = 30 r = 5.186302587389947 USD = 30 x 6.915070116519928e-5 / 24 BTC.
  Result<CurtailmentPlan> plan = optimize_curtailment(s19_request(3));
  ASSERT_TRUE(plan.ok()) << plan.error().to_string();
  EXPECT_EQ(plan->solver, "glpk");
  ASSERT_EQ(plan->schedule.size(), 24u);
  for (int h = 0; h < 24; ++h) {
    const bool off = h == 17 || h == 18 || h == 19;
    EXPECT_EQ(plan->schedule[static_cast<std::size_t>(h)].running_units[0], off ? 0 : 10)
        << "hour " << h;
  }
  EXPECT_NEAR(plan->baseline_profit_usd, -19.28457930088043, 1e-9);
  EXPECT_NEAR(plan->total_profit_usd, 0.554118111729623, 1e-9);
  EXPECT_NEAR(plan->total_profit_usd, 0.55, 0.005);
  EXPECT_NEAR(plan->profit_gain_usd, 19.838697412610053, 1e-9);
  EXPECT_NEAR(plan->energy_saved_kwh, 97.5, 1e-9);
  EXPECT_NEAR(plan->energy_cost_saved_usd, 25.025, 1e-9);
  EXPECT_NEAR(plan->revenue_forgone_usd, 5.186302587389947, 1e-9);
  EXPECT_NEAR(plan->revenue_forgone_btc, 30 * 6.915070116519928e-5 / 24, 1e-15);
  EXPECT_EQ(plan->unit_hours_off, 30);
  EXPECT_EQ(plan->hours_with_curtailment, 3);
  ASSERT_EQ(plan->groups.size(), 1u);
  EXPECT_NEAR(plan->groups[0].revenue_usd_per_unit_hour, 0.17287675291299822, 1e-12);
  EXPECT_NEAR(plan->groups[0].break_even_price_usd_per_kwh, 0.17287675291299822 / 3.25, 1e-12);
  // Hour 16 runs at a loss: 10 x (r - 3.25 x 0.20) = -4.7712324708700178 USD.
  EXPECT_NEAR(plan->schedule[16].profit_usd, -4.7712324708700178, 1e-9);
  EXPECT_NEAR(plan->schedule[16].power_kw, 32.5, 1e-12);
  EXPECT_EQ(plan->schedule[18].power_kw, 0);

  Result<CurtailmentPlan> greedy = curtail_greedy(s19_request(3));
  ASSERT_TRUE(greedy.ok());
  EXPECT_EQ(greedy->solver, "greedy");
  EXPECT_NEAR(greedy->total_profit_usd, plan->total_profit_usd, 1e-9);
}

TEST(MiningCurtailment, NoLimitSwitchesOffEveryLosingHour) {
  // 24 allowed hours: off in all five hours above 0.0532 USD/kWh (16-20), none more.
  Result<CurtailmentPlan> plan = optimize_curtailment(s19_request(24));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->hours_with_curtailment, 5);
  EXPECT_EQ(plan->unit_hours_off, 50);
  for (int h = 16; h <= 20; ++h) {
    EXPECT_EQ(plan->schedule[static_cast<std::size_t>(h)].running_units[0], 0);
  }
}

TEST(MiningCurtailment, ZeroHoursMeansTheBaseline) {
  Result<CurtailmentPlan> plan = optimize_curtailment(s19_request(0));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->unit_hours_off, 0);
  EXPECT_DOUBLE_EQ(plan->total_profit_usd, plan->baseline_profit_usd);
  EXPECT_EQ(plan->profit_gain_usd, 0);
}

TEST(MiningCurtailment, SeveralGroupsAndAnIdleGroup) {
  // S21 (200 TH/s, 3.5 kW): r = 1.257285475730896e-4 / 24 x 60000 = 0.3143213689327240 USD,
  // break-even 0.0898061 USD/kWh, so with 2 hours it too goes off at 18 and 17. A group with no
  // power never pays to switch off; an empty group is carried along.
  CurtailmentRequest req = s19_request(2);
  req.groups.push_back({17, "Antminer S21", 5, 200, 3500});
  req.groups.push_back({0, "free power", 3, 100, 0});
  req.groups.push_back({1, "none", 0, 13.5, 1323});
  Result<CurtailmentPlan> plan = optimize_curtailment(req);
  ASSERT_TRUE(plan.ok()) << plan.error().to_string();
  for (int h : {17, 18}) {
    const auto& hp = plan->schedule[static_cast<std::size_t>(h)];
    EXPECT_EQ(hp.running_units, (std::vector<std::int64_t>{0, 0, 3, 0}));
  }
  EXPECT_EQ(plan->schedule[19].running_units, (std::vector<std::int64_t>{10, 5, 3, 0}));
  EXPECT_EQ(plan->groups[1].unit_hours_off, 10);
  EXPECT_EQ(plan->groups[2].unit_hours_off, 0);
  // Saving for S21 in hours 18 and 17: 5 x (3.5 x (0.30 + 0.25) - 2 x 0.314321368932724)
  //   = 5 x (1.925 - 0.628642737865448) = 6.48178631067276 USD; S19 Pro: 10 x (3.25 x 0.55 - 2 r)
  //   = 10 x (1.7875 - 0.34575350582599644) = 14.417464941740036 USD.
  EXPECT_NEAR(plan->profit_gain_usd, 6.48178631067276 + 14.417464941740036, 1e-9);
  Result<CurtailmentPlan> greedy = curtail_greedy(req);
  ASSERT_TRUE(greedy.ok());
  EXPECT_NEAR(greedy->total_profit_usd, plan->total_profit_usd, 1e-9);
}

TEST(MiningCurtailment, NegativePricesKeepEverythingRunning) {
  CurtailmentRequest req = s19_request(24);
  req.hourly_price_usd_per_kwh.fill(-0.02);
  Result<CurtailmentPlan> plan = optimize_curtailment(req);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->unit_hours_off, 0);
  // Paid to consume: cost is negative, profit exceeds revenue.
  EXPECT_GT(plan->total_profit_usd, plan->revenue_usd);
}

TEST(MiningCurtailment, NoGroups) {
  CurtailmentRequest req = s19_request(4);
  req.groups.clear();
  Result<CurtailmentPlan> plan = optimize_curtailment(req);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->total_profit_usd, 0);
  EXPECT_EQ(plan->schedule.size(), 24u);
}

TEST(MiningCurtailment, RejectsBadInput) {
  CurtailmentRequest req = s19_request(3);
  req.max_curtailment_hours = 25;
  EXPECT_EQ(optimize_curtailment(req).error().code, Code::kInvalidArgument);

  req = s19_request(3);
  req.hourly_price_usd_per_kwh[5] = std::numeric_limits<double>::quiet_NaN();
  Result<CurtailmentPlan> r = optimize_curtailment(req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("hourly_price_usd_per_kwh[5]"), std::string::npos);

  req = s19_request(3);
  req.hourly_price_usd_per_kwh[0] = 50;  // USD/MWh entered as USD/kWh
  EXPECT_FALSE(optimize_curtailment(req).ok());

  req = s19_request(3);
  req.groups[0].units = -1;
  EXPECT_FALSE(optimize_curtailment(req).ok());
  EXPECT_FALSE(curtail_greedy(req).ok());

  req = s19_request(3);
  req.groups[0].hashrate_ths = -110;
  r = optimize_curtailment(req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("groups[0].hashrate_ths"), std::string::npos);

  req = s19_request(3);
  req.network.difficulty = 0;
  EXPECT_FALSE(optimize_curtailment(req).ok());

  req = s19_request(3);
  req.algorithm = RevenueAlgorithm::kNetworkShare;  // network hashrate unknown
  EXPECT_FALSE(optimize_curtailment(req).ok());
}

}  // namespace
}  // namespace hi::mining
