#include "cli/calc_command.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/common.h"

namespace hi::cli {
namespace {

struct CalcRun {
  int exit_code = 0;
  std::string out;
  std::string err;
};

// Parses `args` (after the program name) the way main() does.
CalcRun run(const std::string& args) {
  std::ostringstream out, err;
  CLI::App app("hashinsight");
  add_calc_command(app, out, err);
  CalcRun r;
  r.exit_code = run_command_line(
      app, [&] { app.parse(args, false); }, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

const std::string kS19 = "calc --model antminer-s19-pro --btc-price 60000 --difficulty 1e14 ";

TEST(MiningCalcCommand, PrintsATable) {
  // The hand-computed S19 Pro case of profitability_test.cc: net revenue 4.07, cost 3.90,
  // profit 0.17 USD/day.
  const CalcRun r = run(kS19 + "--electricity 0.05 --pool-fee 0.02 --network-hashrate-ehs 700");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty());
  EXPECT_NE(r.out.find("Antminer S19 Pro x 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4.07"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3.90"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0.17"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("divergence"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0.0521 USD/kWh"), std::string::npos) << r.out;
  // Default capex: 1 x 550 USD typical price -> 550 / 0.16606 = 3312.0 days.
  EXPECT_NE(r.out.find("3312.0 days"), std::string::npos) << r.out;
}

TEST(MiningCalcCommand, PrintsJson) {
  const CalcRun r = run(kS19 + "--electricity 0.05 --pool-fee 0.02 --units 10 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"]["slug"], "antminer-s19-pro");
  EXPECT_EQ(j["inputs"]["units"], 10);
  EXPECT_NEAR(j["result"]["revenue_usd_per_day"].get<double>(), 40.66061228513718, 1e-9);
  EXPECT_NEAR(j["result"]["cost_usd_per_day"].get<double>(), 39.0, 1e-9);
  EXPECT_TRUE(j["result"]["btc_per_day_network_share"].is_null());
  EXPECT_NEAR(j["inputs"]["capex_usd"].get<double>(), 5500, 1e-9);
}

TEST(MiningCalcCommand, FindsModelsByName) {
  const CalcRun r = run("calc --model \"Whatsminer M30S++\" --btc-price 60000 --difficulty 1e14");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Whatsminer M30S++ x 1"), std::string::npos) << r.out;
}

TEST(MiningCalcCommand, InvalidInputIsOneLineAndExitCode2) {
  for (const std::string& args :
       {std::string("calc --model antminer-s99 --btc-price 60000 --difficulty 1e14"),
        std::string("calc --btc-price 60000 --difficulty 1e14"), kS19 + "--electricity -0.1",
        kS19 + "--electricity abc", kS19 + "--units 0", kS19 + "--units 2.5",
        kS19 + "--pool-fee nan", kS19 + "--algorithm magic",
        kS19 + "--algorithm network-share",  // needs --network-hashrate-ehs
        std::string("calc --model antminer-s19-pro --btc-price 60000 --difficulty 0"),
        std::string("calc --model antminer-s19-pro --difficulty 1e14")}) {
    SCOPED_TRACE(args);
    const CalcRun r = run(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_TRUE(r.out.empty()) << r.out;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.rfind("hashinsight calc: ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  }
}

TEST(MiningCalcCommand, MessagesNameTheProblem) {
  EXPECT_EQ(run(kS19 + "--electricity abc").err,
            "hashinsight calc: --electricity: 'abc' is not a number\n");
  EXPECT_EQ(run(kS19 + "--electricity -0.1").err,
            "hashinsight calc: electricity_usd_per_kwh must be between 0 and 10, got -0.1\n");
  EXPECT_NE(run("calc --model s99 --btc-price 1 --difficulty 1").err.find("unknown model 's99'"),
            std::string::npos);
}

}  // namespace
}  // namespace hi::cli
