// The miners and the portfolio: GET/POST /api/miners, POST /api/miners/bulk,
// PATCH /api/miners/:id/status, GET /api/miner-models, GET /api/portfolio and
// GET /api/portfolio/projection.
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "api/internal/support.h"
#include "api/miner_sql.h"
#include "api/service.h"
#include "api/validate.h"
#include "consume/portfolio_worker.h"
#include "core/ids.h"
#include "core/time.h"
#include "mining/profitability.h"
#include "pg/transaction.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;
using internal::db_failure;
using internal::record_write;
using internal::write_response;
using nlohmann::json;

constexpr const char* kMinerStatuses[] = {"active", "inactive", "maintenance", "sold"};
constexpr std::int64_t kMaxQuantity = 100'000;   // units in one user_miners row
constexpr std::size_t kMaxBulkRows = 10'000;     // rows in one POST /api/miners/bulk
constexpr double kMaxElectricityUsdPerKwh = 10;  // mining::kMaxElectricityUsdPerKwh
constexpr int kMaxProjectionDays = 365;
constexpr double kDefaultDecayPerMonth = 0.01;  // ASICs lose ~1 % of hashrate a month

// A user_miners row as the API shows it.
#define HI_MINER_JSON                                                          \
  "json_build_object('id', id, 'model_id', model_id, 'quantity', quantity, "   \
  "'electricity_price_usd_kwh', electricity_price_usd_kwh, 'status', status, " \
  "'created_at', created_at, 'updated_at', updated_at)::text"

// The row of user_miners `id` of the caller as JSON (null when not theirs or missing).
Result<json> miner_row(Call& c, const std::string& id, bool for_update) {
  auto r = c.db.exec("SELECT " HI_MINER_JSON
                     " FROM user_miners WHERE id = $1::bigint AND user_id = $2::bigint" +
                         std::string(for_update ? " FOR UPDATE" : ""),
                     {id, c.who.user_id});
  if (!r) return r.error();
  if (r->empty()) return json(nullptr);
  return json::parse(r->text(0, 0));
}

}  // namespace

// POST /api/miners as one statement (api/miner_sql.h). It writes what internal::record_write
// would, without its second round trip: this is the write the page and the benchmarks make
// most.
const char* const kAddMinerSql =
    "WITH m AS (INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, "
    "electricity_price_usd_kwh, status) "
    "SELECT $1::bigint, $2::bigint, $3::int, $4::int, $5::numeric, $6::text "
    "WHERE EXISTS (SELECT 1 FROM miner_models WHERE id = $3::int) "
    "RETURNING id, " HI_MINER_JSON
    " AS shown), "
    "s AS (INSERT INTO user_event_seq AS s (tenant_id, user_id, last_seq) "
    "SELECT $1::bigint, $2::bigint::text, 1 FROM m ON CONFLICT (tenant_id, user_id) "
    "DO UPDATE SET last_seq = s.last_seq + 1 RETURNING last_seq), "
    "e AS (INSERT INTO event_outbox (id, tenant_id, kind, user_id, entity_id, payload, "
    "idempotency_key, seq) SELECT $7::text, $1::bigint, 'miner.added', $2::bigint::text, "
    "m.id::text, jsonb_build_object('miner_id', m.id, 'model_id', $3::int, 'quantity', $4::int, "
    "'status', $6::text), $8::text, s.last_seq FROM m, s RETURNING id, seq), "
    "a AS (INSERT INTO audit_logs (tenant_id, user_id, action, entity, entity_id, request_id, ip, "
    "details) SELECT $1::bigint, $2::bigint, 'miner.add', 'user_miners', m.id::text, $9::text, "
    "NULLIF($10::text, '')::inet, jsonb_build_object('before', NULL, 'after', m.shown::jsonb) "
    "FROM m) "
    "SELECT m.id, m.shown, e.id, e.seq FROM m, e";

namespace {

// One miner row of a request body, validated.
struct NewMiner {
  std::int64_t model_id = 0;
  std::int64_t quantity = 0;
  std::optional<double> price;
  std::string status;
};

std::optional<NewMiner> read_miner(const json& body, Fields& f) {
  const auto model_id = f.integer("model_id", true, 1, 2'147'483'647);
  const auto quantity = f.integer("quantity", true, 1, kMaxQuantity);
  const auto price = f.number("electricity_price_usd_kwh", false, 0, kMaxElectricityUsdPerKwh);
  const auto status = f.one_of("status", false, kMinerStatuses);
  (void)body;
  if (f.error()) return std::nullopt;
  return NewMiner{*model_id, *quantity, price, status.value_or("active")};
}

// YYYY-MM-DD of today + `days` (UTC).
std::string utc_day(int days) {
  const auto d = std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now()) +
                 std::chrono::days(days);
  const std::chrono::year_month_day ymd(d);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
  return buf;
}

// A query parameter as a number in [min, max]; nullopt with `error` set when it is not one.
std::optional<double> query_number(const http::Request& r, std::string_view name, double fallback,
                                   double min, double max, http::ApiError* error) {
  const auto v = r.query_param(name);
  if (!v) return fallback;
  char* end = nullptr;
  const std::string text(*v);
  const double d = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(d) || d < min ||
      d > max) {
    *error = {ErrorCode::kBadRequest,
              std::string(name) + " must be a number between " + json(min).dump() + " and " +
                  json(max).dump(),
              std::string(name)};
    return std::nullopt;
  }
  return d;
}

}  // namespace

void Service::add_miner_routes(http::Router& router) {
  router.add("GET", "/api/miner-models", [this](http::Request& r) {
    return guarded(r, "", false, [](Call& c) {
      return internal::json_query(
          c,
          "SELECT coalesce(json_agg(json_build_object('id', id, 'slug', slug, 'manufacturer', "
          "manufacturer, 'name', name, 'hashrate_ths', hashrate_ths, 'power_w', power_w, "
          "'efficiency_j_th', efficiency_j_th, 'release_year', release_year, 'price_usd', "
          "price_usd) ORDER BY id), '[]')::text FROM miner_models");
    });
  });

  router.add("GET", "/api/miners", [this](http::Request& r) {
    return guarded(r, "portfolio:read", false, [](Call& c) {
      return internal::json_query(
          c,
          "SELECT coalesce(json_agg(json_build_object('id', m.id, 'model_id', m.model_id, "
          "'model', mm.slug, 'quantity', m.quantity, 'electricity_price_usd_kwh', "
          "m.electricity_price_usd_kwh, 'status', m.status, 'created_at', m.created_at, "
          "'updated_at', m.updated_at) ORDER BY m.id), '[]')::text "
          "FROM user_miners m JOIN miner_models mm ON mm.id = m.model_id "
          "WHERE m.user_id = $1::bigint",
          {c.who.user_id});
    });
  });

  router.add("POST", "/api/miners", [this](http::Request& r) {
    return guarded(r, "miners:write", true, [this](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body, {"model_id", "quantity", "electricity_price_usd_kwh", "status"});
      const auto m = read_miner(*body, f);
      if (auto e = f.error()) return Response::fail(*e);
      if (auto over = check_units(c, m->quantity)) return std::move(*over);
      const auto key = c.request.header("idempotency-key");
      const pg::Statement add[] = {
          {kAddMinerSql,
           {c.who.tenant_id, c.who.user_id, std::to_string(m->model_id),
            std::to_string(m->quantity),
            m->price ? std::optional<std::string>(json(*m->price).dump()) : std::nullopt, m->status,
            uuid_v7(), key ? std::optional<std::string>(std::string(*key)) : std::nullopt,
            c.request.request_id, c.request.remote_address},
           false}};
      // Without an Idempotency-Key the whole request is one round trip: BEGIN, the tenant,
      // this statement and COMMIT. An unknown model writes nothing, so committing it is moot.
      auto r = c.commit_early != nullptr ? c.commit_early->commit_with(add) : c.db.pipeline(add);
      if (!r) return db_failure(r.error());
      const pg::QueryResult& row = r->front();
      if (row.empty()) {
        return Response::fail(ErrorCode::kBadRequest, "unknown miner model", "model_id");
      }
      const schema::EventRef ev{std::string(row.text(0, 2)), row.int64(0, 3)};
      return write_response({{"id", row.int64(0, 0)}, {"miner", json::parse(row.text(0, 1))}}, ev,
                            201);
    });
  });

  // Up to kMaxBulkRows rows in one statement and ONE event (miner.bulk_imported): a consumer
  // recalculates once, not ten thousand times. Any bad row refuses the whole import.
  router.add("POST", "/api/miners/bulk", [this](http::Request& r) {
    return guarded(r, "miners:write", true, [this](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields top(*body, {"miners"});
      if (auto e = top.error()) return Response::fail(*e);
      const auto it = body->find("miners");
      if (it == body->end() || !it->is_array() || it->empty() || it->size() > kMaxBulkRows) {
        return Response::fail(
            ErrorCode::kBadRequest,
            "miners must be an array of 1 to " + std::to_string(kMaxBulkRows) + " rows", "miners");
      }
      json rows = json::array();
      std::set<std::int64_t> models;
      std::int64_t units = 0;
      for (std::size_t i = 0; i < it->size(); ++i) {
        const json& item = (*it)[i];
        const std::string where = "miners[" + std::to_string(i) + "]";
        if (!item.is_object()) {
          return Response::fail(ErrorCode::kBadRequest, where + " must be an object", where);
        }
        Fields f(item, {"model_id", "quantity", "electricity_price_usd_kwh", "status"},
                 where + ".");
        const auto m = read_miner(item, f);
        if (auto e = f.error()) return Response::fail(*e);
        models.insert(m->model_id);
        units += m->quantity;
        rows.push_back({{"model_id", m->model_id},
                        {"quantity", m->quantity},
                        {"price", m->price ? json(*m->price) : json(nullptr)},
                        {"status", m->status}});
      }
      auto unknown = internal::first_unknown_model(c.db, models);
      if (!unknown) return db_failure(unknown.error());
      if (*unknown != 0) {
        for (std::size_t i = 0; i < rows.size(); ++i) {
          if (rows[i]["model_id"] == *unknown) {
            const std::string field = "miners[" + std::to_string(i) + "].model_id";
            return Response::fail(ErrorCode::kBadRequest, "unknown miner model in " + field, field);
          }
        }
      }
      if (auto over = check_units(c, units)) return std::move(*over);
      auto ins = c.db.exec(
          "WITH ins AS (INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, "
          "electricity_price_usd_kwh, status) "
          "SELECT $1::bigint, $2::bigint, r.model_id, r.quantity, r.price, r.status "
          "FROM jsonb_to_recordset($3::jsonb) AS r(model_id int, quantity int, price numeric, "
          "status text) RETURNING id) "
          "SELECT count(*), min(id), max(id), coalesce(json_agg(id ORDER BY id), '[]')::text "
          "FROM ins",
          {c.who.tenant_id, c.who.user_id, rows.dump()});
      if (!ins) return db_failure(ins.error());
      const std::int64_t count = ins->int64(0, 0);
      const std::int64_t first = ins->int64(0, 1);
      const std::int64_t last = ins->int64(0, 2);
      const json summary = {
          {"count", count}, {"units", units}, {"first_id", first}, {"last_id", last}};
      auto ev = record_write(c, {"miner.bulk_imported", "miner.bulk_import", "user_miners",
                                 std::to_string(first), summary, nullptr, summary});
      if (!ev) return db_failure(ev.error());
      json out = summary;
      out["ids"] = json::parse(ins->text(0, 3));
      return write_response(std::move(out), *ev, 201);
    });
  });

  router.add("PATCH", "/api/miners/:id/status", [this](http::Request& r) {
    return guarded(r, "miners:write", true, [](Call& c) {
      const std::string id(c.request.param("id"));
      if (id.empty() || id.size() > 18 || id.find_first_not_of("0123456789") != std::string::npos) {
        return Response::fail(ErrorCode::kNotFound, "no miner " + id);
      }
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body, {"status"});
      const auto status = f.one_of("status", true, kMinerStatuses);
      if (auto e = f.error()) return Response::fail(*e);
      auto before = miner_row(c, id, true);
      if (!before) return db_failure(before.error());
      if (before->is_null()) return Response::fail(ErrorCode::kNotFound, "no miner " + id);
      if (auto u = c.db.exec(
              "UPDATE user_miners SET status = $2, updated_at = now() WHERE id = $1::bigint",
              {id, *status});
          !u) {
        return db_failure(u.error());
      }
      auto after = miner_row(c, id, false);
      if (!after) return db_failure(after.error());
      const json payload = {
          {"miner_id", std::stoll(id)}, {"from", (*before)["status"]}, {"to", *status}};
      auto ev = record_write(c, {"miner.status_changed", "miner.status", "user_miners", id, payload,
                                 *before, *after, true});
      if (!ev) return db_failure(ev.error());
      return write_response({{"id", std::stoll(id)}, {"miner", *after}}, *ev, 200);
    });
  });

  // Through the read cache (cache.cc): the worker's tombstone at the new through_seq makes
  // the next read compute it.
  router.add("GET", "/api/portfolio", [this](http::Request& r) {
    return cached(r, "portfolio:read", "portfolio", consume::portfolio_cache_key,
                  options_.portfolio_cache_ttl, [](Call& c) -> Result<Filled> {
                    auto views = internal::portfolio_views(c.db, {c.who.user_id});
                    if (!views) return views.error();
                    return Filled{std::move(views->front().json), views->front().through_seq};
                  });
  });

  // The user's active miners valued day by day for `days` days at the latest network snapshot
  // (price and difficulty held), each model's hashrate decaying by `decay_per_month`,
  // compounding: hashrate x (1 - decay)^(d / 30.4375) on day d (day 0 = today).
  router.add("GET", "/api/portfolio/projection", [this](http::Request& r) {
    return guarded(r, "portfolio:read", false, [](Call& c) {
      http::ApiError bad;
      const auto days = query_number(c.request, "days", 30, 1, kMaxProjectionDays, &bad);
      if (!days) return Response::fail(bad);
      if (*days != std::floor(*days)) {
        return Response::fail(ErrorCode::kBadRequest, "days must be a whole number", "days");
      }
      const auto decay =
          query_number(c.request, "decay_per_month", kDefaultDecayPerMonth, 0, 0.5, &bad);
      if (!decay) return Response::fail(bad);
      auto in = consume::load_inputs(c.db, {c.who.user_id});
      if (!in) return db_failure(in.error());
      const auto models = in->models;
      json points = json::array();
      double cumulative = 0;
      for (int d = 0; d < static_cast<int>(*days); ++d) {
        const double factor = std::pow(1 - *decay, d / mining::kDaysPerMonth);
        for (std::size_t i = 0; i < models.size(); ++i) {
          in->models[i].hashrate_ths = models[i].hashrate_ths * factor;
        }
        auto p = consume::portfolio_of(*in, c.who.user_id, in->snapshot);
        if (!p) return db_failure(p.error());
        cumulative += p->totals.profit_usd_per_day;
        points.push_back({{"day", utc_day(d)},
                          {"hashrate_ths", p->totals.hashrate_ths},
                          {"revenue_btc_day", p->totals.revenue_btc_per_day},
                          {"revenue_usd_day", p->totals.revenue_usd_per_day},
                          {"cost_usd_day", p->totals.cost_usd_per_day},
                          {"profit_usd_day", p->totals.profit_usd_per_day},
                          {"cumulative_profit_usd", cumulative}});
      }
      return Response::json({{"user_id", c.who.user_id},
                             {"days", static_cast<int>(*days)},
                             {"decay_per_month", *decay},
                             {"network",
                              {{"btc_price_usd", in->snapshot.btc_price_usd},
                               {"difficulty", in->snapshot.difficulty},
                               {"network_hashrate_ehs", in->snapshot.network_hashrate_ehs}}},
                             {"points", points},
                             {"total_profit_usd", cumulative}});
    });
  });
}

}  // namespace hi::api
