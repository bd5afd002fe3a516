#include "mining/curtailment.h"

#include <glpk.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <numeric>

#include "mining/internal/validate.h"

namespace hi::mining {
namespace {

struct GlpProbDeleter {
  void operator()(glp_prob* p) const noexcept { glp_delete_prob(p); }
};
using GlpProbPtr = std::unique_ptr<glp_prob, GlpProbDeleter>;

// GLPK keeps per-process (or, if built with TLS, per-thread) environment state and its terminal
// hook is global; one solve at a time keeps it simple and safe. Solves take milliseconds.
std::mutex& glpk_mutex() {
  static std::mutex mu;
  return mu;
}

// r[g] and c[g][h] of the header comment.
struct Economics {
  std::vector<double> revenue_per_unit_hour;                    // r[g], USD
  std::vector<double> btc_per_unit_hour;                        // net BTC
  std::vector<std::array<double, kHoursPerDay>> cost_per_unit;  // c[g][h], USD
};

Status validate(const CurtailmentRequest& req) {
  if (Status s = validate_network(req.network); !s) return s;
  if (req.algorithm == RevenueAlgorithm::kNetworkShare && !(req.network.network_hashrate_ehs > 0)) {
    return invalid_argument(
        "network_hashrate_ehs is required (> 0) for the network_share algorithm");
  }
  if (Status s = internal::check_range("pool_fee_fraction", req.pool_fee_fraction, 0, 0.99); !s)
    return s;
  if (req.max_curtailment_hours < 0 || req.max_curtailment_hours > kHoursPerDay) {
    return invalid_argument("max_curtailment_hours must be between 0 and 24, got " +
                            std::to_string(req.max_curtailment_hours));
  }
  for (int h = 0; h < kHoursPerDay; ++h) {
    if (Status s = internal::check_range("hourly_price_usd_per_kwh[" + std::to_string(h) + "]",
                                         req.hourly_price_usd_per_kwh[static_cast<std::size_t>(h)],
                                         kMinHourlyPriceUsdPerKwh, kMaxElectricityUsdPerKwh);
        !s)
      return s;
  }
  if (req.groups.size() > kMaxCurtailmentGroups) {
    return invalid_argument("at most " + std::to_string(kMaxCurtailmentGroups) +
                            " miner groups, got " + std::to_string(req.groups.size()));
  }
  for (std::size_t g = 0; g < req.groups.size(); ++g) {
    const MinerGroup& group = req.groups[g];
    const std::string where = "groups[" + std::to_string(g) + "].";
    if (group.units < 0 || group.units > kMaxUnits) {
      return invalid_argument(where + "units must be between 0 and " + std::to_string(kMaxUnits) +
                              ", got " + std::to_string(group.units));
    }
    if (Status s = internal::check_range(where + "hashrate_ths", group.hashrate_ths, 0,
                                         kMaxUnitHashrateThs);
        !s)
      return s;
    if (Status s = internal::check_range(where + "power_w", group.power_w, 0, kMaxUnitPowerW); !s)
      return s;
  }
  return ok_status();
}

Economics economics(const CurtailmentRequest& req) {
  Economics e;
  for (const MinerGroup& g : req.groups) {
    const double btc_hour = gross_btc_per_day(g.hashrate_ths, req.network, req.algorithm) /
                            kHoursPerDay * (1.0 - req.pool_fee_fraction);
    e.btc_per_unit_hour.push_back(btc_hour);
    e.revenue_per_unit_hour.push_back(btc_hour * req.network.btc_price_usd);
    std::array<double, kHoursPerDay> c{};
    for (std::size_t h = 0; h < c.size(); ++h) {
      c[h] = g.power_w / 1000.0 * req.hourly_price_usd_per_kwh[h];
    }
    e.cost_per_unit.push_back(c);
  }
  return e;
}

// Fills every derived figure of a plan from running[g][h].
CurtailmentPlan summarise(const CurtailmentRequest& req, const Economics& e,
                          const std::vector<std::array<std::int64_t, kHoursPerDay>>& running,
                          std::string solver) {
  CurtailmentPlan plan;
  plan.solver = std::move(solver);
  const std::size_t n = req.groups.size();
  for (std::size_t g = 0; g < n; ++g) {
    const MinerGroup& group = req.groups[g];
    GroupPlan gp;
    gp.model_id = group.model_id;
    gp.name = group.name;
    gp.units = group.units;
    gp.revenue_usd_per_unit_hour = e.revenue_per_unit_hour[g];
    gp.break_even_price_usd_per_kwh =
        group.power_w > 0 ? e.revenue_per_unit_hour[g] / (group.power_w / 1000.0) : 0.0;
    plan.groups.push_back(std::move(gp));
  }
  for (int h = 0; h < kHoursPerDay; ++h) {
    const auto hs = static_cast<std::size_t>(h);
    HourPlan hp;
    hp.hour = h;
    hp.price_usd_per_kwh = req.hourly_price_usd_per_kwh[hs];
    bool curtailed = false;
    for (std::size_t g = 0; g < n; ++g) {
      const MinerGroup& group = req.groups[g];
      const std::int64_t on = running[g][hs];
      const std::int64_t off = group.units - on;
      const double on_d = static_cast<double>(on);
      const double off_d = static_cast<double>(off);
      hp.running_units.push_back(on);
      hp.power_kw += on_d * group.power_w / 1000.0;
      const double revenue = on_d * e.revenue_per_unit_hour[g];
      const double cost = on_d * e.cost_per_unit[g][hs];
      hp.revenue_usd += revenue;
      hp.cost_usd += cost;
      plan.groups[g].profit_usd += revenue - cost;
      plan.groups[g].unit_hours_off += off;
      plan.unit_hours_off += off;
      plan.baseline_profit_usd +=
          static_cast<double>(group.units) * (e.revenue_per_unit_hour[g] - e.cost_per_unit[g][hs]);
      plan.revenue_forgone_usd += off_d * e.revenue_per_unit_hour[g];
      plan.revenue_forgone_btc += off_d * e.btc_per_unit_hour[g];
      plan.energy_saved_kwh += off_d * group.power_w / 1000.0;
      plan.energy_cost_saved_usd += off_d * e.cost_per_unit[g][hs];
      curtailed = curtailed || off > 0;
    }
    hp.profit_usd = hp.revenue_usd - hp.cost_usd;
    plan.revenue_usd += hp.revenue_usd;
    plan.cost_usd += hp.cost_usd;
    plan.total_profit_usd += hp.profit_usd;
    if (curtailed) ++plan.hours_with_curtailment;
    plan.schedule.push_back(std::move(hp));
  }
  plan.profit_gain_usd = plan.total_profit_usd - plan.baseline_profit_usd;
  return plan;
}

// The hours sorted by descending `gain`, ties by hour; only hours with gain > 0, at most `limit`.
std::vector<int> best_hours(const std::array<double, kHoursPerDay>& gain, int limit) {
  std::vector<int> hours(kHoursPerDay);
  std::iota(hours.begin(), hours.end(), 0);
  std::stable_sort(hours.begin(), hours.end(), [&](int a, int b) {
    return gain[static_cast<std::size_t>(a)] > gain[static_cast<std::size_t>(b)];
  });
  std::vector<int> out;
  for (int h : hours) {
    if (static_cast<int>(out.size()) >= limit) break;
    if (gain[static_cast<std::size_t>(h)] > 0) out.push_back(h);
  }
  return out;
}

}  // namespace

Result<CurtailmentPlan> curtail_greedy(const CurtailmentRequest& req) {
  if (Status s = validate(req); !s) return s.error();
  const Economics e = economics(req);
  const std::size_t n = req.groups.size();
  std::vector<std::array<std::int64_t, kHoursPerDay>> running(n);
  for (std::size_t g = 0; g < n; ++g) running[g].fill(req.groups[g].units);

  // Saving of switching one unit of group g off in hour h: c[g][h] - r[g]. Groups are
  // independent: each switches off in its own most expensive losing hours.
  auto saving = [&](std::size_t g, std::size_t h) {
    return e.cost_per_unit[g][h] - e.revenue_per_unit_hour[g];
  };
  for (std::size_t g = 0; g < n; ++g) {
    if (req.groups[g].units == 0) continue;
    std::array<double, kHoursPerDay> gain{};
    for (std::size_t h = 0; h < gain.size(); ++h) gain[h] = saving(g, h);
    for (int h : best_hours(gain, req.max_curtailment_hours)) {
      running[g][static_cast<std::size_t>(h)] = 0;
    }
  }
  return summarise(req, e, running, "greedy");
}

Result<CurtailmentPlan> optimize_curtailment(const CurtailmentRequest& req) {
  if (Status s = validate(req); !s) return s.error();
  const Economics e = economics(req);
  const std::size_t n = req.groups.size();
  std::vector<std::array<std::int64_t, kHoursPerDay>> running(n);
  if (n == 0) return summarise(req, e, running, "glpk");

  std::lock_guard<std::mutex> lock(glpk_mutex());
  // GLPK creates an environment per thread on first use and frees it only on glp_free_env():
  // free it after each solve (after `lp` below is deleted), or every thread that ever solved
  // (the API's workers) keeps its own.
  struct FreeEnv {
    ~FreeEnv() { glp_free_env(); }
  } free_env;
  const int previous_term = glp_term_out(GLP_OFF);
  GlpProbPtr lp(glp_create_prob());
  glp_set_obj_dir(lp.get(), GLP_MAX);

  // Column x[g][h] at 1 + g*24 + h; row g+1: sum_h x[g][h] >= units * (24 - max_hours).
  glp_add_cols(lp.get(), static_cast<int>(n) * kHoursPerDay);
  glp_add_rows(lp.get(), static_cast<int>(n));
  std::vector<int> ia{0}, ja{0};  // GLPK arrays are 1-based
  std::vector<double> ar{0.0};
  for (std::size_t g = 0; g < n; ++g) {
    const double units = static_cast<double>(req.groups[g].units);
    const int row = 1 + static_cast<int>(g);
    glp_set_row_bnds(lp.get(), row, GLP_LO, units * (kHoursPerDay - req.max_curtailment_hours),
                     0.0);
    for (std::size_t h = 0; h < kHoursPerDay; ++h) {
      const int col = 1 + static_cast<int>(g) * kHoursPerDay + static_cast<int>(h);
      glp_set_col_kind(lp.get(), col, GLP_IV);
      if (units > 0) {
        glp_set_col_bnds(lp.get(), col, GLP_DB, 0.0, units);
      } else {
        glp_set_col_bnds(lp.get(), col, GLP_FX, 0.0, 0.0);
      }
      glp_set_obj_coef(lp.get(), col, e.revenue_per_unit_hour[g] - e.cost_per_unit[g][h]);
      ia.push_back(row);
      ja.push_back(col);
      ar.push_back(1.0);
    }
  }
  glp_load_matrix(lp.get(), static_cast<int>(ia.size()) - 1, ia.data(), ja.data(), ar.data());

  glp_iocp parm;
  glp_init_iocp(&parm);
  parm.presolve = GLP_ON;  // lets glp_intopt solve the LP relaxation itself
  parm.msg_lev = GLP_MSG_OFF;
  const int rc = glp_intopt(lp.get(), &parm);
  const int status = glp_mip_status(lp.get());
  glp_term_out(previous_term);
  if (rc != 0 || status != GLP_OPT) {
    return internal_error("curtailment: GLPK glp_intopt returned " + std::to_string(rc) +
                          ", status " + std::to_string(status));
  }
  for (std::size_t g = 0; g < n; ++g) {
    for (std::size_t h = 0; h < kHoursPerDay; ++h) {
      const int col = 1 + static_cast<int>(g) * kHoursPerDay + static_cast<int>(h);
      const auto v = static_cast<std::int64_t>(std::llround(glp_mip_col_val(lp.get(), col)));
      running[g][h] = std::clamp<std::int64_t>(v, 0, req.groups[g].units);
    }
  }
  // Profit is recomputed from the integer plan, not taken from GLPK's objective.
  return summarise(req, e, running, "glpk");
}

}  // namespace hi::mining
