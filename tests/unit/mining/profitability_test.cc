#include "mining/profitability.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <limits>
#include <ostream>
#include <string>

namespace hi::mining {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Relative comparison for values that are not money.
#define EXPECT_REL(actual, expected, rel) \
  EXPECT_NEAR((actual), (expected), std::abs(expected) * (rel) + 1e-300)

// A cent is 0.01 USD; "right to the cent" means within half of one.
constexpr double kHalfCent = 0.005;

NetworkConditions network_1e14() {
  NetworkConditions n;
  n.btc_price_usd = 60000;
  n.difficulty = 1e14;
  return n;
}

TEST(MiningFormulas, DifficultyBased) {
  // 100 TH/s = 1e14 H/s at difficulty 1e14, reward 3.125 BTC:
  //   1e14 x 86400 x 3.125 / (1e14 x 2^32) = 270000 / 4294967296 = 6.28642737865448e-5 BTC/day
  EXPECT_REL(btc_per_day_by_difficulty(1e14, 1e14, 3.125), 6.28642737865448e-5, 1e-14);
  EXPECT_DOUBLE_EQ(btc_per_day_by_difficulty(1e14, 1e14, 3.125), 270000.0 / 4294967296.0);
}

TEST(MiningFormulas, NetworkShareBased) {
  // 1e14 H/s of a 700 EH/s (7e20 H/s) network: 1e14 / 7e20 x 144 x 3.125 = 450 / 7e6
  //   = 6.428571428571429e-5 BTC/day
  EXPECT_REL(btc_per_day_by_network_share(1e14, 7e20, 3.125), 450.0 / 7e6, 1e-14);
}

TEST(MiningFormulas, AlgorithmsAgreeAtTheImpliedNetworkHashrate) {
  // network hashrate = difficulty x 2^32 / 600 makes both formulas identical:
  // h / (D 2^32 / 600) x 144 R = h x 86400 R / (D 2^32).
  const double d = 1.2e14;
  const double implied = d * kTwoPow32 / 600;
  EXPECT_REL(btc_per_day_by_network_share(2e14, implied, 3.125),
             btc_per_day_by_difficulty(2e14, d, 3.125), 1e-13);
}

TEST(MiningFormulas, ElectricityCost) {
  // 3250 W x 24 h / 1000 = 78 kWh/day; x 0.05 USD/kWh = 3.90 USD/day
  EXPECT_DOUBLE_EQ(electricity_cost_usd_per_day(3250, 0.05), 3.9);
}

TEST(MiningProfitability, AntminerS19ProHandComputed) {
  // Antminer S19 Pro: 110 TH/s, 3250 W; difficulty 1e14, BTC 60,000 USD, 0.05 USD/kWh, pool 2 %.
  //   gross  = 1.1e14 x 86400 x 3.125 / (1e14 x 2^32) = 297000 / 4294967296
  //          = 6.915070116519928e-5 BTC/day
  //   pool   = 2 % of that = 1.383014023303986e-6 BTC
  //   net    = 6.77676871418953e-5 BTC = x 60000 = 4.066061228513718 USD/day
  //   energy = 3250 x 24 / 1000 = 78 kWh; cost = 78 x 0.05 = 3.90 USD/day
  //   profit = 4.066061228513718 - 3.90 = 0.166061228513718 USD/day
  //   break-even electricity = 4.066061228513718 / 78 = 0.05212899010915 USD/kWh
  //   ROI    = 550 / 0.166061228513718 = 3312.03 days
  OperatingParams ops;
  ops.electricity_usd_per_kwh = 0.05;
  ops.pool_fee_fraction = 0.02;
  ops.capex_usd = 550;
  Result<Profitability> r = compute_profitability({110, 3250, 1}, network_1e14(), ops);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_REL(r->btc_per_day_difficulty, 297000.0 / 4294967296.0, 1e-14);
  EXPECT_REL(r->gross_revenue_btc_per_day, 6.915070116519928e-5, 1e-14);
  EXPECT_REL(r->pool_fee_btc_per_day, 1.383014023303986e-6, 1e-12);
  EXPECT_REL(r->revenue_btc_per_day, 6.77676871418953e-5, 1e-13);
  EXPECT_NEAR(r->revenue_usd_per_day, 4.07, kHalfCent);
  EXPECT_REL(r->revenue_usd_per_day, 4.066061228513718, 1e-12);
  EXPECT_DOUBLE_EQ(r->energy_kwh_per_day, 78);
  EXPECT_NEAR(r->electricity_cost_usd_per_day, 3.90, 1e-12);
  EXPECT_NEAR(r->cost_usd_per_day, 3.90, 1e-12);
  EXPECT_NEAR(r->profit_usd_per_day, 0.17, kHalfCent);
  EXPECT_REL(r->profit_usd_per_day, 0.166061228513718, 1e-10);
  EXPECT_REL(r->cost_btc_per_day, 3.9 / 60000, 1e-12);
  EXPECT_REL(r->profit_btc_per_day, 6.77676871418953e-5 - 6.5e-5, 1e-9);
  ASSERT_TRUE(r->break_even_electricity_usd_per_kwh.has_value());
  EXPECT_REL(*r->break_even_electricity_usd_per_kwh, 0.052128990109150224, 1e-12);
  // Break-even BTC price: 3.90 / 6.77676871418953e-5 = 57549.25 USD.
  ASSERT_TRUE(r->break_even_btc_price_usd.has_value());
  EXPECT_REL(*r->break_even_btc_price_usd, 3.9 / 6.77676871418953e-5, 1e-12);
  ASSERT_TRUE(r->roi_days.has_value());
  EXPECT_REL(*r->roi_days, 3312.031380970823, 1e-9);
  // No decay: the day-by-day payback gives the same number.
  ASSERT_TRUE(r->roi_days_with_decay.has_value());
  EXPECT_REL(*r->roi_days_with_decay, 3312.031380970823, 1e-9);
  // Hashprice: 4.066061228513718 USD / 110 TH/s = 0.036964193 USD per TH/s per day.
  EXPECT_REL(r->hashprice_usd_per_th_day, 4.066061228513718 / 110, 1e-12);
  // Network hashrate unknown: no second algorithm, no divergence.
  EXPECT_FALSE(r->btc_per_day_network_share.has_value());
  EXPECT_FALSE(r->algorithm_divergence_fraction.has_value());
}

TEST(MiningProfitability, BothAlgorithmsAndTheirDivergence) {
  // 100 TH/s, difficulty 1e14, network 700 EH/s:
  //   algorithm 1: 6.28642737865448e-5, algorithm 2: 6.428571428571429e-5 BTC/day
  //   divergence (2 - 1) / 1 = 6.428571428571429 / 6.28642737865448 - 1 = +2.2611 %
  NetworkConditions n = network_1e14();
  n.network_hashrate_ehs = 700;
  Result<Profitability> r = compute_profitability({100, 3000, 1}, n, {});
  ASSERT_TRUE(r.ok());
  EXPECT_REL(r->btc_per_day_difficulty, 6.28642737865448e-5, 1e-13);
  ASSERT_TRUE(r->btc_per_day_network_share.has_value());
  EXPECT_REL(*r->btc_per_day_network_share, 6.428571428571429e-5, 1e-13);
  ASSERT_TRUE(r->algorithm_divergence_fraction.has_value());
  EXPECT_REL(*r->algorithm_divergence_fraction, 6.428571428571429 / 6.28642737865448 - 1, 1e-10);
  EXPECT_EQ(r->algorithm, RevenueAlgorithm::kDifficulty);
  EXPECT_DOUBLE_EQ(r->gross_revenue_btc_per_day, r->btc_per_day_difficulty);

  OperatingParams share;
  share.algorithm = RevenueAlgorithm::kNetworkShare;
  Result<Profitability> s = compute_profitability({100, 3000, 1}, n, share);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->gross_revenue_btc_per_day, *s->btc_per_day_network_share);
  // 6.428571428571429e-5 x 60000 = 3.857142857 USD/day
  EXPECT_NEAR(s->revenue_usd_per_day, 3.86, kHalfCent);
}

TEST(MiningProfitability, FeesDecayUptimeHostingHandComputed) {
  // 10 x S19 Pro (110 TH/s, 3250 W), 12 months old at 1 %/month decay, 90 % uptime, 10 % of that
  // curtailed, block reward 3.125 + 0.125 fees = 3.25 BTC, pool 2 %, hosting 1 USD/unit/day,
  // 0.05 USD/kWh, capex 5,500 USD.
  //   decay factor = 0.99^12 = 0.8863848717161292
  //   effective hashrate = 10 x 110 x 0.88638487 = 975.0233588877421 TH/s
  //   running = 0.9 x (1 - 0.1) = 0.81
  //   gross = 975.0233588877421e12 x 86400 x 3.25 / (1e14 x 2^32) x 0.81
  //         = 5.163417964528762e-4 BTC/day
  //   net = x 0.98 = 5.060149605238187e-4 BTC = x 60000 = 30.360897631429125 USD/day
  //   energy = 10 x 3250 x 24 / 1000 x 0.81 = 631.8 kWh; electricity = 631.8 x 0.05 = 31.59 USD
  //   hosting = 10 x 1 = 10 USD; cost = 41.59 USD; profit = 30.3609 - 41.59 = -11.2291 USD/day
  //   break-even electricity = (30.360897631429125 - 10) / 631.8 = 0.03222680853344274 USD/kWh
  NetworkConditions n = network_1e14();
  n.fees_per_block_btc = 0.125;
  OperatingParams ops;
  ops.electricity_usd_per_kwh = 0.05;
  ops.pool_fee_fraction = 0.02;
  ops.hosting_fee_usd_per_unit_day = 1;
  ops.hashrate_decay_per_month = 0.01;
  ops.age_months = 12;
  ops.uptime_fraction = 0.9;
  ops.curtailment_fraction = 0.1;
  ops.capex_usd = 5500;
  Result<Profitability> r = compute_profitability({110, 3250, 10}, n, ops);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_REL(r->effective_hashrate_ths, 975.0233588877421, 1e-13);
  EXPECT_REL(r->running_fraction, 0.81, 1e-15);
  EXPECT_REL(r->gross_revenue_btc_per_day, 5.163417964528762e-4, 1e-12);
  EXPECT_REL(r->revenue_btc_per_day, 5.060149605238187e-4, 1e-12);
  EXPECT_NEAR(r->revenue_usd_per_day, 30.36, kHalfCent);
  EXPECT_REL(r->energy_kwh_per_day, 631.8, 1e-13);
  EXPECT_NEAR(r->electricity_cost_usd_per_day, 31.59, 1e-9);
  EXPECT_DOUBLE_EQ(r->hosting_fee_usd_per_day, 10);
  EXPECT_NEAR(r->cost_usd_per_day, 41.59, 1e-9);
  EXPECT_NEAR(r->profit_usd_per_day, -11.23, kHalfCent);
  EXPECT_REL(*r->break_even_electricity_usd_per_kwh, 0.03222680853344274, 1e-11);
  // Unprofitable: no ROI at all.
  EXPECT_FALSE(r->roi_days.has_value());
  EXPECT_FALSE(r->roi_days_with_decay.has_value());
}

TEST(MiningProfitability, RoiWithDecayIsLaterThanWithout) {
  // S21 (200 TH/s, 3500 W) at 0.03 USD/kWh, 1 %/month decay, capex 3,500 USD.
  //   gross = 200e12 x 86400 x 3.125 / (1e14 x 2^32) = 1.257285475730896e-4 BTC/day
  //   revenue = x 60000 = 7.543712854385376 USD; cost = 84 kWh x 0.03 = 2.52 USD
  //   profit = 5.023712854385376 USD/day; simple ROI = 3500 / 5.0237 = 696.696 days
  OperatingParams ops;
  ops.electricity_usd_per_kwh = 0.03;
  ops.hashrate_decay_per_month = 0.01;
  ops.capex_usd = 3500;
  Result<Profitability> r = compute_profitability({200, 3500, 1}, network_1e14(), ops);
  ASSERT_TRUE(r.ok());
  EXPECT_REL(*r->roi_days, 3500 / 5.023712854385376, 1e-10);
  ASSERT_TRUE(r->roi_days_with_decay.has_value());
  EXPECT_GT(*r->roi_days_with_decay, *r->roi_days);
  // Check against a direct sum: day d earns 7.5437 x 0.99^(d / 30.4375) - 2.52.
  double cumulative = 0;
  int day = 0;
  for (; cumulative < 3500; ++day) {
    cumulative += 7.543712854385376 * std::pow(0.99, day / kDaysPerMonth) - 2.52;
  }
  EXPECT_GT(*r->roi_days_with_decay, day - 1);
  EXPECT_LE(*r->roi_days_with_decay, day);

  // At 3 %/month the revenue falls below the cost (after ~36 months) before the capex is earned:
  // no payback at all, although the simple ROI says 697 days.
  ops.hashrate_decay_per_month = 0.03;
  r = compute_profitability({200, 3500, 1}, network_1e14(), ops);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->roi_days.has_value());
  EXPECT_FALSE(r->roi_days_with_decay.has_value());
}

TEST(MiningProfitability, BreakEvenClampsAtZeroWhenHostingExceedsRevenue) {
  OperatingParams ops;
  ops.hosting_fee_usd_per_unit_day = 100;  // far more than a S19 Pro earns
  Result<Profitability> r = compute_profitability({110, 3250, 1}, network_1e14(), ops);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(*r->break_even_electricity_usd_per_kwh, 0.0);
}

TEST(MiningProfitability, ZeroHashrateOrFullCurtailmentGiveZerosNotNaN) {
  Result<Profitability> zero = compute_profitability({0, 0, 1}, network_1e14(), {});
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->revenue_usd_per_day, 0);
  EXPECT_EQ(zero->hashprice_usd_per_th_day, 0);
  EXPECT_FALSE(zero->break_even_electricity_usd_per_kwh.has_value());
  EXPECT_FALSE(zero->break_even_btc_price_usd.has_value());

  OperatingParams off;
  off.curtailment_fraction = 1;
  off.electricity_usd_per_kwh = 0.1;
  off.hosting_fee_usd_per_unit_day = 2;
  off.capex_usd = 1000;
  Result<Profitability> r = compute_profitability({110, 3250, 3}, network_1e14(), off);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->energy_kwh_per_day, 0);
  EXPECT_EQ(r->revenue_usd_per_day, 0);
  EXPECT_DOUBLE_EQ(r->profit_usd_per_day, -6);  // the hosting fee keeps running
  EXPECT_FALSE(r->roi_days.has_value());
  EXPECT_FALSE(r->break_even_electricity_usd_per_kwh.has_value());
}

TEST(MiningProfitability, ZeroCapexPaysBackImmediately) {
  OperatingParams ops;
  ops.capex_usd = 0;
  Result<Profitability> r = compute_profitability({110, 3250, 1}, network_1e14(), ops);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r->roi_days, 0);
  EXPECT_EQ(*r->roi_days_with_decay, 0);
}

struct BadInput {
  const char* what;
  MinerSetup miner;
  NetworkConditions network;
  OperatingParams ops;
  const char* field;  // must appear in the message
};

// Keeps gtest (and the CTest names gtest_discover_tests derives) from dumping the struct's bytes.
void PrintTo(const BadInput& in, std::ostream* os) { *os << in.what; }

std::string test_name(const ::testing::TestParamInfo<BadInput>& info) {
  std::string name;
  for (const char* c = info.param.what; *c != 0; ++c) {
    name += std::isalnum(static_cast<unsigned char>(*c)) != 0 ? *c : '_';
  }
  return name;
}

class MiningProfitabilityValidation : public ::testing::TestWithParam<BadInput> {};

TEST_P(MiningProfitabilityValidation, RejectsWithAClearMessage) {
  const BadInput& in = GetParam();
  Result<Profitability> r = compute_profitability(in.miner, in.network, in.ops);
  ASSERT_FALSE(r.ok()) << in.what;
  EXPECT_EQ(r.error().code, Code::kInvalidArgument);
  EXPECT_NE(r.error().message.find(in.field), std::string::npos) << r.error().message;
}

BadInput bad(const char* what, const char* field, auto mutate) {
  BadInput in{what, {110, 3250, 1}, network_1e14(), {}, field};
  in.ops.electricity_usd_per_kwh = 0.05;
  mutate(in);
  return in;
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, MiningProfitabilityValidation,
    ::testing::Values(
        bad("negative hashrate", "hashrate_ths", [](BadInput& i) { i.miner.hashrate_ths = -1; }),
        bad("NaN hashrate", "hashrate_ths", [](BadInput& i) { i.miner.hashrate_ths = kNaN; }),
        bad("infinite power", "power_w", [](BadInput& i) { i.miner.power_w = kInf; }),
        bad("zero units", "units", [](BadInput& i) { i.miner.units = 0; }),
        bad("zero difficulty", "difficulty", [](BadInput& i) { i.network.difficulty = 0; }),
        bad("NaN difficulty", "difficulty", [](BadInput& i) { i.network.difficulty = kNaN; }),
        bad("negative price", "btc_price_usd", [](BadInput& i) { i.network.btc_price_usd = -5; }),
        bad("zero price", "btc_price_usd", [](BadInput& i) { i.network.btc_price_usd = 0; }),
        bad("absurd price", "btc_price_usd", [](BadInput& i) { i.network.btc_price_usd = 1e12; }),
        bad("negative network hashrate", "network_hashrate_ehs",
            [](BadInput& i) { i.network.network_hashrate_ehs = -1; }),
        bad("zero reward", "block_reward_btc", [](BadInput& i) { i.network.block_reward_btc = 0; }),
        bad("negative fees", "fees_per_block_btc",
            [](BadInput& i) { i.network.fees_per_block_btc = -0.1; }),
        bad("negative electricity", "electricity_usd_per_kwh",
            [](BadInput& i) { i.ops.electricity_usd_per_kwh = -0.01; }),
        bad("electricity in cents", "electricity_usd_per_kwh",
            [](BadInput& i) { i.ops.electricity_usd_per_kwh = 12; }),
        bad("NaN electricity", "electricity_usd_per_kwh",
            [](BadInput& i) { i.ops.electricity_usd_per_kwh = kNaN; }),
        bad("pool fee 100 %", "pool_fee_fraction",
            [](BadInput& i) { i.ops.pool_fee_fraction = 1; }),
        bad("pool fee in percent", "pool_fee_fraction",
            [](BadInput& i) { i.ops.pool_fee_fraction = 2; }),
        bad("uptime above 1", "uptime_fraction", [](BadInput& i) { i.ops.uptime_fraction = 1.5; }),
        bad("negative curtailment", "curtailment_fraction",
            [](BadInput& i) { i.ops.curtailment_fraction = -0.1; }),
        bad("decay 100 %", "hashrate_decay_per_month",
            [](BadInput& i) { i.ops.hashrate_decay_per_month = 1; }),
        bad("negative age", "age_months", [](BadInput& i) { i.ops.age_months = -1; }),
        bad("negative hosting", "hosting_fee_usd_per_unit_day",
            [](BadInput& i) { i.ops.hosting_fee_usd_per_unit_day = -1; }),
        bad("NaN capex", "capex_usd", [](BadInput& i) { i.ops.capex_usd = kNaN; }),
        bad("share algorithm without network hashrate", "network_hashrate_ehs",
            [](BadInput& i) { i.ops.algorithm = RevenueAlgorithm::kNetworkShare; })),
    test_name);

TEST(MiningProfitability, ErrorMessageShowsTheValue) {
  Result<Profitability> r = compute_profitability({-5, 3250, 1}, network_1e14(), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "hashrate_ths must be between 0 and 100000, got -5");
}

}  // namespace
}  // namespace hi::mining
