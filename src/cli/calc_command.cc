#include "cli/calc_command.h"

#include <charconv>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <system_error>

#include "cli/common.h"
#include "core/result.h"
#include "mining/catalog.h"
#include "mining/json.h"
#include "mining/profitability.h"

namespace hi::cli {
namespace {

using mining::MinerModel;
using mining::Profitability;

// Numbers are taken as text and converted here, so that every kind of bad input ends the same way:
// one line on stderr and exit code 2 (CLI11's own conversion errors have other codes).
struct CalcArgs {
  std::string model;
  std::string btc_price;
  std::string difficulty;
  std::string network_hashrate_ehs = "0";
  std::string electricity = "0.05";
  std::string pool_fee = "0";
  std::string hosting_fee = "0";
  std::string units = "1";
  std::string fees_per_block = "0";
  std::string block_reward = "3.125";
  std::string decay_per_month = "0";
  std::string age_months = "0";
  std::string uptime = "1";
  std::string curtailment = "0";
  std::string capex_usd;  // empty: units x the model's typical price
  std::string algorithm = "difficulty";
  bool json = false;
};

Result<double> parse_double(std::string_view option, const std::string& text) {
  if (text.empty()) return invalid_argument(std::string(option) + " is required");
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end) {
    return invalid_argument(std::string(option) + ": '" + text + "' is not a number");
  }
  return value;  // NaN, inf and ranges are the library's to reject
}

Result<std::int64_t> parse_int(std::string_view option, const std::string& text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return invalid_argument(std::string(option) + ": '" + text + "' is not a whole number");
  }
  return value;
}

struct Calculation {
  const MinerModel* model = nullptr;
  mining::MinerSetup miner;
  mining::NetworkConditions network;
  mining::OperatingParams ops;
  Profitability result;
};

Result<Calculation> calculate(const CalcArgs& a) {
  Calculation c;
  if (a.model.empty()) return invalid_argument("--model is required");
  c.model = mining::find_model(a.model);
  if (c.model == nullptr) {
    return not_found("unknown model '" + a.model +
                     "' (use a catalogue slug or name, e.g. antminer-s19-pro)");
  }
  // Parse every number, stopping at the first bad one.
  struct Field {
    std::string_view option;
    const std::string* text;
    double* into;
  };
  const Field fields[] = {
      {"--btc-price", &a.btc_price, &c.network.btc_price_usd},
      {"--difficulty", &a.difficulty, &c.network.difficulty},
      {"--network-hashrate-ehs", &a.network_hashrate_ehs, &c.network.network_hashrate_ehs},
      {"--block-reward", &a.block_reward, &c.network.block_reward_btc},
      {"--fees-per-block", &a.fees_per_block, &c.network.fees_per_block_btc},
      {"--electricity", &a.electricity, &c.ops.electricity_usd_per_kwh},
      {"--pool-fee", &a.pool_fee, &c.ops.pool_fee_fraction},
      {"--hosting-fee", &a.hosting_fee, &c.ops.hosting_fee_usd_per_unit_day},
      {"--decay-per-month", &a.decay_per_month, &c.ops.hashrate_decay_per_month},
      {"--age-months", &a.age_months, &c.ops.age_months},
      {"--uptime", &a.uptime, &c.ops.uptime_fraction},
      {"--curtailment", &a.curtailment, &c.ops.curtailment_fraction},
  };
  for (const Field& f : fields) {
    Result<double> v = parse_double(f.option, *f.text);
    if (!v) return v.error();
    *f.into = *v;
  }
  Result<std::int64_t> units = parse_int("--units", a.units);
  if (!units) return units.error();
  c.miner = {c.model->hashrate_ths, c.model->power_w, *units};
  if (a.capex_usd.empty()) {
    c.ops.capex_usd = static_cast<double>(*units) * c.model->typical_price_usd;
  } else {
    Result<double> capex = parse_double("--capex-usd", a.capex_usd);
    if (!capex) return capex.error();
    c.ops.capex_usd = *capex;
  }
  if (a.algorithm == "difficulty") {
    c.ops.algorithm = mining::RevenueAlgorithm::kDifficulty;
  } else if (a.algorithm == "network-share" || a.algorithm == "network_share") {
    c.ops.algorithm = mining::RevenueAlgorithm::kNetworkShare;
  } else {
    return invalid_argument("--algorithm must be 'difficulty' or 'network-share', got '" +
                            a.algorithm + "'");
  }
  Result<Profitability> r = mining::compute_profitability(c.miner, c.network, c.ops);
  if (!r) return r.error();
  c.result = *r;
  return c;
}

nlohmann::json to_json(const Calculation& c) {
  nlohmann::json j;
  j["model"] = {{"id", c.model->id},
                {"slug", c.model->slug},
                {"name", c.model->name},
                {"manufacturer", c.model->manufacturer},
                {"hashrate_ths", c.model->hashrate_ths},
                {"power_w", c.model->power_w},
                {"efficiency_j_per_th", c.model->efficiency_j_per_th}};
  j["inputs"] = mining::to_json(c.network, c.ops);
  j["inputs"]["units"] = c.miner.units;
  j["result"] = mining::to_json(c.result);
  return j;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

void print_table(const Calculation& c, std::ostream& out) {
  const Profitability& r = c.result;
  const double price = c.network.btc_price_usd;
  auto row = [&](const char* label, std::optional<double> btc, double usd) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "  %-22s %14s %12.2f\n", label,
                  btc ? fmt("%.8f", *btc).c_str() : "", usd);
    out << buf;
  };
  out << c.model->name << " x " << c.miner.units << "  (" << fmt("%g", c.model->hashrate_ths)
      << " TH/s, " << fmt("%g", c.model->power_w) << " W, "
      << fmt("%g", c.model->efficiency_j_per_th) << " J/TH each)\n";
  out << "BTC " << fmt("%.2f", price) << " USD, difficulty " << fmt("%.4g", c.network.difficulty);
  if (c.network.network_hashrate_ehs > 0) {
    out << ", network " << fmt("%g", c.network.network_hashrate_ehs) << " EH/s";
  }
  out << ", electricity " << fmt("%g", c.ops.electricity_usd_per_kwh) << " USD/kWh, pool fee "
      << fmt("%g", c.ops.pool_fee_fraction * 100) << " %\n\n";
  char head[128];
  std::snprintf(head, sizeof head, "  %-22s %14s %12s\n", "per day", "BTC", "USD");
  out << head;
  row("revenue (gross)", r.gross_revenue_btc_per_day, r.gross_revenue_btc_per_day * price);
  row("pool fee", r.pool_fee_btc_per_day, r.pool_fee_btc_per_day * price);
  row("revenue (net)", r.revenue_btc_per_day, r.revenue_usd_per_day);
  row("electricity", std::nullopt, r.electricity_cost_usd_per_day);
  row("hosting", std::nullopt, r.hosting_fee_usd_per_day);
  row("cost", r.cost_btc_per_day, r.cost_usd_per_day);
  row("profit", r.profit_btc_per_day, r.profit_usd_per_day);
  out << "\n";

  out << "  algorithm 1 (difficulty)    " << fmt("%.8f", r.btc_per_day_difficulty) << " BTC/day"
      << (r.algorithm == mining::RevenueAlgorithm::kDifficulty ? "  (used)" : "") << "\n";
  out << "  algorithm 2 (network share) ";
  if (r.btc_per_day_network_share) {
    out << fmt("%.8f", *r.btc_per_day_network_share) << " BTC/day"
        << (r.algorithm == mining::RevenueAlgorithm::kNetworkShare ? "  (used)" : "");
    if (r.algorithm_divergence_fraction) {
      out << "  divergence " << fmt("%+.2f", *r.algorithm_divergence_fraction * 100) << " %";
    }
    out << "\n";
  } else {
    out << "n/a (give --network-hashrate-ehs)\n";
  }
  out << "  energy                      " << fmt("%.2f", r.energy_kwh_per_day) << " kWh/day\n";
  out << "  break-even electricity      "
      << (r.break_even_electricity_usd_per_kwh
              ? fmt("%.4f", *r.break_even_electricity_usd_per_kwh) + " USD/kWh"
              : std::string("n/a"))
      << "\n";
  out << "  break-even BTC price        "
      << (r.break_even_btc_price_usd ? fmt("%.2f", *r.break_even_btc_price_usd) + " USD"
                                     : std::string("n/a"))
      << "\n";
  out << "  ROI                         ";
  if (r.roi_days) {
    out << fmt("%.1f", *r.roi_days) << " days on " << fmt("%.2f", *c.ops.capex_usd) << " USD capex";
    if (c.ops.hashrate_decay_per_month > 0) {
      out << " (with decay: "
          << (r.roi_days_with_decay ? fmt("%.1f", *r.roi_days_with_decay) + " days"
                                    : std::string("not within 10 years"))
          << ")";
    }
    out << "\n";
  } else {
    out << "none (not profitable)\n";
  }
}

int run_calc(const CalcArgs& args, std::ostream& out, std::ostream& err) {
  Result<Calculation> c = calculate(args);
  if (!c) {
    err << "hashinsight calc: " << c.error().message << "\n";
    return 2;
  }
  if (args.json) {
    out << to_json(*c).dump(2) << "\n";
  } else {
    print_table(*c, out);
  }
  return 0;
}

}  // namespace

void add_calc_command(CLI::App& app) { add_calc_command(app, std::cout, std::cerr); }

void add_calc_command(CLI::App& app, std::ostream& out, std::ostream& err) {
  // The options must outlive this function: CLI11 writes into them while parsing, after we return.
  auto args = std::make_shared<CalcArgs>();
  CLI::App* sub = app.add_subcommand("calc", "Mining profitability of a catalogue model");
  sub->add_option("--model", args->model, "Model slug or name, e.g. antminer-s19-pro (required)")
      ->type_name("SLUG");
  sub->add_option("--btc-price", args->btc_price, "BTC price, USD (required)")->type_name("NUMBER");
  sub->add_option("--difficulty", args->difficulty, "Network difficulty (required)")
      ->type_name("NUMBER");
  sub->add_option("--network-hashrate-ehs", args->network_hashrate_ehs,
                  "Network hashrate, EH/s; 0 = unknown")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--electricity", args->electricity, "Electricity price, USD/kWh")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--pool-fee", args->pool_fee, "Pool fee as a fraction (0.02 = 2 %)")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--hosting-fee", args->hosting_fee, "Hosting fee, USD per unit per day")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--units", args->units, "Number of machines")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--fees-per-block", args->fees_per_block, "Average fees per block, BTC")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--block-reward", args->block_reward, "Block subsidy, BTC")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--decay-per-month", args->decay_per_month, "Hashrate lost per month, fraction")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--age-months", args->age_months, "Age of the machines, months")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--uptime", args->uptime, "Uptime, fraction")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--curtailment", args->curtailment, "Share of uptime curtailed, fraction")
      ->type_name("NUMBER")
      ->capture_default_str();
  sub->add_option("--capex-usd", args->capex_usd,
                  "Total purchase cost, USD (default: units x typical price)")
      ->type_name("NUMBER");
  sub->add_option("--algorithm", args->algorithm, "difficulty or network-share")
      ->type_name("NAME")
      ->capture_default_str();
  sub->add_flag("--json", args->json, "Print JSON instead of a table");
  sub->callback([args, &out, &err] {
    if (const int rc = run_calc(*args, out, err); rc != 0) throw Exit{rc};
  });
}

}  // namespace hi::cli
