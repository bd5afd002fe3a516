#include "schema/seed.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "core/time.h"
#include "mining/catalog.h"
#include "pg/transaction.h"

namespace hi::schema {
namespace {

struct Tenant {
  long id;
  const char* name;
};
constexpr Tenant kTenants[] = {{1, "acme-mining"}, {2, "nordic-hash"}};

struct RoleDef {
  int id;
  const char* name;
  const char* description;
  const char* scopes;  // space separated
};
constexpr RoleDef kRoles[] = {
    {1, "admin", "everything in the tenant",
     "miners:write portfolio:read intel:read calc:read treasury:trade crm:write admin"},
    {2, "operator", "manages miners and schedules",
     "miners:write portfolio:read intel:read calc:read"},
    {3, "analyst", "reads portfolios and forecasts", "portfolio:read intel:read calc:read"},
    {4, "treasurer", "executes treasury trades", "portfolio:read treasury:trade calc:read"},
    {5, "viewer", "read-only", "portfolio:read calc:read"},
};

struct PermissionDef {
  int id;
  const char* scope;
  const char* description;
};
constexpr PermissionDef kPermissions[] = {
    {1, "miners:write", "add and change miners"},
    {2, "portfolio:read", "read the derived portfolio"},
    {3, "intel:read", "forecasts and curtailment"},
    {4, "calc:read", "the profitability calculator"},
    {5, "treasury:trade", "execute treasury trades"},
    {6, "crm:write", "create CRM customers"},
    {7, "admin", "tenant administration"},
};

struct PlanDef {
  int id;
  const char* name;
  const char* max_miners;  // NULL = unlimited
  const char* rpm;
  const char* price;
};
constexpr PlanDef kPlans[] = {
    {1, "free", "10", "60", "0"},
    {2, "pro", "1000", "600", "49"},
    {3, "enterprise", nullptr, nullptr, "499"},
};

constexpr SeedUser kUsers[] = {
    {101, 1, "alice@acme.example", "Alice Admin", "admin"},
    {102, 1, "bob@acme.example", "Bob Operator", "operator"},
    {103, 1, "carol@acme.example", "Carol Analyst", "analyst"},
    {104, 1, "dave@acme.example", "Dave Treasurer", "treasurer"},
    {105, 1, "erin@acme.example", "Erin Viewer", "viewer"},
    {201, 2, "frank@nordic.example", "Frank Admin", "admin"},
    {202, 2, "grace@nordic.example", "Grace Operator", "operator"},
    {203, 2, "heidi@nordic.example", "Heidi Analyst", "analyst"},
    {204, 2, "ivan@nordic.example", "Ivan Treasurer", "treasurer"},
    {205, 2, "judy@nordic.example", "Judy Viewer", "viewer"},
};

int role_id(const char* name) {
  for (const auto& r : kRoles) {
    if (std::string_view(r.name) == name) return r.id;
  }
  return 0;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

// A fixed-seed generator (SplitMix64), so every run and machine produces the same series.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {  // Box-Muller
    const double u1 = std::max(uniform(), 1e-12);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * uniform());
  }
};

}  // namespace

std::span<const SeedUser> seed_users() { return kUsers; }

Result<SeedReport> seed(pg::Connection& conn, const Logger& log) {
  SeedReport report;
  auto step = [&](std::string_view sql, const pg::Params& params = {}) -> Result<pg::QueryResult> {
    return conn.exec(sql, params);
  };
  // Global reference data.
  {
    pg::Transaction tx(conn);
    if (auto s = tx.begin(); !s) return s.error();
    for (const auto& t : kTenants) {
      if (auto r = step("INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        {std::to_string(t.id), t.name});
          !r)
        return r.error().wrap("seed tenants");
    }
    for (const auto& r : kRoles) {
      if (auto q = step("INSERT INTO roles (id, name, description) VALUES ($1,$2,$3) "
                        "ON CONFLICT (id) DO UPDATE SET description = EXCLUDED.description",
                        {std::to_string(r.id), r.name, r.description});
          !q)
        return q.error().wrap("seed roles");
    }
    for (const auto& p : kPermissions) {
      if (auto q = step("INSERT INTO permissions (id, scope, description) VALUES ($1,$2,$3) "
                        "ON CONFLICT DO NOTHING",
                        {std::to_string(p.id), p.scope, p.description});
          !q)
        return q.error().wrap("seed permissions");
    }
    for (const auto& r : kRoles) {
      std::string_view scopes = r.scopes;
      while (!scopes.empty()) {
        const auto sp = scopes.find(' ');
        const std::string scope(scopes.substr(0, sp));
        if (auto q = step("INSERT INTO role_permissions (role_id, permission_id) "
                          "SELECT $1, id FROM permissions WHERE scope = $2 ON CONFLICT DO NOTHING",
                          {std::to_string(r.id), scope});
            !q)
          return q.error().wrap("seed role_permissions");
        if (sp == std::string_view::npos) break;
        scopes.remove_prefix(sp + 1);
      }
    }
    for (const auto& p : kPlans) {
      pg::Params params = {std::to_string(p.id), p.name,
                           p.max_miners ? pg::Param(p.max_miners) : std::nullopt,
                           p.rpm ? pg::Param(p.rpm) : std::nullopt, p.price};
      if (auto q =
              step("INSERT INTO subscription_plans (id, name, max_miners, requests_per_minute, "
                   "price_usd_month) VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING",
                   params);
          !q)
        return q.error().wrap("seed plans");
    }
    for (const auto& m : mining::catalog()) {
      if (auto q = step(
              "INSERT INTO miner_models (id, slug, manufacturer, name, hashrate_ths, power_w, "
              "efficiency_j_th, release_year, price_usd) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
              "ON CONFLICT (id) DO UPDATE SET slug = EXCLUDED.slug, manufacturer = "
              "EXCLUDED.manufacturer, name = EXCLUDED.name, hashrate_ths = EXCLUDED.hashrate_ths, "
              "power_w = EXCLUDED.power_w, efficiency_j_th = EXCLUDED.efficiency_j_th, "
              "release_year = EXCLUDED.release_year, price_usd = EXCLUDED.price_usd",
              {std::to_string(m.id), std::string(m.slug), std::string(m.manufacturer),
               std::string(m.name), num(m.hashrate_ths), num(m.power_w), num(m.efficiency_j_per_th),
               std::to_string(m.release_year), num(m.typical_price_usd)});
          !q)
        return q.error().wrap("seed miner_models");
      ++report.models;
    }
    if (auto s = tx.commit(); !s) return s.error();
  }
  // Tenant-owned rows: one transaction per tenant, under that tenant's RLS setting.
  for (const auto& t : kTenants) {
    pg::Transaction tx(conn);
    if (auto s = tx.begin(std::to_string(t.id)); !s) return s.error();
    for (const auto& u : kUsers) {
      if (u.tenant_id != t.id) continue;
      const std::string uid = std::to_string(u.id), tid = std::to_string(u.tenant_id);
      if (auto q = step("INSERT INTO users (id, tenant_id, email, display_name) VALUES "
                        "($1,$2,$3,$4) ON CONFLICT DO NOTHING",
                        {uid, tid, u.email, u.name});
          !q)
        return q.error().wrap("seed users");
      if (auto q = step("INSERT INTO user_roles (tenant_id, user_id, role_id) VALUES ($1,$2,$3) "
                        "ON CONFLICT DO NOTHING",
                        {tid, uid, std::to_string(role_id(u.role))});
          !q)
        return q.error().wrap("seed user_roles");
      const char* plan = std::string_view(u.role) == "admin" ? "3" : "2";
      if (auto q = step("INSERT INTO user_subscriptions (tenant_id, user_id, plan_id) VALUES "
                        "($1,$2,$3) ON CONFLICT DO NOTHING",
                        {tid, uid, plan});
          !q)
        return q.error().wrap("seed user_subscriptions");
      ++report.users;
    }
    if (auto s = tx.commit(); !s) return s.error();
  }
  // 90 days of network snapshots ending today. The series is a fixed function of the day
  // index, so reseeding on the same day inserts nothing.
  {
    pg::Transaction tx(conn);
    if (auto s = tx.begin(); !s) return s.error();
    if (auto r = step("SELECT ensure_all_partitions()"); !r) return r.error().wrap("seed");
    SplitMix rng{20240420};  // the April 2024 halving
    double price = 96000.0;
    double difficulty = 1.42e14;
    constexpr int kDays = 90;
    std::vector<std::string> rows;
    for (int i = 0; i < kDays; ++i) {
      price *= std::exp(0.0004 + 0.025 * rng.normal());                   // ~2.5 % daily volatility
      if (i % 14 == 13) difficulty *= 1.0 + 0.035 * rng.normal() + 0.01;  // retarget ~2 weeks
      const double noise = 1.0 + 0.03 * rng.normal();
      // hashrate implied by difficulty: H = D * 2^32 / 600 s, in EH/s, with daily luck noise
      const double hashrate_ehs = difficulty * 4294967296.0 / 600.0 / 1e18 * noise;
      const double fees = 0.02 + 0.01 * rng.uniform();
      const int back = kDays - 1 - i;
      auto q = step(
          "INSERT INTO network_snapshots (day, taken_at, btc_price_usd, difficulty, "
          "network_hashrate_ehs, block_reward_btc, fees_btc_per_block) "
          "SELECT d, d::timestamp AT TIME ZONE 'UTC', $2, $3, $4, 3.125, $5 "
          "FROM (SELECT ((now() AT TIME ZONE 'UTC')::date - $1::int) AS d) s "
          "ON CONFLICT DO NOTHING",
          {std::to_string(back), num(std::round(price * 100) / 100), num(difficulty),
           num(hashrate_ehs), num(fees)});
      if (!q) return q.error().wrap("seed network_snapshots");
      report.snapshots_inserted += static_cast<int>(q->affected());
    }
    if (auto s = tx.commit(); !s) return s.error();
  }
  log.info("seeded", {{"models", report.models},
                      {"users", report.users},
                      {"snapshots_inserted", report.snapshots_inserted}});
  return report;
}

}  // namespace hi::schema
