// The intelligence routes: GET /api/intelligence/forecast, POST /api/calculate and
// POST /api/intelligence/optimize/curtailment.
#include <chrono>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "api/internal/support.h"
#include "api/service.h"
#include "api/validate.h"
#include "consume/intel_worker.h"
#include "consume/portfolio_worker.h"
#include "core/time.h"
#include "mining/curtailment.h"
#include "mining/json.h"
#include "mining/profitability.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;
using internal::db_failure;
using nlohmann::json;

constexpr const char* kAlgorithms[] = {"difficulty", "network_share"};

// The forecast rows the caller may see: the tenant's price and difficulty rows and the caller's
// profit rows, for the days after the last network observation.
constexpr const char* kForecastSql = R"sql(
SELECT metric, day::text, value, lower_95, upper_95, model,
       (extract(epoch FROM fitted_at) * 1000000)::bigint
  FROM forecast_daily
 WHERE (user_id IS NULL OR user_id = $1::bigint)
   AND day > (SELECT max(day) FROM network_snapshots)
 ORDER BY metric, day
)sql";

// A calendar day written YYYY-MM-DD (2026-02-30 is not one).
bool is_day(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  int y = 0;
  unsigned m = 0, d = 0;
  for (int i : {0, 1, 2, 3}) {
    if (s[i] < '0' || s[i] > '9') return false;
    y = y * 10 + (s[i] - '0');
  }
  for (int i : {5, 6, 8, 9}) {
    if (s[i] < '0' || s[i] > '9') return false;
    (i < 8 ? m : d) = (i < 8 ? m : d) * 10 + static_cast<unsigned>(s[i] - '0');
  }
  return std::chrono::year_month_day(std::chrono::year(y), std::chrono::month(m),
                                     std::chrono::day(d))
      .ok();
}

json plan_json(const mining::CurtailmentPlan& p) {
  json schedule = json::array();
  for (const auto& h : p.schedule) {
    schedule.push_back({{"hour", h.hour},
                        {"price_usd_per_kwh", h.price_usd_per_kwh},
                        {"running_units", h.running_units},
                        {"power_kw", h.power_kw},
                        {"revenue_usd", h.revenue_usd},
                        {"cost_usd", h.cost_usd},
                        {"profit_usd", h.profit_usd}});
  }
  json groups = json::array();
  for (const auto& g : p.groups) {
    groups.push_back({{"model_id", g.model_id},
                      {"name", g.name},
                      {"units", g.units},
                      {"revenue_usd_per_unit_hour", g.revenue_usd_per_unit_hour},
                      {"break_even_price_usd_per_kwh", g.break_even_price_usd_per_kwh},
                      {"unit_hours_off", g.unit_hours_off},
                      {"profit_usd", g.profit_usd}});
  }
  return {{"schedule", schedule},
          {"groups", groups},
          {"total_profit_usd", p.total_profit_usd},
          {"baseline_profit_usd", p.baseline_profit_usd},
          {"profit_gain_usd", p.profit_gain_usd},
          {"revenue_usd", p.revenue_usd},
          {"cost_usd", p.cost_usd},
          {"revenue_forgone_usd", p.revenue_forgone_usd},
          {"revenue_forgone_btc", p.revenue_forgone_btc},
          {"energy_saved_kwh", p.energy_saved_kwh},
          {"energy_cost_saved_usd", p.energy_cost_saved_usd},
          {"unit_hours_off", p.unit_hours_off},
          {"hours_with_curtailment", p.hours_with_curtailment},
          {"solver", p.solver}};
}

}  // namespace

// The forecast under forecast_fit_mu_: fitting takes a while, and every user's first request
// after a new snapshot wants the same fit.
Result<consume::NetworkForecast> Service::network_forecast(pg::Connection& db) {
  std::lock_guard lock(forecast_mu_);
  auto f = consume::fit_network_forecast(db, forecast_fit_);
  if (!f) return f.error();
  return **f;
}

void Service::add_intelligence_routes(http::Router& router) {
  // Read from forecast_daily; computed and stored first when the caller has none for the
  // current series (the intel worker keeps it fresh afterwards).
  router.add("GET", "/api/intelligence/forecast", [this](http::Request& r) {
    return cached(
        r, "intel:read", "forecast", consume::forecast_cache_key, options_.forecast_cache_ttl,
        [this](Call& c) -> Result<Filled> {
          auto rows = c.db.exec(kForecastSql, {c.who.user_id});
          if (!rows) return rows.error();
          bool computed = false;
          auto has_profit = [&] {
            for (int i = 0; i < rows->rows(); ++i) {
              if (rows->text(i, 0) == "profit_usd_day") return true;
            }
            return false;
          };
          if (!has_profit()) {
            auto fit = network_forecast(c.db);
            if (!fit) return fit.error();
            if (auto s = consume::write_forecasts(c.db, c.who.tenant_id, {c.who.user_id}, *fit);
                !s) {
              return s.error();
            }
            rows = c.db.exec(kForecastSql, {c.who.user_id});
            if (!rows) return rows.error();
            computed = true;
          }
          json series = json::object();
          std::int64_t version = 0;  // the cache's through_seq: the newest fit, in microseconds
          for (int i = 0; i < rows->rows(); ++i) {
            version = std::max(version, rows->int64(i, 6));
            json& s = series[std::string(rows->text(i, 0))];
            s["model"] = std::string(rows->text(i, 5));
            s["points"].push_back(
                {{"day", std::string(rows->text(i, 1))},
                 {"value", rows->float64(i, 2)},
                 {"lower_95", rows->is_null(i, 3) ? json(nullptr) : json(rows->float64(i, 3))},
                 {"upper_95", rows->is_null(i, 4) ? json(nullptr) : json(rows->float64(i, 4))}});
          }
          // The newest fit, RFC 3339 UTC with microseconds (not PostgreSQL's text form).
          const json body = {
              {"user_id", c.who.user_id},
              {"computed", computed},
              {"fitted_at", rows->empty() ? json(nullptr) : json(format_rfc3339_us(version))},
              {"series", series}};
          return Filled{body.dump(), version};
        });
  });

  // Both revenue algorithms and their divergence for one setup; network figures not given are
  // the latest snapshot's. Writes nothing.
  router.add("POST", "/api/calculate", [this](http::Request& r) {
    return guarded(r, "calc:read", false, [](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body,
               {"model_id", "hashrate_ths", "power_w", "units", "electricity_usd_per_kwh",
                "pool_fee_fraction", "hosting_fee_usd_per_unit_day", "hashrate_decay_per_month",
                "age_months", "uptime_fraction", "curtailment_fraction", "capex_usd",
                "btc_price_usd", "difficulty", "network_hashrate_ehs", "block_reward_btc",
                "fees_per_block_btc", "algorithm"});
      const auto model_id = f.integer("model_id", false, 1, 2'147'483'647);
      const auto hashrate = f.number("hashrate_ths", false, 0, mining::kMaxUnitHashrateThs);
      const auto power = f.number("power_w", false, 0, mining::kMaxUnitPowerW);
      const auto units = f.integer("units", false, 1, mining::kMaxUnits);
      const auto electricity =
          f.number("electricity_usd_per_kwh", false, 0, mining::kMaxElectricityUsdPerKwh);
      const auto pool_fee = f.number("pool_fee_fraction", false, 0, 0.999999);
      const auto hosting =
          f.number("hosting_fee_usd_per_unit_day", false, 0, mining::kMaxHostingFeeUsdPerUnitDay);
      const auto decay = f.number("hashrate_decay_per_month", false, 0, 0.999999);
      const auto age = f.number("age_months", false, 0, mining::kMaxAgeMonths);
      const auto uptime = f.number("uptime_fraction", false, 0, 1);
      const auto curtail = f.number("curtailment_fraction", false, 0, 1);
      const auto capex = f.number("capex_usd", false, 0, mining::kMaxCapexUsd);
      const auto price = f.number("btc_price_usd", false, 0.01, mining::kMaxBtcPriceUsd);
      const auto difficulty = f.number("difficulty", false, 1, mining::kMaxDifficulty);
      const auto net_hash =
          f.number("network_hashrate_ehs", false, 0, mining::kMaxNetworkHashrateEhs);
      const auto reward = f.number("block_reward_btc", false, 1e-8, mining::kMaxBlockRewardBtc);
      const auto fees = f.number("fees_per_block_btc", false, 0, mining::kMaxFeesPerBlockBtc);
      const auto algorithm = f.one_of("algorithm", false, kAlgorithms);
      if (auto e = f.error()) return Response::fail(*e);
      if (!model_id && (!hashrate || !power)) {
        return Response::fail(ErrorCode::kBadRequest, "give model_id, or hashrate_ths and power_w",
                              "model_id");
      }
      if (model_id && (hashrate || power)) {
        return Response::fail(ErrorCode::kBadRequest,
                              "give model_id or hashrate_ths and power_w, not both", "model_id");
      }
      mining::MinerSetup setup{hashrate.value_or(0), power.value_or(0), units.value_or(1)};
      json model = nullptr;
      std::optional<double> model_price;
      if (model_id) {
        auto m = c.db.exec(
            "SELECT hashrate_ths, power_w, price_usd, slug, name FROM miner_models WHERE id = $1",
            {std::to_string(*model_id)});
        if (!m) return db_failure(m.error());
        if (m->empty()) {
          return Response::fail(ErrorCode::kBadRequest, "unknown miner model", "model_id");
        }
        setup.hashrate_ths = m->float64(0, 0);
        setup.power_w = m->float64(0, 1);
        if (!m->is_null(0, 2)) model_price = m->float64(0, 2);
        model = {{"id", *model_id},
                 {"slug", std::string(m->text(0, 3))},
                 {"name", std::string(m->text(0, 4))},
                 {"hashrate_ths", setup.hashrate_ths},
                 {"power_w", setup.power_w}};
      }
      auto net = internal::latest_network(c.db);
      if (!net && (!price || !difficulty)) return db_failure(net.error());
      mining::NetworkConditions network;
      network.btc_price_usd = price ? *price : net->btc_price_usd;
      network.difficulty = difficulty ? *difficulty : net->difficulty;
      network.network_hashrate_ehs = net_hash ? *net_hash : (net ? net->network_hashrate_ehs : 0);
      network.block_reward_btc = reward ? *reward : (net ? net->block_reward_btc : 3.125);
      network.fees_per_block_btc = fees ? *fees : (net ? net->fees_per_block_btc : 0);
      mining::OperatingParams ops;
      if (electricity) {
        ops.electricity_usd_per_kwh = *electricity;
      } else {
        auto u = c.db.exec(
            "SELECT coalesce(electricity_price_usd_kwh, 0)::float8 FROM users WHERE id = $1",
            {c.who.user_id});
        if (!u) return db_failure(u.error());
        if (!u->empty()) ops.electricity_usd_per_kwh = u->float64(0, 0);
      }
      ops.pool_fee_fraction = pool_fee.value_or(0);
      ops.hosting_fee_usd_per_unit_day = hosting.value_or(0);
      ops.hashrate_decay_per_month = decay.value_or(0);
      ops.age_months = age.value_or(0);
      ops.uptime_fraction = uptime.value_or(1);
      ops.curtailment_fraction = curtail.value_or(0);
      if (capex) {
        ops.capex_usd = *capex;
      } else if (model_price) {
        ops.capex_usd = *model_price * static_cast<double>(setup.units);
      }
      ops.algorithm = algorithm == std::optional<std::string>("network_share")
                          ? mining::RevenueAlgorithm::kNetworkShare
                          : mining::RevenueAlgorithm::kDifficulty;
      auto result = mining::compute_profitability(setup, network, ops);
      if (!result) return Response::fail(ErrorCode::kBadRequest, result.error().message);
      json inputs = mining::to_json(network, ops);
      inputs["units"] = setup.units;
      inputs["hashrate_ths"] = setup.hashrate_ths;
      inputs["power_w"] = setup.power_w;
      return Response::json(
          {{"model", model}, {"inputs", inputs}, {"result", mining::to_json(*result)}});
    });
  });

  // Solves the day's curtailment for the caller's active miners (mining/curtailment.h), stores
  // it in ops_schedule (one per user and day; a new solve replaces it) and emits
  // ops.schedule_created. A write: audited, idempotent.
  router.add("POST", "/api/intelligence/optimize/curtailment", [this](http::Request& r) {
    return guarded(r, "intel:read", true, [](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body,
               {"max_curtailment_hours", "day", "hourly_prices_usd_per_kwh", "pool_fee_fraction"});
      const auto hours = f.integer("max_curtailment_hours", true, 0, mining::kHoursPerDay);
      const auto day = f.text("day", false, 10);
      const auto pool_fee = f.number("pool_fee_fraction", false, 0, 0.999999);
      if (auto e = f.error()) return Response::fail(*e);
      if (day && !is_day(*day)) {
        return Response::fail(ErrorCode::kBadRequest, "day must be YYYY-MM-DD", "day");
      }
      auto in = consume::load_inputs(c.db, {c.who.user_id});
      if (!in) return db_failure(in.error());
      mining::CurtailmentRequest req;
      req.max_curtailment_hours = static_cast<int>(*hours);
      req.pool_fee_fraction = pool_fee.value_or(0);
      const double flat = in->electricity_price.count(c.who.user_id) != 0
                              ? in->electricity_price.at(c.who.user_id)
                              : 0;
      req.hourly_price_usd_per_kwh.fill(flat);
      if (const auto it = body->find("hourly_prices_usd_per_kwh");
          it != body->end() && !it->is_null()) {
        if (!it->is_array() || it->size() != mining::kHoursPerDay) {
          return Response::fail(ErrorCode::kBadRequest,
                                "hourly_prices_usd_per_kwh must be an array of 24 numbers",
                                "hourly_prices_usd_per_kwh");
        }
        for (int h = 0; h < mining::kHoursPerDay; ++h) {
          const json& v = (*it)[h];
          if (!v.is_number() || !std::isfinite(v.get<double>()) ||
              v.get<double>() < mining::kMinHourlyPriceUsdPerKwh ||
              v.get<double>() > mining::kMaxElectricityUsdPerKwh) {
            const std::string field = "hourly_prices_usd_per_kwh[" + std::to_string(h) + "]";
            return Response::fail(ErrorCode::kBadRequest,
                                  field + " must be a number between -10 and 10", field);
          }
          req.hourly_price_usd_per_kwh[h] = v.get<double>();
        }
      }
      // One group per model among the caller's active rows.
      std::map<std::int64_t, std::int64_t> units;
      if (auto h = in->holdings.find(c.who.user_id); h != in->holdings.end()) {
        for (const auto& m : h->second) {
          if (m.status == mining::kActiveStatus) units[m.miner_model_id] += m.quantity;
        }
      }
      for (const auto& m : in->models) {
        if (auto u = units.find(m.id); u != units.end() && u->second > 0) {
          req.groups.push_back({m.id, m.name, u->second, m.hashrate_ths, m.power_w});
        }
      }
      if (req.groups.empty()) {
        return Response::fail(ErrorCode::kUnprocessable, "you have no active miners to schedule");
      }
      req.network = {in->snapshot.btc_price_usd, in->snapshot.difficulty,
                     in->snapshot.network_hashrate_ehs, in->options.block_reward_btc,
                     in->options.fees_per_block_btc};
      auto plan = mining::optimize_curtailment(req);
      if (!plan) return Response::fail(ErrorCode::kBadRequest, plan.error().message);
      const json plan_j = plan_json(*plan);
      auto before = c.db.exec(
          "SELECT json_build_object('id', id, 'day', day, 'profit_usd', profit_usd)::text "
          "FROM ops_schedule WHERE user_id = $1::bigint AND day = coalesce($2::date, "
          "(now() AT TIME ZONE 'utc')::date) FOR UPDATE",
          {c.who.user_id, day});
      if (!before) return db_failure(before.error());
      auto row = c.db.exec(
          "INSERT INTO ops_schedule (tenant_id, user_id, day, schedule, profit_usd) "
          "VALUES ($1, $2, coalesce($3::date, (now() AT TIME ZONE 'utc')::date), $4::jsonb, $5) "
          "ON CONFLICT (tenant_id, user_id, day) DO UPDATE SET schedule = EXCLUDED.schedule, "
          "profit_usd = EXCLUDED.profit_usd, created_at = now() RETURNING id, day::text",
          {c.who.tenant_id, c.who.user_id, day, plan_j.dump(),
           json(plan->total_profit_usd).dump()});
      if (!row) return db_failure(row.error());
      const std::string id(row->text(0, 0));
      const json summary = {{"schedule_id", std::stoll(id)},
                            {"day", std::string(row->text(0, 1))},
                            {"max_curtailment_hours", *hours},
                            {"total_profit_usd", plan->total_profit_usd},
                            {"profit_gain_usd", plan->profit_gain_usd},
                            {"unit_hours_off", plan->unit_hours_off},
                            {"hours_with_curtailment", plan->hours_with_curtailment}};
      auto ev = internal::record_write(
          c, {"ops.schedule_created", "ops.schedule", "ops_schedule", id, summary,
              before->empty() ? json(nullptr) : json::parse(before->text(0, 0)), summary});
      if (!ev) return db_failure(ev.error());
      return internal::write_response(
          {{"id", std::stoll(id)}, {"day", std::string(row->text(0, 1))}, {"plan", plan_j}}, *ev,
          201);
    });
  });
}

}  // namespace hi::api
